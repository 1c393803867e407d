//! Crashes of the daemon and of worker processes, on both stores, with dry-run trials
//! (`worker --dry-run-ms`: nothing trained, so the controller, the store and the
//! leases are what is tested):
//! - a daemon SIGKILLed mid-study and started again runs each study (random, evolution,
//!   bayes) to exactly `max_trials` with the stop reason `budget`; a SIGTERM leaves its
//!   studies `interrupted` at once, and a third daemon finishes them;
//! - the soak: workers SIGKILLed every fraction of a second, the active daemon SIGKILLed
//!   twice (once in a study's final stage) with a standby taking over each time; every
//!   study ends with exactly `max_trials` distinct configs, nothing queued or running,
//!   every `studies`/`trials` read succeeds, and no two controllers ever held one
//!   study's or the store's lease at once.
//!
//! `RANKPRUNE_SOAK_TRIALS` (per study, default 100), `RANKPRUNE_SOAK_MS` (a trial's
//! dry-run milliseconds, default 100) and `RANKPRUNE_SOAK_OUT` (a file the soak's
//! table row is appended to) make the long version: `experiments/chaos-soak`.

use crate::common::{Killed, spawn_logged};
use crate::search::{FAST_PROXY, Study, edit_budget, on_postgres, run, study, text};
use rankprune::store::{
    DAEMON_SCOPE, Lease, StudyRow, StudyState, TrialState, TrialStore, is_postgres, now,
    study_scope,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Lease of daemons, study controllers and workers in these tests (seconds).
const LEASE: &str = "1";
/// How often `studies` and `trials` are read while waiting.
const READ_EVERY: Duration = Duration::from_millis(700);

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A study of worker processes on `cfg_bn:8,M,16,M,32,M`: `strategy`, `max_trials`, and a
/// final stage of `final_epochs` (none when 0).
fn chaos_study(name: &str, strategy: &str, max_trials: usize, final_epochs: usize) -> Study {
    let fin = if final_epochs == 0 {
        "[final]\ntop_k = 0\nwarm_starts = 0".to_string()
    } else {
        format!("[final]\ntop_k = 1\nwarm_starts = 0\nepochs = {final_epochs}")
    };
    let s = study(max_trials, FAST_PROXY, &format!("processes = true\n{fin}"));
    edit_budget(&s, "cpu = 1", "cpu = 0");
    edit_budget(&s, "name = \"tiny\"", &format!("name = \"{name}\""));
    edit_budget(
        &s,
        "strategy = \"random\"",
        &format!("strategy = \"{strategy}\""),
    );
    edit_budget(&s, "\"cfg_bn:8,M,16,M\"", "\"cfg_bn:8,M,16,M,32,M\"");
    s
}

/// Worker processes and daemons on one store, with every process's log in `logs`.
struct Cluster {
    db: PathBuf,
    logs: PathBuf,
    dry_run_ms: u64,
    /// Worker slots: the live process and how many times the slot was started.
    workers: Vec<(Killed, usize)>,
    daemons: Vec<Killed>,
    spawned: usize,
    reads: usize,
    worker_kills: usize,
    /// Trial-seconds lost to worker kills: the killed trials' time so far.
    lost_s: f64,
}

impl Cluster {
    fn new(db: &Path, logs: &Path, workers: usize, dry_run_ms: u64) -> Self {
        let mut c = Self {
            db: db.to_path_buf(),
            logs: logs.to_path_buf(),
            dry_run_ms,
            workers: Vec::new(),
            daemons: Vec::new(),
            spawned: 0,
            reads: 0,
            worker_kills: 0,
            lost_s: 0.0,
        };
        for i in 0..workers {
            let w = c.worker(i, 0);
            c.workers.push((w, 0));
        }
        c
    }

    fn dbs(&self) -> &str {
        self.db.to_str().unwrap()
    }

    fn spawn(&mut self, args: &[&str], log: &str) -> Killed {
        self.spawned += 1;
        spawn_logged(args, &self.logs.join(log))
    }

    fn worker(&mut self, slot: usize, generation: usize) -> Killed {
        let name = format!("w{slot}.{generation}");
        let (db, ms) = (self.dbs().to_string(), self.dry_run_ms.to_string());
        self.spawn(
            &[
                "worker",
                "--db",
                &db,
                "--name",
                &name,
                "--lease",
                LEASE,
                "--dry-run-ms",
                &ms,
            ],
            &format!("{name}.log"),
        )
    }

    /// Starts a daemon (active, or a standby when one is active).
    fn daemon(&mut self) {
        let n = self.spawned;
        let db = self.dbs().to_string();
        let d = self.spawn(
            &["serve", "--db", &db, "--lease", LEASE],
            &format!("serve{n}.log"),
        );
        self.daemons.push(d);
    }

    fn submit(&self, s: &Study) {
        let o = run(&["submit", s.budget().to_str().unwrap(), "--db", self.dbs()]);
        assert!(o.status.success(), "{}", text(&o));
    }

    fn store(&self) -> TrialStore {
        TrialStore::open(&self.db).unwrap()
    }

    fn rows(&self) -> Vec<StudyRow> {
        self.store().studies().unwrap()
    }

    fn state(&self, name: &str) -> Option<StudyState> {
        self.rows()
            .into_iter()
            .find(|r| r.name == name)
            .and_then(|r| r.state)
    }

    /// `studies` and `trials` as a person would run them meanwhile: they must succeed.
    fn read(&mut self) {
        let o = run(&["studies", "--db", self.dbs(), "--json"]);
        assert!(o.status.success(), "studies: {}", text(&o));
        for r in self.rows() {
            let o = run(&["trials", "--db", self.dbs(), "--study", &r.name, "--json"]);
            assert!(o.status.success(), "trials: {}", text(&o));
            self.reads += 1;
        }
        self.reads += 1;
    }

    /// SIGKILLs worker `slot` and starts it again, counting the time its trial had run.
    fn kill_worker(&mut self, slot: usize) {
        let generation = self.workers[slot].1;
        let name = format!("w{slot}.{generation}");
        let _ = self.workers[slot].0.0.kill();
        let _ = self.workers[slot].0.0.wait();
        let t = now();
        let store = self.store();
        for r in store.studies().unwrap() {
            for tr in store.trials(r.id).unwrap() {
                if tr.state == TrialState::Running && tr.worker.as_deref() == Some(name.as_str()) {
                    self.lost_s += t - tr.started_at.unwrap_or(t);
                }
            }
        }
        self.worker_kills += 1;
        let w = self.worker(slot, generation + 1);
        self.workers[slot] = (w, generation + 1);
    }

    /// The daemon that holds the store's lease now, by its pid in the lease's holder.
    fn active_daemon(&self) -> Option<usize> {
        let l = self.store().leases(DAEMON_SCOPE).unwrap().pop()?;
        if !l.live_at(now()) {
            return None;
        }
        self.daemons
            .iter()
            .position(|d| l.holder.ends_with(&format!("(pid {})", d.0.id())))
    }

    /// SIGKILLs the active daemon; returns when it died (Unix seconds).
    fn kill_active_daemon(&mut self) -> f64 {
        let i = self.active_daemon().expect("a daemon is active");
        let mut d = self.daemons.remove(i);
        let _ = d.0.kill();
        let _ = d.0.wait();
        now()
    }

    /// SIGKILLs the active daemon, waits for a standby to take over and starts a new
    /// standby; returns the seconds from the death to the takeover.
    fn takeover(&mut self, kill_every: Option<Duration>) -> f64 {
        let before = self.store().leases(DAEMON_SCOPE).unwrap().len();
        let died = self.kill_active_daemon();
        self.wait("the standby to take over", kill_every, |c| {
            c.store().leases(DAEMON_SCOPE).unwrap().len() > before
        });
        let taken = self.store().leases(DAEMON_SCOPE).unwrap().pop().unwrap();
        self.daemon();
        taken.acquired_at - died
    }

    /// Waits until `done` holds, reading meanwhile and, with `kill_every`, SIGKILLing a
    /// worker that often (in turn).
    fn wait(
        &mut self,
        what: &str,
        kill_every: Option<Duration>,
        mut done: impl FnMut(&Self) -> bool,
    ) {
        let t0 = Instant::now();
        let mut last_kill = Instant::now();
        let mut last_read: Option<Instant> = None;
        while !done(self) {
            for (i, d) in self.daemons.iter_mut().enumerate() {
                if let Some(st) = d.0.try_wait().unwrap() {
                    let log = std::fs::read_dir(&self.logs)
                        .unwrap()
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("serve"))
                        .map(|e| {
                            format!(
                                "{}:\n{}",
                                e.path().display(),
                                std::fs::read_to_string(e.path()).unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    panic!("daemon {i} exited ({st}) while waiting for {what}\n{log}");
                }
            }
            if last_read.is_none_or(|r| r.elapsed() >= READ_EVERY) {
                self.read();
                last_read = Some(Instant::now());
            }
            if kill_every.is_some_and(|e| last_kill.elapsed() >= e) {
                let slot = self.worker_kills % self.workers.len();
                self.kill_worker(slot);
                last_kill = Instant::now();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(600),
                "timed out waiting for {what}; logs in {}",
                self.logs.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn finished_trials(&self) -> usize {
        let store = self.store();
        store
            .studies()
            .unwrap()
            .iter()
            .map(|r| {
                store
                    .trials(r.id)
                    .unwrap()
                    .iter()
                    .filter(|t| t.finished_at.is_some())
                    .count()
            })
            .sum()
    }

    /// SIGTERM to every process; the daemons and workers exit 0.
    fn stop(&mut self) {
        for k in self
            .daemons
            .iter_mut()
            .chain(self.workers.iter_mut().map(|w| &mut w.0))
        {
            k.terminate();
        }
        for k in self
            .daemons
            .iter_mut()
            .chain(self.workers.iter_mut().map(|w| &mut w.0))
        {
            let st = k.0.wait().unwrap();
            assert!(st.success(), "exit {st}; logs in {}", self.logs.display());
        }
    }
}

/// Every study ended by its budget with exactly `max_trials` distinct, finished configs.
fn assert_studies_complete(c: &Cluster, studies: &[(&str, usize)]) {
    let store = c.store();
    for (name, max) in studies {
        let row = c.rows().into_iter().find(|r| r.name == *name).unwrap();
        assert_eq!(row.state, Some(StudyState::Finished), "{name}: {row:?}");
        assert_eq!(
            row.stop_reason.as_deref(),
            Some("budget"),
            "{name}: {row:?}"
        );
        let trials = store.trials(row.id).unwrap();
        assert_eq!(trials.len(), *max, "{name}: exactly max_trials");
        assert!(
            trials
                .iter()
                .all(|t| matches!(t.state, TrialState::Complete | TrialState::EarlyStopped)),
            "{name}: every trial ran to its end: {:?}",
            trials.iter().map(|t| t.state).collect::<Vec<_>>()
        );
        let configs: HashSet<&str> = trials.iter().map(|t| t.config.as_str()).collect();
        assert_eq!(configs.len(), *max, "{name}: no config evaluated twice");
    }
}

/// No two holders of a scope overlap: each holding ends (released, or expired unrenewed)
/// before the next begins.
fn assert_one_holder_at_a_time(history: &[Lease]) {
    for w in history.windows(2) {
        let end = w[0]
            .released_at
            .unwrap_or(w[0].expires_at)
            .min(w[0].expires_at);
        assert!(
            end <= w[1].acquired_at,
            "{} held {} until {end} but {} took it at {}",
            w[0].holder,
            w[0].scope,
            w[1].holder,
            w[1].acquired_at
        );
    }
}

fn assert_leases_exclusive(c: &Cluster) {
    let store = c.store();
    assert_one_holder_at_a_time(&store.leases(DAEMON_SCOPE).unwrap());
    for r in store.studies().unwrap() {
        assert_one_holder_at_a_time(&store.leases(&study_scope(r.id)).unwrap());
    }
}

fn on_store(s: Study, pg: bool, test: &str) -> Option<Study> {
    if pg { on_postgres(s, test) } else { Some(s) }
}

/// The store all the studies share: the first study's (SQLite file or PostgreSQL
/// database); the others' budgets are submitted to it.
fn shared_db(first: &Study) -> PathBuf {
    let db = first.db();
    if !is_postgres(&db) {
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    }
    db
}

fn crash_and_resume(pg: bool) {
    let test = "a_crashed_daemon_resumes_every_strategy_to_its_budget";
    let Some(first) = on_store(chaos_study("random", "random", 40, 0), pg, test) else {
        return;
    };
    let studies = [
        first,
        chaos_study("evolution", "evolution", 40, 0),
        chaos_study("bayes", "bayes", 40, 0),
    ];
    let db = shared_db(&studies[0]);
    let mut c = Cluster::new(&db, &studies[0].path(""), 4, 100);
    c.daemon();
    for s in &studies {
        c.submit(s);
    }
    c.wait("30 finished trials", None, |c| c.finished_trials() >= 30);
    c.kill_active_daemon();
    // `studies` tells that the running studies have lost their controller.
    c.wait("studies to show the lost controller", None, |c| {
        let o = run(&["studies", "--db", c.dbs(), "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        list.as_array().unwrap().iter().any(|s| {
            s["state"] == "running"
                && s["controller"]["alive"] == false
                && s["controller_status"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("lost "))
        })
    });
    c.daemon();
    c.wait("60 finished trials", None, |c| c.finished_trials() >= 60);
    // SIGTERM: the daemon exits 0 at once, its studies interrupted; workers go on.
    let mut d = c.daemons.pop().unwrap();
    d.terminate();
    let t0 = Instant::now();
    let st = d.0.wait().unwrap();
    assert!(st.success(), "daemon exit {st}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        t0.elapsed()
    );
    for name in ["random", "evolution", "bayes"] {
        if c.finished_trials() < 120 {
            let state = c.state(name);
            assert!(
                matches!(state, Some(StudyState::Interrupted | StudyState::Finished)),
                "{name} after SIGTERM: {state:?}"
            );
        }
    }
    c.daemon();
    c.wait("every study to finish", None, |c| {
        ["random", "evolution", "bayes"]
            .iter()
            .all(|n| c.state(n) == Some(StudyState::Finished))
    });
    assert_studies_complete(&c, &[("random", 40), ("evolution", 40), ("bayes", 40)]);
    assert_leases_exclusive(&c);
    c.stop();
}

#[test]
fn a_crashed_daemon_resumes_every_strategy_to_its_budget() {
    crash_and_resume(false);
}

#[test]
fn on_postgres_a_crashed_daemon_resumes_every_strategy_to_its_budget() {
    crash_and_resume(true);
}

fn soak(pg: bool) {
    let test = "chaos_soak";
    let per_study = env_or("RANKPRUNE_SOAK_TRIALS", 100) as usize;
    let ms = env_or("RANKPRUNE_SOAK_MS", 100);
    let Some(first) = on_store(chaos_study("random", "random", per_study, 0), pg, test) else {
        return;
    };
    let studies = [
        first,
        chaos_study("evolution", "evolution", per_study, 0),
        chaos_study("bayes", "bayes", per_study, 30),
    ];
    let db = shared_db(&studies[0]);
    let t_start = Instant::now();
    let mut c = Cluster::new(&db, &studies[0].path(""), 4, ms);
    c.daemon();
    c.wait("the first daemon to be active", None, |c| {
        c.active_daemon().is_some()
    });
    c.daemon(); // a standby
    for s in &studies {
        c.submit(s);
    }
    let kill_every = Some(Duration::from_millis(500));
    // The active daemon dies mid-search, then again in bayes's final stage; each time
    // the standby takes over and a new standby starts.
    c.wait("a third of the trials", kill_every, |c| {
        c.finished_trials() >= per_study
    });
    let mut takeovers = vec![c.takeover(kill_every)];
    c.wait("bayes's final stage", kill_every, |c| {
        c.state("bayes") == Some(StudyState::FinalStage)
    });
    takeovers.push(c.takeover(kill_every));
    let names = ["random", "evolution", "bayes"];
    c.wait("20 worker kills", kill_every, |c| c.worker_kills >= 20);
    c.wait("every study to finish", None, |c| {
        names
            .iter()
            .all(|n| c.state(n) == Some(StudyState::Finished))
    });
    let wall = t_start.elapsed().as_secs_f64();
    assert!(c.worker_kills >= 20);
    let lease: f64 = LEASE.parse().unwrap();
    for t in &takeovers {
        assert!(
            *t <= 3.0 * lease,
            "a standby took over {t:.2} s after the active daemon died (lease {lease} s)"
        );
    }
    assert_studies_complete(&c, &names.map(|n| (n, per_study)));
    let store = c.store();
    let bayes = c.rows().into_iter().find(|r| r.name == "bayes").unwrap();
    let finals = store
        .trials(bayes.id)
        .unwrap()
        .iter()
        .filter(|t| store.final_result(t.id).unwrap().is_some())
        .count();
    assert_eq!(
        finals, 1,
        "the final stage killed midway was run to its end"
    );
    assert_leases_exclusive(&c);
    let row = format!(
        "| {} | {} | {} | {} | 2 | {} | {:.2} | {:.1} | {} | {:.0} |",
        if pg { "PostgreSQL" } else { "SQLite" },
        3 * per_study,
        ms,
        c.worker_kills,
        takeovers
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        takeovers.iter().cloned().fold(0.0, f64::max) / lease,
        c.lost_s,
        c.reads,
        wall
    );
    println!("{row}");
    if let Ok(out) = std::env::var("RANKPRUNE_SOAK_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .unwrap();
        writeln!(f, "{row}").unwrap();
    }
    c.stop();
}

#[test]
fn chaos_soak() {
    soak(false);
}

#[test]
fn on_postgres_chaos_soak() {
    soak(true);
}

/// Two `search` commands on one budget: the second is refused, naming the first.
#[test]
fn a_second_controller_of_a_study_is_refused() {
    let s = study(200, crate::search::SLOW_PROXY, "[final]\ntop_k = 0");
    let mut first = Killed(crate::search::spawn(&s.budget()));
    let t0 = Instant::now();
    loop {
        let held = s.db().exists()
            && TrialStore::open(&s.db())
                .and_then(|st| st.leases(&study_scope(1)))
                .is_ok_and(|l| l.last().is_some_and(|l| l.live_at(now())));
        if held {
            break;
        }
        assert!(
            first.0.try_wait().unwrap().is_none(),
            "the first search exited"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "no lease taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = std::fs::read(s.budget()).unwrap();
    let o = run(&["search", s.budget().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("study tiny is run by search on")
            && err.contains(&format!("(pid {})", first.0.id())),
        "{err}"
    );
    assert_eq!(std::fs::read(s.budget()).unwrap(), before);
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first search goes on"
    );
}

/// A worker whose trial does not look at its stop flag for a long time (a dry-run trial
/// asleep for 40 s, as a training step inside a slow device call would be) hands the
/// trial back and exits 0 within the grace period after SIGTERM, not when the trial
/// would have ended; the trial is queued again.
#[test]
fn a_signalled_worker_stuck_in_a_long_step_hands_its_trial_back() {
    let s = chaos_study("stuck", "random", 2, 0);
    let db = shared_db(&s);
    let mut c = Cluster::new(&db, &s.path(""), 1, 120_000);
    c.daemon();
    c.submit(&s);
    let running = |c: &Cluster| {
        let store = c.store();
        let rows = store.studies().unwrap();
        rows.iter()
            .flat_map(|r| store.trials(r.id).unwrap())
            .filter(|t| t.state == TrialState::Running)
            .count()
    };
    c.wait("the worker to claim a trial", None, |c| running(c) == 1);
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    c.workers[0].0.terminate();
    let st = c.workers[0].0.0.wait().unwrap();
    let took = t0.elapsed();
    assert!(st.success(), "worker exit {st}");
    assert!(
        took < Duration::from_secs(25),
        "SIGTERM took {took:?}: the trial was waited for"
    );
    assert_eq!(running(&c), 0, "the trial was handed back");
    let log = std::fs::read_to_string(s.path("w0.0.log")).unwrap();
    assert!(log.contains("handed back, exiting"), "{log}");
}
