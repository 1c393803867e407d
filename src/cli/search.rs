//! `rankprune search`, `trials`, `export`, `studies` and `worker`: a study run in the
//! foreground, what its store holds, and worker processes.

use clap::Args;
use rankprune::outpath::{check_output, store_inputs};
use rankprune::search::controller::{StopReason, run_search};
use rankprune::search::export::{
    best_trial, export_config, export_control, pick_study, study_base, trials_json,
};
use rankprune::search::pareto::pareto_front;
use rankprune::search::verdict::stored_verdict;
use rankprune::store::{Trial, TrialState, TrialStore, is_postgres};
use rankprune::{Error, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Exit code of a search stopped by SIGINT/SIGTERM (the study resumes on re-run).
pub const INTERRUPTED_EXIT: i32 = 130;

#[derive(Args)]
pub struct SearchArgs {
    /// Budget file (TOML); relative paths inside it are relative to its folder
    pub budget: PathBuf,
    /// Print one JSON object at the end instead of a summary
    #[arg(long)]
    pub json: bool,
    /// Continue a study whose budget now sets another cost target (the new target is
    /// stored and used everywhere from then on)
    #[arg(long)]
    pub allow_budget_change: bool,
}

#[derive(Args)]
pub struct TrialsArgs {
    #[command(flatten)]
    pub at: StudyAt,
    /// Only the N most accurate completed trials
    #[arg(long)]
    pub top: Option<usize>,
    /// Only the completed trials on the accuracy-vs-FLOPs Pareto front
    #[arg(long)]
    pub pareto: bool,
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Trial store: a SQLite file or a postgres:// URL (the studies' budget paths must
    /// reach this machine too)
    #[arg(long)]
    pub db: PathBuf,
    /// cpu, or wgpu:N / wgpu:KIND:N with the wgpu feature (see `rankprune devices`)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Name recorded with each trial (default HOST-PID)
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds a claim lasts without a heartbeat (heartbeats come every third of it)
    #[arg(long, default_value_t = 30.0)]
    pub lease: f64,
    /// Stop after this many trials (default: run until SIGINT/SIGTERM)
    #[arg(long)]
    pub max_trials: Option<usize>,
    /// Dry run, to measure the scheduler: train nothing, take MS milliseconds per trial
    /// and score a made-up accuracy (never for real studies; `--synthetic-ms`, its
    /// earlier name, is still read)
    #[arg(long, value_name = "MS", alias = "synthetic-ms")]
    pub dry_run_ms: Option<u64>,
    /// Print one JSON object at the end instead of a line
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct StudiesArgs {
    /// Trial store: a SQLite file or a postgres:// URL
    #[arg(long)]
    pub db: PathBuf,
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["best", "trial", "control"])))]
pub struct ExportArgs {
    #[command(flatten)]
    pub at: StudyAt,
    /// The best trial (validation accuracy after the final re-training if any, else proxy accuracy)
    #[arg(long)]
    pub best: bool,
    /// Trial number (as listed by `trials`)
    #[arg(long)]
    pub trial: Option<i64>,
    /// The control: the one-shot heuristic's config (VBMF ranks, SLAMP ratios at the
    /// study's target) that the final stage re-trained beside the finalists
    #[arg(long)]
    pub control: bool,
    /// Output layer config (JSON, reference format plus metrics and provenance)
    #[arg(long)]
    pub out: PathBuf,
    /// Keep only the decomposition ranks (drop the pruning ratios and the metrics)
    #[arg(long)]
    pub decomposition_only: bool,
}

/// Runs the study; returns the process exit code.
pub fn run(args: SearchArgs) -> Result<i32> {
    let o = run_search(&args.budget, !args.json, args.allow_budget_change)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&o).expect("the outcome serializes")
        );
    } else {
        let count = |s: &str| o.counts.get(s).copied().unwrap_or(0);
        println!(
            "study {} ({}): {} complete, {} early-stopped, {} failed, {} queued, {} interrupted in {:.0} s; stopped: {:?}",
            o.study,
            o.db.display(),
            count("complete"),
            count("early_stopped"),
            count("failed"),
            count("queued"),
            count("interrupted"),
            o.seconds,
            o.stopped
        );
        match &o.best {
            Some(t) => {
                let fin = o.best_final.as_ref().map_or(String::new(), |f| {
                    let val = f
                        .val_top1
                        .map_or(String::new(), |v| format!("validation {:.2}%, ", 100.0 * v));
                    format!(
                        ", {val}test top-1 {:.2}% after {} epochs",
                        100.0 * f.top1,
                        f.epochs
                    )
                });
                println!(
                    "best: trial {} with proxy accuracy {:.2}%{fin}, {:.2} MFLOPs, {:.3}M params",
                    t.number,
                    100.0 * t.proxy_acc.unwrap_or(0.0),
                    t.cost.flops as f64 / 1e6,
                    t.cost.params as f64 / 1e6
                );
            }
            None => println!("no completed trial meets the target yet"),
        }
        for line in o.verdict.iter().flat_map(|v| v.lines()) {
            println!("{line}");
        }
        if let Some(p) = &o.export {
            println!("exported {}", p.display());
        }
        if o.stopped == StopReason::Signal {
            println!("interrupted: run the same command again to resume");
        }
    }
    Ok(if o.stopped == StopReason::Signal {
        INTERRUPTED_EXIT
    } else {
        0
    })
}

/// The store at `db` (for reading only with `read_only`); a SQLite file that does not
/// exist is an input error, not a new store.
fn open(db: &Path, read_only: bool) -> Result<TrialStore> {
    if !db.exists() && !is_postgres(db) {
        return Err(Error::BadInput(format!(
            "{}: no such trial store",
            db.display()
        )));
    }
    Ok(match read_only {
        true => TrialStore::open_read_only(db)?,
        false => TrialStore::open(db)?,
    })
}

/// Which study of which store (`trials`, `export`, `plot`).
#[derive(Args)]
pub struct StudyAt {
    /// Trial store of a search: a SQLite file or a postgres:// URL
    #[arg(long)]
    pub db: PathBuf,
    /// Study name (needed when the store holds several)
    #[arg(long)]
    pub study: Option<String>,
}

impl StudyAt {
    /// The store (opened for reading only with `read_only`) and the study's row.
    pub fn open(&self, read_only: bool) -> Result<(TrialStore, rankprune::store::StudyRow)> {
        let store = open(&self.db, read_only)?;
        let name = self.db.display().to_string();
        let row = pick_study(&store, &name, self.study.as_deref())?;
        Ok((store, row))
    }
}

pub fn run_trials(args: TrialsArgs) -> Result<()> {
    super::at_least_one_if_set("--top", args.top)?;
    let (store, study) = args.at.open(false)?;
    let base = study_base(&study).map(|(c, _)| c);
    let mut trials = store.trials(study.id)?;
    if args.pareto || args.top.is_some() {
        trials.retain(|t| t.state == TrialState::Complete);
    }
    if args.pareto {
        let pts: Vec<(f64, u64)> = trials
            .iter()
            .map(|t| (t.proxy_acc.unwrap_or(0.0), t.cost.flops))
            .collect();
        trials = pareto_front(&pts)
            .into_iter()
            .map(|i| trials[i].clone())
            .collect();
    }
    if let Some(n) = args.top {
        trials.sort_by(|a, b| {
            b.proxy_acc
                .unwrap_or(0.0)
                .total_cmp(&a.proxy_acc.unwrap_or(0.0))
        });
        trials.truncate(n);
    }
    if args.json {
        println!("{}", trials_json(&store, &trials)?);
        return Ok(());
    }
    let finals = trials
        .iter()
        .map(|t| store.final_result(t.id))
        .collect::<Result<Vec<_>, _>>()?;
    print!("{}", trials_table(&trials, &finals, base.map(|c| c.flops)));
    for line in stored_verdict(&study).iter().flat_map(|v| v.lines()) {
        println!("{line}");
    }
    let fidelity = store.rung_fidelity(study.id)?;
    if !fidelity.is_empty() {
        println!("Kendall tau of each rung against validation accuracy after re-training:");
        for r in fidelity {
            let tau = r.kendall_tau.map_or("-".into(), |t| format!("{t:+.2}"));
            println!("  step {:>5}: {tau} over {} re-trained trials", r.step, r.n);
        }
    }
    Ok(())
}

fn trials_table(
    trials: &[Trial],
    finals: &[Option<rankprune::store::FinalResult>],
    base_flops: Option<u64>,
) -> String {
    let mut s = String::new();
    // A study with a latency target shows each trial's predicted latency.
    let latency = trials.iter().any(|t| t.cost.latency_us.is_some());
    let ms = |t: &Trial| match (latency, t.cost.latency_us) {
        (false, _) => String::new(),
        (true, us) => format!(
            "  {:>10}",
            us.map_or("-".into(), |us| format!("{:.3}", us as f64 / 1e3))
        ),
    };
    let _ = writeln!(
        s,
        "{:>5}  {:<11}  {:>8}  {:>9}  {:>7}  {:>8}  {:>7}  {:>7}  {:>9}{}",
        "trial",
        "state",
        "proxy %",
        "MFLOPs",
        "FLOPs÷",
        "params M",
        "worker",
        "secs",
        "test %",
        if latency {
            format!("  {:>10}", "latency ms")
        } else {
            String::new()
        }
    );
    for (t, f) in trials.iter().zip(finals) {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}", 100.0 * v));
        let secs = match (t.started_at, t.finished_at) {
            (Some(a), Some(b)) => format!("{:.0}", b - a),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:>5}  {:<11}  {:>8}  {:>9.2}  {:>7}  {:>8.3}  {:>7}  {:>7}  {:>9}{}",
            t.number,
            t.state.as_str(),
            pct(t.proxy_acc),
            t.cost.flops as f64 / 1e6,
            base_flops.map_or("-".into(), |b| format!(
                "{:.2}x",
                b as f64 / t.cost.flops.max(1) as f64
            )),
            t.cost.params as f64 / 1e6,
            t.worker.as_deref().unwrap_or("-"),
            secs,
            pct(f.as_ref().map(|f| f.top1)),
            ms(t)
        );
        if let Some(e) = &t.error {
            let _ = writeln!(s, "       error: {e}");
        }
    }
    if trials.is_empty() {
        let _ = writeln!(s, "(no trials)");
    }
    s
}

pub fn run_export(args: ExportArgs) -> Result<()> {
    check_output(&args.out, "--out", &store_inputs("--db", &args.at.db))?;
    let (store, study) = args.at.open(false)?;
    let name = args.at.db.display().to_string();
    let (mut config, what) = if args.control {
        let verdict = stored_verdict(&study).map_or(String::new(), |v| format!("; {}", v.text));
        let config = export_control(&store, &study, &name)?;
        (config, format!("the control{verdict}"))
    } else {
        trial_export(&store, &study, args.trial, &name)?
    };
    if args.decomposition_only {
        config.pruning = None;
        config.metrics = None;
    }
    config
        .save(&args.out)
        .map_err(|e| Error::Failure(format!("{}: cannot write: {e}", args.out.display())))?;
    println!(
        "wrote {} (study {}, {what})",
        args.out.display(),
        study.name
    );
    Ok(())
}

/// The exported config of trial `number` (the best trial when None), and what it is
/// for people.
fn trial_export(
    store: &TrialStore,
    study: &rankprune::store::StudyRow,
    number: Option<i64>,
    name: &str,
) -> Result<(rankprune::config::LayerConfig, String)> {
    let trial = match number {
        Some(n) => store
            .trials(study.id)?
            .into_iter()
            .find(|t| t.number == n)
            .ok_or_else(|| {
                Error::BadInput(format!("{name}: study {} has no trial {n}", study.name))
            })?,
        None => best_trial(store, study)?.map(|b| b.0).ok_or_else(|| {
            Error::BadInput(format!(
                "{name}: study {} has no completed trial that meets its target",
                study.name
            ))
        })?,
    };
    if trial.state != TrialState::Complete {
        tracing::warn!(
            trial = trial.number,
            state = trial.state.as_str(),
            "exporting a trial that did not complete"
        );
    }
    let config = export_config(store, study, &trial, name)?;
    let retrained = store
        .final_result(trial.id)?
        .and_then(|f| f.val_top1)
        .map_or(String::new(), |v| {
            format!(", validation {:.2}% after re-training", 100.0 * v)
        });
    let proxy = trial
        .proxy_acc
        .map_or("-".into(), |a| format!("{:.2}%", 100.0 * a));
    Ok((
        config,
        format!("trial {}, proxy accuracy {proxy}{retrained}", trial.number),
    ))
}

/// `rankprune studies`: every study of the store with its state and best trial.
pub fn run_studies(args: StudiesArgs) -> Result<()> {
    let store = open(&args.db, false)?;
    let list = rankprune::search::summary::studies(&store)?;
    if args.json {
        let rows: Vec<_> = list.iter().map(|s| s.to_json()).collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}", 100.0 * v));
    println!(
        "{:<20}  {:<11}  {:<16}  {:>11}  {:>6}  {:>7}  {:>7}  {:>7}  {:>9}  {:<9}  margin",
        "study",
        "state",
        "controller",
        "done/limit",
        "best",
        "val %",
        "test %",
        "FLOPs÷",
        "wall s",
        "verdict"
    );
    for s in &list {
        let limit = s.limit.map_or("-".to_string(), |l| l.to_string());
        let best = s.best.as_ref().map(|(t, _)| t);
        let v = s.verdict.as_ref();
        println!(
            "{:<20}  {:<11}  {:<16}  {:>11}  {:>6}  {:>7}  {:>7}  {:>7}  {:>9.0}  {:<9}  {}",
            s.row.name,
            s.state,
            s.controller_status(),
            format!("{}/{limit}", s.done),
            best.map_or("-".into(), |t| t.number.to_string()),
            pct(s.best_val()),
            pct(s.best_test()),
            best.and_then(|t| s.reduction(t.cost.flops))
                .map_or("-".into(), |r| format!("{r:.2}x")),
            s.wall_s,
            v.map_or("-", |v| v.short()),
            v.and_then(|v| v.detectable_points())
                .map_or("-".into(), |d| format!("±{d:.2}"))
        );
    }
    if list.is_empty() {
        println!("(no studies)");
    }
    Ok(())
}

/// `rankprune worker`: claims and runs trials of the store's running studies.
pub fn run_worker(args: WorkerArgs) -> Result<()> {
    if !(args.lease.is_finite() && args.lease >= 0.3) {
        return Err(Error::BadInput(format!(
            "--lease {}: allowed 0.3 seconds or more",
            args.lease
        )));
    }
    super::at_least_one_if_set("--max-trials", args.max_trials)?;
    if !args.db.exists() && !is_postgres(&args.db) {
        tracing::warn!(db = %args.db.display(), "no such store yet: it is created, and the worker waits for studies");
    }
    let name = args.name.unwrap_or_else(|| {
        format!(
            "{}-{}",
            rankprune::search::lease::hostname(),
            std::process::id()
        )
    });
    let opts = rankprune::search::worker::WorkerOptions {
        db: args.db,
        device: args.device,
        name: name.clone(),
        lease_s: args.lease,
        max_trials: args.max_trials,
        dry_run_ms: args.dry_run_ms,
    };
    let out = rankprune::search::worker::run_worker(&opts)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&out).expect("an outcome serializes")
        );
    } else {
        println!(
            "worker {name}: trials run {}, handed back {}, leases lost {}",
            out.trials, out.handed_back, out.lost_leases
        );
    }
    Ok(())
}
