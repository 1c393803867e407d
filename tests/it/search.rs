//! The search daemon end to end on tiny generated data and a tiny VGG, through the
//! binary: complete trials, Pareto list and an export `compress` accepts; a diverging
//! fine-tune recorded as failed; SIGKILL mid-trial then restart loses and repeats
//! nothing; SIGTERM marks running trials interrupted; `trials` never hits a lock error.

use crate::common::{stripes, write_cifar100};
use rankprune::store::{Subject, TrialState, TrialStore};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rankprune"));
    c.env("RUST_LOG", "warn");
    c
}

pub(crate) fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// The JSON object a command prints last with `--json` (`search`, `compress`).
fn last_json(o: &Output) -> serde_json::Value {
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap()
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub(crate) struct Study {
    pub(crate) dir: tempfile::TempDir,
    /// The store: `runs/study.sqlite` in `dir`, or a PostgreSQL URL.
    db: PathBuf,
}

impl Study {
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(crate) fn budget(&self) -> PathBuf {
        self.path("budget.toml")
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.db.clone()
    }

    pub(crate) fn store(&self) -> TrialStore {
        TrialStore::open(&self.db()).unwrap()
    }
}

/// A study on 4-class stripes with `cfg_bn:8,M,16,M`. `proxy` replaces the proxy
/// section's body; `extra` is appended.
pub(crate) fn study(max_trials: usize, proxy: &str, extra: &str) -> Study {
    // One training seed in the final stage unless the test sets `seeds` (the default, 3,
    // triples every final stage's work).
    let extra = if extra.contains("seeds") {
        extra.to_string()
    } else if extra.contains("[final]") {
        extra.replacen("[final]", "[final]\nseeds = 1", 1)
    } else {
        format!("{extra}\n[final]\nseeds = 1")
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_cifar100(&stripes(96, 4, 11), &data.join("train.bin"));
    write_cifar100(&stripes(32, 4, 12), &data.join("test.bin"));
    std::fs::write(
        dir.path().join("space.toml"),
        r#"
[decomposition]
layers = "all"
rank = "fraction"
min = 0.0
max = 1.0

[pruning]
layers = "all"
min = 0.0
max = 0.5
step = 0.25
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("budget.toml"),
        format!(
            r#"
[study]
name = "tiny"
db = "runs/study.sqlite"

[model]
arch = "cfg_bn:8,M,16,M"
num_classes = 4
weights = "runs/base.safetensors"
train_epochs = 2

[data]
dataset = "cifar100"
dir = "data"
val_split = 32

[search]
space = "space.toml"
strategy = "random"
seed = 1

[objective]
kind = "constrained"
target_flops_reduction = 1.2

[limits]
max_trials = {max_trials}

[proxy]
{proxy}

[workers]
cpu = 1
{extra}
"#
        ),
    )
    .unwrap();
    let db = dir.path().join("runs/study.sqlite");
    Study { dir, db }
}

/// The study moved to a fresh PostgreSQL database on the server RANKPRUNE_TEST_POSTGRES
/// names (CI starts one); None, with a printed line, when it is not set.
pub(crate) fn on_postgres(mut s: Study, test: &str) -> Option<Study> {
    let Ok(server) = std::env::var("RANKPRUNE_TEST_POSTGRES") else {
        println!("skipping {test}: RANKPRUNE_TEST_POSTGRES is not set");
        return None;
    };
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secs = rankprune::store::now() as u64 % 100_000;
    let name = format!("rp_it_{}_{n}_{secs}", std::process::id());
    let url = rankprune::store::create_database(&server, &name).unwrap();
    edit_budget(&s, "db = \"runs/study.sqlite\"", &format!("db = {url:?}"));
    s.db = PathBuf::from(url);
    Some(s)
}

/// FLOPs of the tiny studies' base model, as `metrics --json` counts them.
pub(crate) fn tiny_base_flops() -> f64 {
    let o = run(&[
        "metrics",
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--json",
    ]);
    let base: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    base["flops"].as_f64().unwrap()
}

/// Runs `rankprune export --db DB WHICH... --out OUT` (asserting it succeeds) and returns
/// the JSON it wrote.
pub(crate) fn export(db: &Path, which: &[&str], out: &Path) -> serde_json::Value {
    let mut args = vec!["export", "--db", db.to_str().unwrap()];
    args.extend(which);
    args.extend(["--out", out.to_str().unwrap()]);
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

pub(crate) const FAST_PROXY: &str =
    "steps = 4\nbatch_size = 16\neval_samples = 32\nearly_stop_step = 2";

/// The final stage re-trains the winner and the control (the one-shot heuristic: VBMF
/// ranks at calibration 0, SLAMP ratios at the target) with the same two seeds, stores
/// each run, the winner's mean and the verdict, and every reader shows it.
#[test]
fn the_final_stage_pairs_the_winner_with_the_heuristic_control() {
    let s = study(
        3,
        FAST_PROXY,
        "[final]\ntop_k = 1\nwarm_starts = 0\nepochs = 1\nseeds = 2",
    );
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = last_json(&o);
    let best = out["best"]["id"].as_i64().unwrap();
    let store = s.store();
    let runs = store.final_runs(1).unwrap();
    let seeds = |subject| {
        let mut v: Vec<i64> = runs
            .iter()
            .filter(|r| r.subject == subject)
            .map(|r| r.seed)
            .collect();
        v.sort();
        v
    };
    // search.seed = 1: seeds 1 and 2 for both.
    assert_eq!(seeds(Subject::Trial(best)), vec![1, 2], "{runs:?}");
    assert_eq!(seeds(Subject::Control), vec![1, 2]);
    assert!(
        runs.iter()
            .all(|r| r.val_correct.len() == 32 && r.test_correct.len() == 32)
    );
    for r in &runs {
        let right = r.val_correct.iter().filter(|&&c| c).count() as f64 / 32.0;
        assert!((r.val_top1 - right).abs() < 1e-9, "{r:?}");
        assert!(Path::new(r.weights_path.as_deref().unwrap()).exists());
    }
    assert!(s.path("runs/tiny-control-seed1.safetensors").exists());
    let mine: Vec<f64> = runs
        .iter()
        .filter(|r| r.subject == Subject::Trial(best))
        .map(|r| r.val_top1)
        .collect();
    let f = store.final_result(best).unwrap().unwrap();
    assert!((f.val_top1.unwrap() - (mine[0] + mine[1]) / 2.0).abs() < 1e-9);

    // The control is the heuristic's exact config: VBMF ranks at calibration 0 ...
    let db = s.db();
    let c = export(&db, &["--control"], &s.path("control.json"));
    let vbmf = s.path("vbmf.json");
    let o = run(&[
        "recommend",
        "decomposition",
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--weights",
        s.path("runs/base.safetensors").to_str().unwrap(),
        "--calibration",
        "0",
        "--out",
        vbmf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&vbmf).unwrap()).unwrap();
    assert_eq!(
        c["decomposition"]["ranks"], v["decomposition"]["ranks"],
        "{c}"
    );
    // ... and SLAMP ratios that meet the target (1.2x fewer FLOPs).
    assert!(
        c["pruning"]["ratios"]
            .as_object()
            .is_some_and(|r| !r.is_empty()),
        "{c}"
    );
    assert!(c["metrics"]["flops"].as_f64().unwrap() <= tiny_base_flops() / 1.2);
    assert_eq!(c["metrics"]["final_runs"].as_array().map(Vec::len), Some(2));

    // The verdict: stored, consistent with its interval, shown by every reader.
    let row = store.study_row(1).unwrap().unwrap();
    let verdict: serde_json::Value = serde_json::from_str(row.verdict.as_deref().unwrap()).unwrap();
    assert_eq!(verdict["seeds"], 2);
    assert_eq!(verdict["winner"], out["best"]["number"]);
    let lo = verdict["val"]["interval"]["lo"].as_f64().unwrap();
    assert_eq!(verdict["better"].as_bool(), Some(lo > 0.0), "{verdict}");
    let said = verdict["text"].as_str().unwrap();
    assert!(
        said.starts_with(if lo > 0.0 {
            "better"
        } else {
            "not shown better"
        }),
        "{said}"
    );
    assert_eq!(c["provenance"]["verdict"], verdict);
    assert_eq!(out["verdict"], verdict);
    let o = run(&["trials", "--db", db.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("verdict: {said}")),
        "{}",
        text(&o)
    );
    let o = run(&["studies", "--db", db.to_str().unwrap(), "--json"]);
    let studies: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(studies[0]["verdict"], verdict);
    assert!(
        studies[0]["detectable_margin_points"]
            .as_f64()
            .is_some_and(|d| d > 0.0)
    );
    let winner = s.path("winner.json");
    let w = export(&db, &["--best"], &winner);
    assert_eq!(w["provenance"]["verdict"], verdict);
    assert_eq!(w["metrics"]["final_runs"].as_array().map(Vec::len), Some(2));
}

/// `seeds = "auto"` re-trains as many seeds as the measured noise needs for the margin:
/// the fewest (3) for a margin any noise meets, and the fewest too for one that no seed
/// count reaches (32 validation images alone make the interval wider than 0.01 points).
#[test]
fn auto_seeds_follow_the_measured_noise_within_their_cap() {
    for (margin, want) in [("1000.0", 3), ("0.01", 3)] {
        let s = study(
            3,
            FAST_PROXY,
            &format!(
                "[final]\ntop_k = 1\nwarm_starts = 0\nepochs = 1\nseeds = \"auto\"\nmargin = {margin}\nmax_seeds = 4"
            ),
        );
        let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let runs = s.store().final_runs(1).unwrap();
        let control = runs
            .iter()
            .filter(|r| r.subject == Subject::Control)
            .count();
        assert_eq!(
            (runs.len(), control),
            (2 * want, want),
            "margin {margin}: {runs:?}"
        );
        let out = last_json(&o);
        let sizing = &out["verdict"]["sizing"];
        assert_eq!(sizing["cap"], 4, "{out}");
        assert_eq!(sizing["needed"].is_null(), margin == "0.01", "{sizing}");
        assert!(sizing["pair_sd"].is_number() && sizing["set_se"].as_f64().unwrap() > 0.0);
        let o = run(&["trials", "--db", s.db().to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("seeds = \"auto\""),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn search_end_to_end_then_export_then_compress() {
    let s = study(5, FAST_PROXY, "[final]\ntop_k = 1\nepochs = 1");
    let budget = s.budget();
    let o = run(&["search", budget.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = last_json(&o);
    assert_eq!(out["stopped"], "budget", "{out}");
    let store = s.store();
    let trials = store.trials(1).unwrap();
    assert_eq!(trials.len(), 5);
    assert!(trials.iter().all(|t| t.finished_at.is_some()));
    let complete: Vec<_> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .collect();
    assert!(!complete.is_empty(), "{trials:?}");
    let base_flops = tiny_base_flops();
    for t in &trials {
        // Every trial meets the target (1.2x fewer FLOPs than the base).
        assert!(t.cost.flops as f64 <= base_flops / 1.2, "{t:?}");
        assert!(t.proxy_acc.is_some() || t.state == TrialState::Failed);
        let reports = store.reports(t.id).unwrap();
        assert!(
            !reports.is_empty(),
            "trial {} has no intermediate report",
            t.number
        );
    }
    // The best trial was re-trained, chosen by validation and scored on the test set.
    let best = out["best"]["id"].as_i64().unwrap();
    let f = store.final_result(best).unwrap().expect("final result");
    assert!((0.0..=1.0).contains(&f.top1) && f.epochs == 1);
    assert!(f.val_top1.is_some_and(|v| (0.0..=1.0).contains(&v)));
    assert_eq!(f.reason.as_deref(), Some("top_k"));
    assert!(Path::new(f.weights_path.as_deref().unwrap()).exists());

    let db = s.db();
    let o = run(&["trials", "--db", db.to_str().unwrap(), "--pareto", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let front: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let front = front.as_array().unwrap();
    assert!(!front.is_empty() && front.len() <= complete.len());
    let o = run(&["trials", "--db", db.to_str().unwrap(), "--top", "2"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("complete"));

    let winner = s.path("winner.json");
    let w = export(&db, &["--best"], &winner);
    assert_eq!(w["provenance"]["study"], "tiny");
    assert_eq!(w["provenance"]["trial_id"].as_i64(), Some(best));
    assert!(w["metrics"]["proxy_acc"].is_number() && w["metrics"]["final_top1"].is_number());
    assert!(w["decomposition"]["ranks"]["features.4"].is_array());
    // The rung scores of the trial and the study's stored rung fidelity: one row per rung
    // (step 2) and for the proxy accuracy (step 4), over the one re-trained trial.
    assert_eq!(w["metrics"]["rung_scores"][0][0], 2, "{w}");
    let fidelity = store.rung_fidelity(1).unwrap();
    assert_eq!(
        fidelity.iter().map(|r| (r.step, r.n)).collect::<Vec<_>>(),
        vec![(2, 1), (4, 1)]
    );
    assert!(
        fidelity.iter().all(|r| r.kendall_tau.is_none()),
        "one trial ranks nothing"
    );
    assert_eq!(w["provenance"]["rung_fidelity"][1]["step"], 4);
    let o = run(&["trials", "--db", db.to_str().unwrap(), "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(rows[0]["rung_scores"].is_array(), "{rows}");
    // The search's own export is the same choice.
    let own = s.path("runs/tiny.best.json");
    let own: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(own).unwrap()).unwrap();
    assert_eq!(own["provenance"], w["provenance"]);

    let compressed = s.path("winner.safetensors");
    let base = s.path("runs/base.safetensors");
    let o = run(&[
        "compress",
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--weights",
        base.to_str().unwrap(),
        "--config",
        winner.to_str().unwrap(),
        "--out",
        compressed.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let c = last_json(&o);
    assert_eq!(c["after"]["flops"], w["metrics"]["flops"]);
    assert_eq!(c["after"]["params"], w["metrics"]["params"]);

    // Re-running a finished study does no new trial.
    let o = run(&["search", budget.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(s.store().trials(1).unwrap(), trials);
}

#[test]
fn a_diverging_fine_tune_fails_the_trial_and_the_search_goes_on() {
    let s = study(
        3,
        "steps = 4\nbatch_size = 16\neval_samples = 32\nlr = 1e30",
        "[final]\ntop_k = 0",
    );
    let o = run(&["search", s.budget().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let trials = s.store().trials(1).unwrap();
    assert_eq!(trials.len(), 3);
    for t in &trials {
        assert_eq!(t.state, TrialState::Failed, "{t:?}");
        let e = t.error.as_deref().unwrap();
        assert!(e.contains("non-finite"), "{e}");
    }
    assert!(String::from_utf8_lossy(&o.stdout).contains("no completed trial"));
}

/// Starts a search in the background, its stderr going to `search.log` beside the budget
/// (a file, so a chatty child never blocks on a full pipe), with the warnings and the
/// dispatch loop's closing line (its ticks and trial-list reads).
pub(crate) fn spawn(budget: &Path) -> Child {
    let log = std::fs::File::create(budget.with_file_name("search.log")).unwrap();
    bin()
        .env(
            "RUST_LOG",
            "warn,rankprune::search::controller::dispatch=info",
        )
        .args(["search", budget.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// Polls the store until `done` holds (the store may not exist yet at first); fails
/// with the child's stderr if it exits meanwhile.
fn wait_for(s: &Study, child: &mut Child, what: &str, mut done: impl FnMut(&TrialStore) -> bool) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(s.path("search.log")).unwrap_or_default();
            panic!("search exited ({status}) while waiting for {what}:\n{err}");
        }
        if (s.db().exists() || rankprune::store::is_postgres(&s.db()))
            && let Ok(store) = TrialStore::open(&s.db())
            && done(&store)
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn state_count(store: &TrialStore, state: TrialState) -> usize {
    store
        .trials(1)
        .map(|t| t.iter().filter(|t| t.state == state).count())
        .unwrap_or(0)
}

/// About a second per trial: SIGKILL lands mid-trial.
pub(crate) const SLOW_PROXY: &str = "steps = 200\nbatch_size = 16\neval_samples = 32\nearly_stop_step = 100\nearly_stop_median = false";
/// Far longer than the test: SIGTERM always finds the trial running.
pub(crate) const ENDLESS_PROXY: &str = "steps = 1000000\nbatch_size = 16\neval_samples = 32";

#[test]
fn sigkill_mid_trial_then_restart_loses_and_repeats_nothing() {
    sigkill_then_restart(&study(4, SLOW_PROXY, "[final]\ntop_k = 0"));
}

#[test]
fn on_postgres_sigkill_mid_trial_then_restart_loses_and_repeats_nothing() {
    let s = study(4, SLOW_PROXY, "[final]\ntop_k = 0");
    if let Some(s) = on_postgres(s, "the PostgreSQL SIGKILL test") {
        sigkill_then_restart(&s);
    }
}

fn sigkill_then_restart(s: &Study) {
    let mut child = spawn(&s.budget());
    wait_for(s, &mut child, "a completed and a running trial", |st| {
        state_count(st, TrialState::Complete) >= 1 && state_count(st, TrialState::Running) == 1
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let before = s.store().trials(1).unwrap();
    let done_before: Vec<_> = before
        .iter()
        .filter(|t| t.finished_at.is_some())
        .cloned()
        .collect();
    assert!(before.iter().any(|t| t.state == TrialState::Running));

    let o = run(&["search", s.budget().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let after = s.store().trials(1).unwrap();
    assert_eq!(after.len(), 4, "exactly the trial budget");
    assert!(after.iter().all(|t| t.finished_at.is_some()));
    for t in &done_before {
        assert_eq!(
            after.iter().find(|a| a.id == t.id),
            Some(t),
            "finished trial changed"
        );
    }
    let mut configs: Vec<&str> = after.iter().map(|t| t.config.as_str()).collect();
    configs.sort();
    configs.dedup();
    assert_eq!(configs.len(), 4, "a config was trained twice");
}

#[test]
fn sigterm_interrupts_cleanly_and_trials_reads_never_lock() {
    sigterm_then_resume(&study(3, ENDLESS_PROXY, "[final]\ntop_k = 0"));
}

#[test]
fn on_postgres_sigterm_interrupts_cleanly_and_trials_reads_never_fail() {
    let s = study(3, ENDLESS_PROXY, "[final]\ntop_k = 0");
    if let Some(s) = on_postgres(s, "the PostgreSQL SIGTERM test") {
        sigterm_then_resume(&s);
        // The dashboard reads the PostgreSQL store too.
        let (_dash, url) = crate::dashboard::start_dashboard(&s.db());
        let studies = crate::dashboard::get(&format!("{url}/api/studies"));
        assert_eq!(studies.0, 200, "{}", studies.1);
        let studies: serde_json::Value = serde_json::from_str(&studies.1).unwrap();
        assert_eq!(studies[0]["trials"], 3, "{studies}");
        assert_eq!(studies[0]["state"], "finished", "{studies}");
    }
}

fn sigterm_then_resume(s: &Study) {
    let mut child = spawn(&s.budget());
    wait_for(s, &mut child, "a running trial", |st| {
        state_count(st, TrialState::Running) == 1
    });
    // Readers during the search: every call succeeds.
    for _ in 0..15 {
        let o = run(&["trials", "--db", s.db().to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
    }
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "exit code of an interrupted search"
    );
    let store = s.store();
    assert_eq!(state_count(&store, TrialState::Running), 0);
    assert_eq!(state_count(&store, TrialState::Interrupted), 1);
    assert_eq!(
        store.trials(1).unwrap().len(),
        1,
        "nothing new after the signal"
    );
    drop(store);
    // Resume the same study with a shorter proxy (a changed budget is allowed).
    let budget = std::fs::read_to_string(s.budget()).unwrap();
    std::fs::write(s.budget(), budget.replace(ENDLESS_PROXY, FAST_PROXY)).unwrap();
    let o = run(&["search", s.budget().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let trials = s.store().trials(1).unwrap();
    assert_eq!(trials.len(), 3);
    assert!(trials.iter().all(|t| t.finished_at.is_some()), "{trials:?}");
}

#[test]
fn model_aware_strategies_start_from_warm_points_and_retrain_the_best_seed() {
    for (strategy, objective) in [
        (
            "evolution",
            "kind = \"constrained\"\ntarget_flops_reduction = 1.2",
        ),
        ("bayes", "kind = \"pareto\""),
    ] {
        // No top-k: the final stage re-trains only the best warm-start seed by proxy.
        let s = study(
            8,
            FAST_PROXY,
            "[final]\ntop_k = 0\nwarm_starts = 1\nepochs = 1",
        );
        let budget = std::fs::read_to_string(s.budget())
            .unwrap()
            .replace(
                "strategy = \"random\"",
                &format!("strategy = \"{strategy}\""),
            )
            .replace(
                "kind = \"constrained\"\ntarget_flops_reduction = 1.2",
                objective,
            );
        std::fs::write(s.budget(), budget).unwrap();
        let o = bin()
            .env("RUST_LOG", "rankprune=info")
            .args(["search", s.budget().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{strategy}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let warm = err
            .lines()
            .find(|l| l.contains("warm-start points"))
            .unwrap_or_else(|| panic!("{strategy}: no warm start in {err}"));
        assert!(!warm.contains("points=0"), "{strategy}: {warm}");
        let trials = s.store().trials(1).unwrap();
        assert_eq!(trials.len(), 8, "{strategy}");
        assert!(trials.iter().all(|t| t.finished_at.is_some()));
        // Seeds are proposed first: trials 0 .. points-1. The best sound one by proxy
        // (the first on ties) is the only one re-trained.
        let points: i64 = warm
            .split("points=")
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{strategy}: {warm}"));
        let mut best: Option<&rankprune::store::Trial> = None;
        for t in trials.iter().filter(|t| t.number < points) {
            let sound = matches!(t.state, TrialState::Complete | TrialState::EarlyStopped);
            if sound && best.is_none_or(|b| t.proxy_acc > b.proxy_acc) {
                best = Some(t);
            }
        }
        let store = s.store();
        let retrained: Vec<i64> = trials
            .iter()
            .filter(|t| store.final_result(t.id).unwrap().is_some())
            .map(|t| t.number)
            .collect();
        assert_eq!(
            retrained,
            vec![best.unwrap().number],
            "{strategy}: {trials:?}"
        );
        // The store says why it was re-trained.
        let f = store.final_result(best.unwrap().id).unwrap().unwrap();
        assert_eq!(f.reason.as_deref(), Some("warm_start"), "{strategy}");
    }
}

/// Rungs at step 0 (after BN recalibration, before any fine-tuning) and step 2 with
/// eta = 100: past three scores at a rung, a trial goes on only if it reaches the 99%
/// quantile of the others there; the stopped ones end early-stopped with that score.
/// The fine-tune distils from the base model.
#[test]
fn successive_halving_stops_trials_at_the_recalibrated_rung() {
    let s = study(
        8,
        "steps = 4\nbatch_size = 16\neval_samples = 32\nrungs = [0, 2]\neta = 100\nbn_recalibration = 1\ngate = \"always\"\n[proxy.distill]\ntemperature = 3.0",
        "[final]\ntop_k = 0\nwarm_starts = 0",
    );
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let store = s.store();
    let trials = store.trials(1).unwrap();
    assert_eq!(trials.len(), 8);
    let mut seen: Vec<f64> = Vec::new();
    let mut stopped_at_0 = 0;
    for t in &trials {
        assert_ne!(t.state, TrialState::Failed, "{t:?}");
        let reports = store.reports(t.id).unwrap();
        let at = |step| reports.iter().find(|r| r.0 == step).map(|r| r.1);
        let first = at(0).unwrap_or_else(|| panic!("trial {} has no step-0 score", t.number));
        let stop = seen.len() >= 3 && first < rankprune::stats::quantile(&seen, 1.0 - 1.0 / 100.0);
        if stop {
            stopped_at_0 += 1;
            assert_eq!(t.state, TrialState::EarlyStopped, "{t:?} {reports:?}");
            assert_eq!(t.proxy_acc, Some(first));
            assert_eq!(at(2), None, "a stopped trial trains no further");
        } else {
            assert!(at(2).is_some(), "trial {} went on: {reports:?}", t.number);
        }
        seen.push(first);
    }
    eprintln!("step-0 scores {seen:?}, stopped {stopped_at_0}");
    let all_equal = seen.iter().all(|&v| v == seen[0]);
    assert!(stopped_at_0 > 0 || all_equal, "{seen:?}");
}

/// The target is stored when a study starts: a budget that changes it is refused (exit
/// 2) unless --allow-budget-change, which stores the new target for every reader.
#[test]
fn a_changed_target_is_refused_unless_allowed_then_used_everywhere() {
    let s = study(2, FAST_PROXY, "[final]\ntop_k = 0\nwarm_starts = 0");
    let budget = s.budget();
    let o = run(&["search", budget.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let stored = |s: &Study| s.store().studies().unwrap()[0].target.clone().unwrap();
    let first: serde_json::Value = serde_json::from_str(&stored(&s)).unwrap();
    let text_before = std::fs::read_to_string(&budget).unwrap();
    std::fs::write(
        &budget,
        text_before
            .replace(
                "target_flops_reduction = 1.2",
                "target_flops_reduction = 1.5",
            )
            .replace("max_trials = 2", "max_trials = 3"),
    )
    .unwrap();
    let o = run(&["search", budget.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--allow-budget-change"), "{}", text(&o));
    assert_eq!(s.store().trials(1).unwrap().len(), 2, "nothing ran");

    let o = run(&[
        "search",
        budget.to_str().unwrap(),
        "--json",
        "--allow-budget-change",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let second: serde_json::Value = serde_json::from_str(&stored(&s)).unwrap();
    let (a, b) = (
        first["max_flops"].as_u64().unwrap(),
        second["max_flops"].as_u64().unwrap(),
    );
    assert!(
        b < a && (a as f64 / b as f64 - 1.5 / 1.2).abs() < 0.01,
        "{a} {b}"
    );
    // The new trial meets the new target; export reads the stored one.
    let trials = s.store().trials(1).unwrap();
    assert_eq!(trials.len(), 3);
    assert!(trials[2].cost.flops <= b);
    let study = s.store().studies().unwrap().remove(0);
    let (_, target) = rankprune::search::export::study_base(&study).unwrap();
    assert_eq!(target.max_flops, Some(b));
}

/// With `rung0_score = "kl"` the step-0 rung reports minus the KL divergence of the base
/// model's softmax from the candidate's (at most 0), and the rule ranks trials by it.
#[test]
fn the_step_zero_rung_can_score_by_kl_from_the_base_model() {
    let s = study(
        5,
        "steps = 4\nbatch_size = 16\neval_samples = 32\nrungs = [0]\nbn_recalibration = 1\nrung0_score = \"kl\"\nearly_stop_min_acc = 0.9\ngate = \"always\"",
        "[final]\ntop_k = 0\nwarm_starts = 0",
    );
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let store = s.store();
    let mut seen = Vec::new();
    for t in store.trials(1).unwrap() {
        let first = store.reports(t.id).unwrap()[0];
        assert_eq!(first.0, 0);
        assert!(first.1 <= 1e-6, "minus a KL divergence: {first:?}");
        // The minimum accuracy (0.9) does not apply to a KL score.
        let stop = seen.len() >= 3 && first.1 < rankprune::stats::quantile(&seen, 0.5);
        let want = if stop {
            TrialState::EarlyStopped
        } else {
            TrialState::Complete
        };
        assert_eq!(t.state, want, "{t:?} after {seen:?}");
        seen.push(first.1);
    }
}

/// A study of a heuristic-anchored space: the heuristic's own config is the first trial,
/// every trial records its knobs and lands on the target, and a second run resumes with
/// the points it knows from the stored configs (no trial proposed twice).
#[test]
fn an_anchored_study_runs_and_resumes() {
    let s = study(3, FAST_PROXY, "[final]\ntop_k = 0\nwarm_starts = 0");
    std::fs::write(
        s.dir.path().join("space.toml"),
        "[anchored]\ncalibration = { min = 0.5, max = 1.0, step = 0.25 }\nstage_scale = { min = -1.0, max = 1.0, step = 1.0 }",
    )
    .unwrap();
    edit_budget(&s, "strategy = \"random\"", "strategy = \"bayes\"");
    edit_budget(&s, "[final]", "[final]\ncontrol_calibration = 0.75");
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    edit_budget(&s, "max_trials = 3", "max_trials = 5");
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("not a point"), "replayed: {}", text(&o));
    let store = s.store();
    let study = store.studies().unwrap().remove(0);
    let max = serde_json::from_str::<serde_json::Value>(study.target.as_ref().unwrap()).unwrap()
        ["max_flops"]
        .as_u64()
        .unwrap();
    let trials = store.trials(1).unwrap();
    assert_eq!(trials.len(), 5);
    let mut configs = std::collections::HashSet::new();
    for t in &trials {
        let c: serde_json::Value = serde_json::from_str(&t.config).unwrap();
        assert_eq!(c["provenance"]["space"], "anchored", "{c}");
        assert!(
            t.cost.flops <= max && t.cost.flops as f64 >= 0.95 * max as f64,
            "{t:?}"
        );
        assert!(
            configs.insert(t.config.clone()),
            "proposed twice: {}",
            t.config
        );
    }
    let first: serde_json::Value = serde_json::from_str(&trials[0].config).unwrap();
    let knobs = first["provenance"]["knobs"].as_object().unwrap();
    assert_eq!(
        knobs["calibration.stage2"], 0.75,
        "the heuristic first: {knobs:?}"
    );
    assert!(
        knobs
            .iter()
            .filter(|(k, _)| k.starts_with("scale"))
            .all(|(_, v)| v == 0.0)
    );
}

/// The final stage re-trains a model once per seed: when a finalist is the heuristic's
/// own config (an anchored space's first trial), the control takes its run.
#[test]
fn a_finalist_that_is_the_control_is_retrained_once() {
    let s = study(
        1,
        FAST_PROXY,
        "[final]\ntop_k = 1\nwarm_starts = 0\nepochs = 1",
    );
    std::fs::write(
        s.dir.path().join("space.toml"),
        "[anchored]\ncalibration = { min = 0.5, max = 1.0, step = 0.25 }",
    )
    .unwrap();
    edit_budget(&s, "strategy = \"random\"", "strategy = \"bayes\"");
    edit_budget(&s, "[final]", "[final]\ncontrol_calibration = 0.75");
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let runs = s.store().final_runs(1).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    // One training: the control's run is the finalist's, weights and all.
    assert_eq!(runs[0].weights_path, runs[1].weights_path);
    assert!(!s.path("runs/tiny-control-seed1.safetensors").exists());
    assert_eq!(
        (runs[0].val_top1, &runs[0].test_correct),
        (runs[1].val_top1, &runs[1].test_correct)
    );
    assert_ne!(runs[0].subject, runs[1].subject);
}

/// `search.warm_configs`: a given config (another study's winner, to refine) is the
/// study's first proposal, ahead of the heuristic's warm starts.
#[test]
fn a_warm_config_is_proposed_first() {
    let s = study(2, FAST_PROXY, "[final]\ntop_k = 0\nwarm_starts = 0");
    let given = r#"{"decomposition":{"method":"tucker2","ranks":{"features.4":[4,8]}},"pruning":{"method":"l2_norm","ratios":{"features.0":0.25,"features.4_tucker_0":0.0,"features.4_tucker_1":0.25,"features.4_tucker_2":0.0}}}"#;
    std::fs::write(s.path("given.json"), given).unwrap();
    edit_budget(
        &s,
        "strategy = \"random\"",
        "strategy = \"bayes\"\nwarm_configs = [\"given.json\"]",
    );
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let first: serde_json::Value =
        serde_json::from_str(&s.store().trials(1).unwrap()[0].config).unwrap();
    let given: serde_json::Value = serde_json::from_str(given).unwrap();
    assert_eq!(
        first["decomposition"]["ranks"],
        given["decomposition"]["ranks"]
    );
    assert_eq!(first["pruning"]["ratios"], given["pruning"]["ratios"]);
}

/// Bad search inputs are refused before any work, naming the key: warm configs for the
/// random strategy or from a missing file, a missing gate evidence file, an anchored
/// space without the control's calibration on its grid.
#[test]
fn bad_warm_configs_gate_evidence_and_anchors_are_refused() {
    let s = study(1, FAST_PROXY, "[final]\ntop_k = 0\nwarm_starts = 0");
    let refused = |from: &str, to: &str, want: &str| {
        edit_budget(&s, from, to);
        let o = run(&["search", s.budget().to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
        edit_budget(&s, to, from);
    };
    let random = "strategy = \"random\"";
    refused(
        random,
        "strategy = \"random\"\nwarm_configs = [\"w.json\"]",
        "the random strategy proposes no warm starts",
    );
    refused(
        random,
        "strategy = \"bayes\"\nwarm_configs = [\"w.json\"]",
        "search.warm_configs",
    );
    refused(
        "[proxy]\n",
        "[proxy]\ngate_evidence = \"nowhere.json\"\n",
        "proxy.gate_evidence",
    );
    std::fs::write(
        s.path("space.toml"),
        "[anchored]\ncalibration = { min = 0.5, max = 1.0, step = 0.25 }",
    )
    .unwrap();
    refused(
        "[final]",
        "[final]\ncontrol_calibration = 0.1",
        "misses 0.1",
    );
    assert!(!s.db.exists(), "nothing ran");
}

/// Without a fidelity measurement of its signal (`proxy.gate_evidence`), the step-0 gate
/// scores every trial but stops none, and the study records why.
#[test]
fn an_unmeasured_step_zero_gate_stops_no_trial() {
    let s = study(
        5,
        "steps = 2\nbatch_size = 16\neval_samples = 32\nrungs = [0]\neta = 1000000\nbn_recalibration = 1\nrung0_score = \"kl\"",
        "[final]\ntop_k = 0\nwarm_starts = 0",
    );
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let store = s.store();
    for t in store.trials(1).unwrap() {
        assert_eq!(t.state, TrialState::Complete, "{t:?}");
        assert_eq!(store.reports(t.id).unwrap()[0].0, 0, "scored at step 0");
    }
    let gate = store.studies().unwrap()[0]
        .gate
        .clone()
        .expect("the decision is stored");
    let gate: serde_json::Value = serde_json::from_str(&gate).unwrap();
    assert_eq!(gate["stops"], false, "{gate}");
    assert_eq!(gate["signal"], "recon:1 kl", "{gate}");
    assert!(
        gate["reason"].as_str().unwrap().contains("unmeasured"),
        "{gate}"
    );
}

/// `search.repair` builds every trial repaired: the same proposals (random strategy, same
/// seed, same base weights) score differently at the step-0 KL rung than without it, and
/// the final stage re-trains a repaired build. (Whether a repair brings a candidate
/// closer to the base model is tested in `repair.rs`; at this size, the rank-2 Tucker
/// unit of one proposal ends farther from it by KL, the others closer.)
#[test]
fn search_repair_builds_every_trial_repaired() {
    let proxy = "steps = 2\nbatch_size = 16\neval_samples = 32\nrungs = [0]\neta = 1000000\nbn_recalibration = 1\nrung0_score = \"kl\"";
    let plain = study(4, proxy, "[final]\ntop_k = 0\nwarm_starts = 0");
    let o = run(&["search", plain.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let repaired = study(4, proxy, "[final]\ntop_k = 1\nwarm_starts = 0\nepochs = 1");
    share_base(&plain, &repaired);
    edit_budget(&repaired, "seed = 1\n", "seed = 1\nrepair = 2\n");
    let o = run(&["search", repaired.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let kl = |s: &Study| -> Vec<(String, f64)> {
        let store = s.store();
        store
            .trials(1)
            .unwrap()
            .into_iter()
            .map(|t| (t.config.clone(), -store.reports(t.id).unwrap()[0].1))
            .collect()
    };
    let what = "a repaired build scores as built";
    assert_same_proposals_scored_apart(&kl(&plain), &kl(&repaired), 4, what);
    assert!(
        retrained_any(&repaired),
        "the final stage re-trained a repaired build"
    );
}

/// `[proxy] schedule = "linear"` reaches every trial's fine-tune (the same proposals end
/// with other losses than at the constant rate), and the final stage re-trains on
/// `[final] schedule`.
#[test]
fn the_proxy_and_final_schedules_reach_the_trials_and_the_final_stage() {
    let proxy = "steps = 3\nbatch_size = 16\neval_samples = 32";
    let constant = study(3, proxy, "[final]\ntop_k = 0\nwarm_starts = 0");
    let o = run(&["search", constant.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let decayed = study(
        3,
        &format!("{proxy}\nschedule = \"linear\""),
        "[final]\ntop_k = 1\nwarm_starts = 0\nepochs = 1\nschedule = \"linear\"",
    );
    share_base(&constant, &decayed);
    let o = run(&["search", decayed.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let losses = |s: &Study| -> Vec<(String, f64)> {
        s.store()
            .trials(1)
            .unwrap()
            .into_iter()
            .map(|t| (t.config, t.proxy_loss.unwrap()))
            .collect()
    };
    let what = "a decayed fine-tune ends as a constant one";
    assert_same_proposals_scored_apart(&losses(&constant), &losses(&decayed), 3, what);
    assert!(
        retrained_any(&decayed),
        "the final stage re-trained on the linear schedule"
    );
}

/// Gives study `to` the base weights that `from`'s search trained, so both start alike.
fn share_base(from: &Study, to: &Study) {
    std::fs::create_dir_all(to.path("runs")).unwrap();
    std::fs::copy(
        from.path("runs/base.safetensors"),
        to.path("runs/base.safetensors"),
    )
    .unwrap();
}

/// Whether the study's final stage re-trained any trial.
fn retrained_any(s: &Study) -> bool {
    let store = s.store();
    store
        .trials(1)
        .unwrap()
        .iter()
        .any(|t| store.final_result(t.id).unwrap().is_some())
}

/// Two studies' (config, score) per trial: the same `n` proposals in the same order,
/// each scored differently (else `what` happened).
fn assert_same_proposals_scored_apart(
    before: &[(String, f64)],
    after: &[(String, f64)],
    n: usize,
    what: &str,
) {
    assert_eq!((before.len(), after.len()), (n, n));
    for (b, a) in before.iter().zip(after) {
        assert_eq!(b.0, a.0, "the same proposals");
        assert!((b.1 - a.1).abs() > 1e-6, "{what}: {a:?}");
    }
}

/// Replaces `from` by `to` in the study's budget file.
pub(crate) fn edit_budget(s: &Study, from: &str, to: &str) {
    let text = std::fs::read_to_string(s.budget()).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(s.budget(), text.replace(from, to)).unwrap();
}

/// A wall-time limit stops the search: no trial starts after it, running ones finish.
#[test]
fn the_wall_time_limit_stops_the_search() {
    // 0.00002 hours = 72 ms: far less than 200 trials take, even in a release build.
    let s = study(200, FAST_PROXY, "[final]\ntop_k = 0\nwarm_starts = 0");
    edit_budget(
        &s,
        "max_trials = 200",
        "max_trials = 200\nmax_wall_hours = 0.00002",
    );
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = last_json(&o);
    assert_eq!(out["stopped"], "wall_limit", "{out}");
    let trials = s.store().trials(1).unwrap();
    assert!(trials.len() < 200, "{}", trials.len());
    assert!(
        trials
            .iter()
            .all(|t| t.finished_at.is_some() || t.state == TrialState::Queued)
    );
}

/// A space with three points: the search ends, exhausted, after three trials.
#[test]
fn an_exhausted_space_stops_the_search() {
    let s = study(10, FAST_PROXY, "[final]\ntop_k = 0\nwarm_starts = 0");
    std::fs::write(
        s.path("space.toml"),
        r#"
[decomposition]
layers = ["features.4"]
rank = "absolute"
min = 8
max = 8

[pruning]
layers = ["features.0"]
min = 0.0
max = 0.5
step = 0.25
"#,
    )
    .unwrap();
    edit_budget(
        &s,
        "target_flops_reduction = 1.2",
        "target_flops_reduction = 1.0",
    );
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = last_json(&o);
    assert_eq!(out["stopped"], "exhausted", "{out}");
    assert_eq!(s.store().trials(1).unwrap().len(), 3);
}

/// A latency target alone: the study measures its latency table (cached beside the
/// store), stores the bound, prices every trial by the table and admits only those
/// under the bound; `trials`, `export` and `rankprune latency` show the same figures.
#[test]
fn a_latency_target_prices_every_trial_by_the_table() {
    let s = study(4, FAST_PROXY, "[final]\ntop_k = 0\nwarm_starts = 0");
    edit_budget(
        &s,
        "target_flops_reduction = 1.2",
        "target_latency_reduction = 1.1\nlatency_batch = 16",
    );
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let table_file = s.path("runs/tiny.latency.json");
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&table_file).unwrap()).unwrap();
    assert_eq!(table["batch"], 16);
    assert!(table["entries"].as_object().unwrap().len() >= 5, "{table}");
    let store = s.store();
    let row = store.studies().unwrap().remove(0);
    let target: serde_json::Value = serde_json::from_str(row.target.as_deref().unwrap()).unwrap();
    let bound = target["max_latency_us"].as_u64().expect("a latency bound");
    let trials = store.trials(1).unwrap();
    assert_eq!(trials.len(), 4);
    for t in &trials {
        let us = t.cost.latency_us.expect("every trial is priced");
        assert!(
            us <= bound,
            "trial {}: {us} us over the bound {bound} us",
            t.number
        );
    }
    let db = s.db();
    let o = run(&["trials", "--db", db.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("latency ms"),
        "{}",
        text(&o)
    );
    let best = s.path("best.json");
    let w = export(&db, &["--best"], &best);
    let ms = w["metrics"]["latency_ms"]
        .as_f64()
        .expect("the export's latency");
    // The CLI reads the same table: the same prediction for the exported config.
    let o = run(&[
        "latency",
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--config",
        best.to_str().unwrap(),
        "--batch",
        "16",
        "--table",
        table_file.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report = last_json(&o);
    let predicted = report["predicted_ms"].as_f64().unwrap();
    assert!(
        (predicted - ms).abs() < 1e-3,
        "CLI {predicted} ms, trial {ms} ms"
    );
    // Run again, the study resumes: the cached table gives the base the same latency,
    // so the stored bound stands (a re-measured one would read as a changed target).
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(s.store().trials(1).unwrap(), trials);
}
