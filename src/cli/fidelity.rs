//! `rankprune fidelity` (how well each cheap probe ranks candidates like the final
//! recipe) and `rankprune score` (one config through the probes).

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rankprune::budget::Budget;
use rankprune::config::LayerConfig;
use rankprune::data::Split;
use rankprune::device::parse_device;
use rankprune::ladder::fidelity::{self, RunFiles};
use rankprune::ladder::recipes::{self, RecipeAgreement};
use rankprune::ladder::{Context, Probe, score};
use rankprune::outpath::{check_output, store_inputs, write_output};
use rankprune::search::candidates::draw_candidates;
use rankprune::search::controller::study_problem;
use rankprune::search::finalists::finalists;
use rankprune::search::precheck::check_space;
use rankprune::search::problem::Target;
use rankprune::search::space::SpaceFile;
use rankprune::store::TrialStore;
use rankprune::{Error, Result};
use std::path::{Path, PathBuf};

const DEFAULT_PROBES: &str = "compressed,bn:8,recon:2,ft:60,ft:200,kd:200";

#[derive(Args)]
pub struct FidelityArgs {
    /// Budget file of a study: its data, base weights (must exist), space, target and
    /// proxy settings (batch size, lr, validation images) are used
    pub budget: PathBuf,
    /// Candidates drawn at the study's target (half near the warm-start points, half random)
    #[arg(long, default_value_t = 16)]
    pub candidates: usize,
    /// Cheap probes to measure, comma separated: compressed, bn:K (BN recalibration from
    /// K batches), recon:K (layer-wise CKA and logit KL after it), repair:K (least-squares
    /// repair from K batches), ft:S (S steps of the proxy's fine-tune, on its schedule),
    /// ftd:S (the same, learning rate decayed linearly to zero), kd:S (S distilled steps).
    /// With search.repair in the budget every candidate is built repaired first
    /// (recorded in OUT/build.json). `--signals`, the earlier name, is still read
    #[arg(long, alias = "signals", value_delimiter = ',', default_value = DEFAULT_PROBES)]
    pub probes: Vec<Probe>,
    /// Epochs of the final recipe every candidate is re-trained with, on the budget's
    /// final.schedule (default: the budget's final.epochs). With a list (`1,2`) the
    /// first is the reference and every other recipe re-trains each candidate with the
    /// same paired seeds: the report gives the tau between the recipes' rankings
    #[arg(long, value_delimiter = ',')]
    pub final_epochs: Option<Vec<usize>>,
    /// Re-trainings of every candidate with the final recipe, with paired training seeds
    /// (the study's seed, plus 1, plus 2, ...): the reference is their mean, and with two
    /// or more the report gives their own noise (the ceiling of any probe's ranking).
    /// Default 2; with --report-only, as many as were recorded
    #[arg(long)]
    pub gt_seeds: Option<usize>,
    /// Output folder (default: next to the store, STUDY.fidelity/); a run resumes there
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, or wgpu:N with the wgpu feature
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the rows as JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Score only the candidates whose index is K modulo N (run N processes with K = 0
    /// .. N-1 to share the work; they append to the same results)
    #[arg(long, value_name = "K/N", value_parser = parse_shard, default_value = "0/1")]
    pub shard: (usize, usize),
    /// Score nothing: summarise the results recorded so far (while a run goes on, or of
    /// a run stopped part way)
    #[arg(long)]
    pub report_only: bool,
    /// Take the candidates from a study of the budget's store instead of drawing them:
    /// its `--candidates` best completed trials by proxy accuracy (close together, as a
    /// search's finalists are)
    #[arg(long, value_name = "STUDY")]
    pub top_of: Option<String>,
}

#[derive(Args)]
pub struct ScoreArgs {
    /// Budget file of a study (data, base weights, proxy settings)
    pub budget: PathBuf,
    /// Layer config to score (reference format, as `export` writes)
    #[arg(long)]
    pub config: PathBuf,
    /// Probes, comma separated (see `fidelity --help`); final:E re-trains E epochs.
    /// `--signals`, the earlier name, is still read
    #[arg(long, alias = "signals", value_delimiter = ',', default_value = DEFAULT_PROBES)]
    pub probes: Vec<Probe>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn parse_shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("{s:?}: expected K/N with 0 <= K < N, e.g. 1/2");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if k < n { Ok((k, n)) } else { Err(bad()) }
}

fn default_out(budget: &Budget) -> PathBuf {
    let db = &budget.study.db;
    db.with_file_name(format!("{}.fidelity", budget.study.name))
}

/// Refuses an output (the `--out` folder or a file the run writes in it) that is one of
/// the run's inputs: the budget file, the base weights, the space, the data, the store.
fn check_outputs(budget_path: &Path, budget: &Budget, out: &Path) -> Result<()> {
    let mut inputs = vec![
        ("budget".to_string(), budget_path.to_path_buf()),
        ("model.weights".into(), budget.model.weights.clone()),
        ("search.space".into(), budget.search.space.clone()),
    ];
    for split in [Split::Train, Split::Test] {
        let files = budget.source().files(split);
        inputs.extend(files.into_iter().flatten().map(|f| ("data.dir".into(), f)));
    }
    inputs.extend(store_inputs("study.db", &budget.study.db));
    check_output(out, "--out", &inputs)?;
    let files = RunFiles::new(out);
    let written = [
        files.candidates.clone(),
        files.results.clone(),
        files.candidates.with_file_name("build.json"),
        out.join(JSON_FILE),
        out.join(TABLE_FILE),
    ];
    for f in written {
        check_output(&f, "--out", &inputs)?;
    }
    Ok(())
}

use rankprune::search::gate::{Regime, judge};

const JSON_FILE: &str = "fidelity.json";
const TABLE_FILE: &str = "fidelity.md";

pub fn run_fidelity(args: FidelityArgs) -> Result<()> {
    super::at_least_one("--candidates", args.candidates)?;
    check_recipes(args.final_epochs.as_deref().unwrap_or_default())?;
    super::at_least_one_if_set("--gt-seeds", args.gt_seeds)?;
    let budget = Budget::load(&args.budget)?;
    let out = args.out.clone().unwrap_or_else(|| default_out(&budget));
    check_outputs(&args.budget, &budget, &out)?;
    if !args.report_only {
        check_space(&budget, &SpaceFile::load(&budget.search.space)?)?;
    }
    let device = parse_device(&args.device)?;
    let ctx = Context::load(&budget)?;
    let files = RunFiles::new(&out);
    let candidates = files.candidates(|| match &args.top_of {
        Some(study) => top_trials(&budget, study, args.candidates),
        None => {
            let space = SpaceFile::load(&budget.search.space)?;
            let problem = study_problem(&budget, &space, &ctx.base, &ctx.weights, true)?;
            Ok(draw_candidates(
                &problem,
                args.candidates,
                budget.search.seed,
            ))
        }
    })?;
    files.check_build(&ctx)?;
    let recipes = match &args.final_epochs {
        Some(list) if !list.is_empty() => list.clone(),
        _ => vec![budget.final_stage.epochs],
    };
    let epochs = recipes[0];
    // --report-only scores nothing: what is recorded is all there is.
    let recorded = match args.report_only {
        true => Some(files.records()?),
        false => None,
    };
    let gt_seeds = args.gt_seeds.unwrap_or_else(|| {
        recorded
            .as_ref()
            .map_or(2, |r| recorded_seeds(r, epochs).max(1))
    });
    let seeds_of = |epochs| -> Vec<Probe> {
        (0..gt_seeds as u64)
            .map(|seed| Probe::Final { epochs, seed })
            .collect()
    };
    let finals = seeds_of(epochs);
    let others: Vec<Vec<Probe>> = recipes[1..].iter().map(|&e| seeds_of(e)).collect();
    let mut probes = args.probes.clone();
    probes.extend(others.iter().flatten());
    probes.extend(&finals);
    tracing::info!(
        candidates = candidates.len(),
        out = %out.display(),
        "fidelity run"
    );
    let records = match recorded {
        Some(records) => records,
        None => {
            let pb = progress_bar(args.json);
            let records = fidelity::run(
                &ctx,
                &candidates,
                &probes,
                &files,
                args.shard,
                &device,
                |done, total, what| {
                    pb.set_length(total as u64);
                    pb.set_position(done as u64);
                    pb.set_message(what.to_string());
                    tracing::debug!(done, total, "{what}");
                },
            )?;
            pb.finish_and_clear();
            records
        }
    };
    let agreements: Vec<RecipeAgreement> = others
        .iter()
        .filter_map(|o| recipes::agreement(&records, &finals, o))
        .collect();
    report(
        &fidelity::summarize(&records, &finals),
        &agreements,
        &candidates,
        &budget,
        &out,
        args.json,
    )
}

/// The `n` best completed trials of `study` (in the budget's store) by proxy accuracy,
/// as candidates (origin `trialN`); fewer than `n` is an error naming how many there are.
fn top_trials(budget: &Budget, study: &str, n: usize) -> Result<Vec<fidelity::Candidate>> {
    let store = TrialStore::open(&budget.study.db)?;
    let row = rankprune::search::export::pick_study(&store, "", Some(study))?;
    let trials = store.trials(row.id)?;
    // The final stage's ranking: completed trials, best proxy first (any cost).
    let best = finalists(&trials, &Target::default(), usize::MAX, &[], 0);
    if best.len() < n {
        return Err(Error::BadInput(format!(
            "--top-of {study}: {} completed trials, --candidates asks for {n}",
            best.len()
        )));
    }
    best.into_iter()
        .take(n)
        .enumerate()
        .map(|(index, (t, _))| {
            let config = serde_json::from_str(&t.config)
                .map_err(|e| Error::Failure(format!("trial {}: {e}", t.number)))?;
            Ok(fidelity::Candidate {
                index,
                origin: format!("trial{}", t.number),
                config,
                flops: t.cost.flops,
                params: t.cost.params,
            })
        })
        .collect()
}

/// Every `--final-epochs` recipe at least 1 epoch, and each listed once.
fn check_recipes(listed: &[usize]) -> Result<()> {
    for (i, &e) in listed.iter().enumerate() {
        super::at_least_one("--final-epochs", e)?;
        if listed[..i].contains(&e) {
            return Err(Error::BadInput(format!(
                "--final-epochs: {e} is listed twice (each recipe once)"
            )));
        }
    }
    Ok(())
}

/// The run's progress bar (hidden for --json and when stderr is no terminal).
fn progress_bar(json: bool) -> ProgressBar {
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]")
            .expect("valid template"),
    );
    if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb
}

/// How many paired re-trainings of `epochs` epochs (seeds 0, 1, ...) the records hold.
fn recorded_seeds(records: &[fidelity::Record], epochs: usize) -> usize {
    (0..)
        .take_while(|&seed| {
            let want = Probe::Final { epochs, seed };
            records.iter().any(|r| r.probe == want)
        })
        .count()
}

/// Writes the summary (`fidelity.json`, `fidelity.md` in `out`) and prints it.
fn report(
    summary: &fidelity::Summary,
    agreements: &[RecipeAgreement],
    candidates: &[fidelity::Candidate],
    budget: &Budget,
    out: &Path,
    json: bool,
) -> Result<()> {
    // What the figures hold for: a study's step-0 gate reads them only in this regime,
    // and what they say about the budget's own step-0 signal.
    let rows = serde_json::to_value(&summary.rows).expect("rows serialize");
    let gate = match budget.proxy.rungs.contains(&0) {
        true => judge(budget, &rows, &out.join(JSON_FILE).display().to_string()),
        false => Err("the budget has no step-0 rung (proxy.rungs)".into()),
    };
    let stored = serde_json::json!({
        "regime": Regime::of(budget)?,
        "gate": gate.as_ref().ok(),
        "recipes": agreements,
        "candidates": candidates,
        "finals": summary.finals,
        "rows": summary.rows,
        "noise": summary.noise,
        "seeds_needed": summary.seeds_needed,
    });
    write_output(
        &out.join(JSON_FILE),
        serde_json::to_string_pretty(&stored)
            .expect("json")
            .as_bytes(),
    )?;
    let mut table = fidelity::table(summary);
    table.push_str(&recipes::lines(agreements));
    table.push_str(&match &gate {
        Ok(g) => format!(
            "Step-0 gate in this regime: {}; a study with this summary as proxy.gate_evidence {}.\n",
            g.reason,
            if g.stops { "stops trials there" } else { "stops none there" }
        ),
        Err(m) => format!("Step-0 gate in this regime: not measured: {m}.\n"),
    });
    write_output(&out.join(TABLE_FILE), table.as_bytes())?;
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("summary serializes")
        );
    } else {
        println!(
            "{} candidates; results in {}",
            candidates.len(),
            out.display()
        );
        print!("{table}");
    }
    Ok(())
}

pub fn run_score(args: ScoreArgs) -> Result<()> {
    let budget = Budget::load(&args.budget)?;
    let device = parse_device(&args.device)?;
    let ctx = Context::load(&budget)?;
    let file = args.config.display().to_string();
    let config = LayerConfig::load(&args.config)?;
    // Built once; every probe starts from its own copy of the compressed weights.
    let candidate = ctx.build(&config, &file, &device)?;
    for &probe in &args.probes {
        let s = score(probe, &ctx, candidate.clone(), &device)?;
        let line = serde_json::json!({
            "probe": probe,
            "scores": s.scores,
            "cpu_s": s.cpu_s,
            "wall_s": s.wall_s,
        });
        println!("{line}");
    }
    Ok(())
}
