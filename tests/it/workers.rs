//! Worker processes (`rankprune worker`) with a controller that has no workers of its
//! own (`workers.processes = true`), on both stores: three workers started before the
//! study exists wait, then run it to exactly `max_trials`; one is SIGKILLed mid-trial and
//! its trial, once the lease expires, is run by another; nothing finished is lost or run
//! twice; `trials` reads meanwhile never fail.

use crate::common::Killed;
use crate::search::{
    ENDLESS_PROXY, SLOW_PROXY, Study, bin, edit_budget, on_postgres, run, spawn, study, text,
};
use rankprune::store::{TrialState, TrialStore, is_postgres};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn worker(s: &Study, name: &str) -> Killed {
    let log = std::fs::File::create(s.path(&format!("{name}.log"))).unwrap();
    let child = bin()
        .args([
            "worker",
            "--db",
            s.db().to_str().unwrap(),
            "--name",
            name,
            "--lease",
            "1.5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Killed(child)
}

fn processes_study() -> Study {
    let s = study(6, SLOW_PROXY, "processes = true\n[final]\ntop_k = 0");
    edit_budget(&s, "cpu = 1", "cpu = 0");
    s
}

fn store_of(s: &Study) -> Option<TrialStore> {
    if !(s.db().exists() || is_postgres(&s.db())) {
        return None;
    }
    TrialStore::open(&s.db()).ok()
}

/// The `ticks` and `trial_reads` of the controller's "dispatch ends" log line.
fn dispatch_counts(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("dispatch ends"))
        .unwrap_or_else(|| panic!("no dispatch line in\n{log}"));
    let field = |name: &str| -> u64 {
        let rest = &line[line.find(name).expect("field logged") + name.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().expect("a count")
    };
    (field("ticks="), field("trial_reads="))
}

fn workers_run_the_study_and_survive_a_sigkill(s: &Study) {
    if !is_postgres(&s.db()) {
        std::fs::create_dir_all(s.path("runs")).unwrap();
    }
    let mut workers: Vec<Killed> = ["w1", "w2", "w3"].iter().map(|n| worker(s, n)).collect();
    std::thread::sleep(Duration::from_millis(500));
    for w in workers.iter_mut() {
        assert!(
            w.0.try_wait().unwrap().is_none(),
            "a worker without studies waits"
        );
    }
    let mut search = Killed(spawn(&s.budget()));
    // Wait until w1 runs a trial, then kill it.
    let t0 = Instant::now();
    let killed = loop {
        assert!(
            search.0.try_wait().unwrap().is_none(),
            "the controller ended early"
        );
        let running = store_of(s).and_then(|st| {
            st.trials(1)
                .ok()?
                .into_iter()
                .find(|t| t.state == TrialState::Running && t.worker.as_deref() == Some("w1"))
        });
        if let Some(t) = running {
            break t;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "w1 never ran a trial"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Command::new("kill")
        .args(["-KILL", &workers[0].0.id().to_string()])
        .status()
        .unwrap();
    // Readers meanwhile: every call succeeds.
    while search.0.try_wait().unwrap().is_none() {
        let o = run(&["trials", "--db", s.db().to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the study never finished"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = search.0.wait().unwrap();
    let log = std::fs::read_to_string(s.path("search.log")).unwrap_or_default();
    assert!(status.success(), "controller: {status}\n{log}");
    // The controller read the study's trial list once per dispatch tick.
    let (ticks, reads) = dispatch_counts(&log);
    assert!(
        ticks > 1 && reads == ticks,
        "{ticks} ticks, {reads} reads\n{log}"
    );
    let trials = TrialStore::open(&s.db()).unwrap().trials(1).unwrap();
    assert_eq!(trials.len(), 6, "exactly max_trials: {trials:?}");
    assert!(
        trials
            .iter()
            .all(|t| matches!(t.state, TrialState::Complete | TrialState::EarlyStopped)),
        "{trials:?}"
    );
    let again = trials.iter().find(|t| t.id == killed.id).unwrap();
    assert_ne!(
        again.worker.as_deref(),
        Some("w1"),
        "the killed worker's trial ran elsewhere"
    );
    let mut configs: Vec<&str> = trials.iter().map(|t| t.config.as_str()).collect();
    configs.sort();
    configs.dedup();
    assert_eq!(configs.len(), 6, "a config was run twice");
    let by: std::collections::HashSet<_> = trials.iter().filter_map(|t| t.worker.clone()).collect();
    assert!(
        by.len() >= 2,
        "the surviving workers shared the trials: {by:?}"
    );
    // SIGTERM: the idle workers stop cleanly.
    for w in workers.iter_mut().skip(1) {
        w.terminate();
        let st = w.0.wait().unwrap();
        assert!(st.success(), "worker exit {st}");
    }
}

#[test]
fn worker_processes_run_a_study_and_survive_a_sigkill() {
    workers_run_the_study_and_survive_a_sigkill(&processes_study());
}

#[test]
fn on_postgres_worker_processes_run_a_study_and_survive_a_sigkill() {
    if let Some(s) = on_postgres(processes_study(), "the PostgreSQL worker test") {
        workers_run_the_study_and_survive_a_sigkill(&s);
    }
}

/// SIGTERM mid-trial: the worker hands its trial back (queued again, without its partial
/// scores) and exits 0.
#[test]
fn sigterm_makes_a_worker_hand_its_trial_back() {
    let s = study(2, ENDLESS_PROXY, "processes = true\n[final]\ntop_k = 0");
    edit_budget(&s, "cpu = 1", "cpu = 0");
    std::fs::create_dir_all(s.path("runs")).unwrap();
    let mut w = worker(&s, "w1");
    let mut search = Killed(spawn(&s.budget()));
    let t0 = Instant::now();
    let trial = loop {
        let running = store_of(&s).and_then(|st| {
            st.trials(1)
                .ok()?
                .into_iter()
                .find(|t| t.state == TrialState::Running)
        });
        if let Some(t) = running {
            break t;
        }
        assert!(
            search.0.try_wait().unwrap().is_none(),
            "the controller ended early"
        );
        assert!(t0.elapsed() < Duration::from_secs(300), "no trial started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(500));
    w.terminate();
    let st = w.0.wait().unwrap();
    let log = std::fs::read_to_string(s.path("w1.log")).unwrap_or_default();
    assert!(st.success(), "worker exit {st}\n{log}");
    let store = TrialStore::open(&s.db()).unwrap();
    let back = store.trial(trial.id).unwrap();
    assert_eq!(back.state, TrialState::Queued, "{back:?}");
    assert_eq!(back.worker, None);
    assert!(store.reports(trial.id).unwrap().is_empty());
    search.terminate();
    search.0.wait().unwrap();
}

/// A worker whose base weights are not the ones the study started with (here the file
/// is replaced after the controller recorded its SHA-256) refuses the study's trials:
/// exit code 2, a message naming the file, and the claimed trial queued again.
#[test]
fn a_worker_with_other_base_weights_is_refused() {
    other_weights_are_refused(&refusal_study());
}

#[test]
fn on_postgres_a_worker_with_other_base_weights_is_refused() {
    if let Some(s) = on_postgres(refusal_study(), "the PostgreSQL refusal test") {
        other_weights_are_refused(&s);
    }
}

fn refusal_study() -> Study {
    let s = study(3, ENDLESS_PROXY, "processes = true\n[final]\ntop_k = 0");
    edit_budget(&s, "cpu = 1", "cpu = 0");
    s
}

fn other_weights_are_refused(s: &Study) {
    std::fs::create_dir_all(s.path("runs")).unwrap();
    let mut search = Killed(spawn(&s.budget()));
    let t0 = Instant::now();
    while !store_of(s).is_some_and(|st| {
        st.studies()
            .unwrap_or_default()
            .first()
            .is_some_and(|r| r.identity.is_some())
            && st
                .trials(1)
                .is_ok_and(|ts| ts.iter().any(|t| t.state == TrialState::Queued))
    }) {
        assert!(
            search.0.try_wait().unwrap().is_none(),
            "the controller ended early"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no trial was queued"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let weights = s.path("runs/base.safetensors");
    let o = run(&[
        "init",
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--seed",
        "99",
        "--out",
        weights.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["worker", "--db", s.db().to_str().unwrap(), "--name", "w9"]);
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("model.weights")
            && msg.contains("base.safetensors")
            && msg.contains("not the study's"),
        "{msg}"
    );
    let trials = TrialStore::open(&s.db()).unwrap().trials(1).unwrap();
    assert!(
        trials
            .iter()
            .all(|t| t.state == TrialState::Queued && t.worker.is_none()),
        "the refused worker ran nothing: {trials:?}"
    );
    search.terminate();
    search.0.wait().unwrap();
}
