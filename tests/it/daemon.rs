//! The daemon (`rankprune serve`), on both stores: two studies submitted to it run at
//! once on two worker processes, each to exactly its `max_trials`, while `trials` reads
//! never fail; `rankprune stop` ends a third study early (no queued trial left, its
//! running ones finished); SIGTERM stops the daemon cleanly.

use crate::common::{Killed, spawn_logged};
use crate::search::{SLOW_PROXY, Study, edit_budget, on_postgres, run, study, text};
use rankprune::store::{StudyRow, StudyState, Trial, TrialState, TrialStore, is_postgres};
use std::path::Path;
use std::time::{Duration, Instant};

fn named(s: Study, name: &str) -> Study {
    edit_budget(&s, "name = \"tiny\"", &format!("name = \"{name}\""));
    s
}

fn study_rows(db: &Path) -> Vec<StudyRow> {
    TrialStore::open(db)
        .ok()
        .and_then(|s| s.studies().ok())
        .unwrap_or_default()
}

fn trials_of(db: &Path, name: &str) -> Vec<Trial> {
    let store = TrialStore::open(db).unwrap();
    let row = store
        .studies()
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap();
    store.trials(row.id).unwrap()
}

/// Waits (reading `trials` meanwhile, which must never fail) until `done` holds.
fn wait_until(db: &Path, daemon: &mut Killed, what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "the daemon exited while waiting for {what}"
        );
        for s in study_rows(db) {
            let o = run(&[
                "trials",
                "--db",
                db.to_str().unwrap(),
                "--study",
                &s.name,
                "--json",
            ]);
            assert!(o.status.success(), "{}", text(&o));
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn state_of(db: &Path, name: &str) -> Option<StudyState> {
    study_rows(db)
        .into_iter()
        .find(|s| s.name == name)
        .and_then(|s| s.state)
}

fn daemon_runs_two_studies_and_stops_a_third(db: &Path, studies: [&Study; 3]) {
    let dbs = db.to_str().unwrap();
    let [a, b, c] = studies;
    let logs = a.path("");
    let mut workers: Vec<Killed> = ["w1", "w2"]
        .iter()
        .map(|n| {
            spawn_logged(
                &["worker", "--db", dbs, "--name", n, "--lease", "2"],
                &logs.join(format!("{n}.log")),
            )
        })
        .collect();
    let mut daemon = spawn_logged(&["serve", "--db", dbs], &logs.join("serve.log"));
    for (s, name) in [(a, "alpha"), (b, "beta")] {
        let o = run(&["submit", s.budget().to_str().unwrap(), "--db", dbs]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains(&format!("study {name}")), "{}", text(&o));
    }
    // A second submission of an active study is refused.
    let again = run(&["submit", a.budget().to_str().unwrap(), "--db", dbs]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    wait_until(db, &mut daemon, "alpha and beta to finish", || {
        ["alpha", "beta"]
            .iter()
            .all(|n| state_of(db, n) == Some(StudyState::Finished))
    });
    let (ta, tb) = (trials_of(db, "alpha"), trials_of(db, "beta"));
    for (name, trials, limit) in [("alpha", &ta, 4), ("beta", &tb, 3)] {
        assert_eq!(
            trials.len(),
            limit,
            "{name}: exactly max_trials: {trials:?}"
        );
        assert!(
            trials
                .iter()
                .all(|t| matches!(t.state, TrialState::Complete | TrialState::EarlyStopped)),
            "{name}: {trials:?}"
        );
        assert!(
            trials
                .iter()
                .all(|t| t.worker.as_deref().is_some_and(|w| w.starts_with('w'))),
            "{name}: worker processes ran every trial: {trials:?}"
        );
    }
    // At once: each study had a trial start before the other's last one ended.
    let span = |ts: &[Trial]| {
        let start = ts
            .iter()
            .filter_map(|t| t.started_at)
            .fold(f64::MAX, f64::min);
        let end = ts.iter().filter_map(|t| t.finished_at).fold(0.0, f64::max);
        (start, end)
    };
    let ((sa, ea), (sb, eb)) = (span(&ta), span(&tb));
    assert!(
        sa < eb && sb < ea,
        "the studies ran one after the other: {sa}..{ea} and {sb}..{eb}"
    );

    // A long study, stopped once a trial has finished.
    let o = run(&["submit", c.budget().to_str().unwrap(), "--db", dbs]);
    assert!(o.status.success(), "{}", text(&o));
    wait_until(db, &mut daemon, "a trial of gamma", || {
        state_of(db, "gamma").is_some()
            && trials_of(db, "gamma")
                .iter()
                .any(|t| t.finished_at.is_some())
    });
    let o = run(&["stop", "gamma", "--db", dbs]);
    assert!(o.status.success(), "{}", text(&o));
    wait_until(db, &mut daemon, "gamma to finish", || {
        state_of(db, "gamma") == Some(StudyState::Finished)
    });
    let tc = trials_of(db, "gamma");
    assert!(
        tc.len() < 200,
        "the stop ended gamma early: {} trials",
        tc.len()
    );
    assert!(
        tc.iter().all(|t| t.finished_at.is_some()),
        "no trial of a stopped study is left queued or running: {tc:?}"
    );
    let row = study_rows(db)
        .into_iter()
        .find(|s| s.name == "gamma")
        .unwrap();
    assert_eq!(row.stop_reason.as_deref(), Some("stopped"));
    let o = run(&["stop", "gamma", "--db", dbs]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "stopping a finished study: {}",
        text(&o)
    );

    daemon.terminate();
    let st = daemon.0.wait().unwrap();
    let log = std::fs::read_to_string(logs.join("serve.log")).unwrap_or_default();
    assert!(st.success(), "daemon exit {st}\n{log}");
    for w in workers.iter_mut() {
        w.terminate();
        assert!(w.0.wait().unwrap().success());
    }
}

/// Trials long enough (about a second) that a study cannot finish before the daemon has
/// started the other one.
const MEDIUM_PROXY: &str = "steps = 40\nbatch_size = 16\neval_samples = 32\nearly_stop_step = 20\nearly_stop_median = false";

fn three_studies() -> [Study; 3] {
    let top0 = "[final]\ntop_k = 0\nwarm_starts = 0";
    [
        named(study(4, MEDIUM_PROXY, top0), "alpha"),
        named(study(3, MEDIUM_PROXY, top0), "beta"),
        named(study(200, SLOW_PROXY, top0), "gamma"),
    ]
}

#[test]
fn the_daemon_runs_two_studies_at_once_and_stops_one() {
    let studies = three_studies();
    // The daemon's store lives apart from the budgets (their study.db is not used).
    let store = tempfile::tempdir().unwrap();
    let db = store.path().join("daemon.sqlite");
    daemon_runs_two_studies_and_stops_a_third(&db, [&studies[0], &studies[1], &studies[2]]);
}

#[test]
fn on_postgres_the_daemon_runs_two_studies_at_once_and_stops_one() {
    let [a, b, c] = three_studies();
    let Some(a) = on_postgres(a, "the PostgreSQL daemon test") else {
        return;
    };
    assert!(is_postgres(&a.db()));
    daemon_runs_two_studies_and_stops_a_third(&a.db(), [&a, &b, &c]);
}
