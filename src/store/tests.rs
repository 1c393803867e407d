use super::*;

const COST: CandidateCost = CandidateCost {
    flops: 10,
    params: 20,
    size_bytes: 30,
    latency_us: Some(40),
};

/// Runs `test` on a fresh store of each kind: a SQLite file, and a PostgreSQL database
/// when RANKPRUNE_TEST_POSTGRES holds a server URL (CI starts one); `test` gets the
/// store's location, to open (and reopen) it.
fn each_store(test: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    test(&dir.path().join("study.sqlite"));
    match std::env::var("RANKPRUNE_TEST_POSTGRES") {
        Ok(server) => {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!(
                "rp_unit_{}_{n}_{}",
                std::process::id(),
                now() as u64 % 100_000
            );
            test(Path::new(&create_database(&server, &name).unwrap()));
        }
        Err(_) => println!("skipping the PostgreSQL store: RANKPRUNE_TEST_POSTGRES is not set"),
    }
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("study.sqlite")).unwrap()
}

#[test]
fn schema_is_created_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.schema_version().unwrap(), schema::VERSION);
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(store);
    // Reopening migrates nothing and keeps the version.
    assert_eq!(open(&dir).schema_version().unwrap(), schema::VERSION);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .conn
        .pragma_update(None, "user_version", schema::VERSION + 1)
        .unwrap();
    drop(store);
    let e = TrialStore::open(&dir.path().join("study.sqlite"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("newer than this rankprune understands"), "{e}");
}

#[test]
fn trial_lifecycle_and_guarded_transitions() {
    each_store(lifecycle);
}

fn lifecycle(at: &Path) {
    let mut s = TrialStore::open(at).unwrap();
    let study = s.study("s", "budget").unwrap();
    assert_eq!(s.study("s", "ignored").unwrap(), study);
    let a = s.enqueue(study, "{\"a\":1}", COST).unwrap();
    let b = s.enqueue(study, "{\"b\":2}", COST).unwrap();
    assert!(s.has_config(study, "{\"a\":1}").unwrap());
    assert!(!s.has_config(study, "{\"c\":3}").unwrap());

    let t = s.claim(study, "cpu-0").unwrap().unwrap();
    assert_eq!((t.id, t.number, t.state), (a, 0, TrialState::Running));
    assert_eq!(t.worker.as_deref(), Some("cpu-0"));
    assert_eq!(
        t.cost, COST,
        "the costs, predicted latency included, read back"
    );
    s.report(a, 10, 0.5).unwrap();
    s.report(a, 20, 0.6).unwrap();
    assert_eq!(s.reports(a).unwrap(), vec![(10, 0.5), (20, 0.6)]);
    s.complete(a, 0.61, 1.2).unwrap();
    let e = s.complete(a, 0.7, 1.0).unwrap_err().to_string();
    assert!(e.contains("cannot go from complete to complete"), "{e}");
    // A queued trial cannot fail before it runs.
    assert!(s.fail(b, "x").is_err());
    let t = s.claim(study, "cpu-1").unwrap().unwrap();
    assert_eq!(t.id, b);
    s.fail(b, "non-finite loss").unwrap();
    assert!(s.claim(study, "cpu-0").unwrap().is_none());
    let all = s.trials(study).unwrap();
    assert_eq!(all[0].proxy_acc, Some(0.61));
    assert_eq!(all[1].error.as_deref(), Some("non-finite loss"));
    assert_eq!(all[1].state, TrialState::Failed);
    // A failed config may be proposed again.
    assert!(!s.has_config(study, "{\"b\":2}").unwrap());
    assert!(
        s.complete(999, 0.1, 0.1)
            .unwrap_err()
            .to_string()
            .contains("no such trial")
    );
}

#[test]
fn restart_requeues_unfinished_and_keeps_completed() {
    each_store(restart);
}

fn restart(at: &Path) {
    let (study, done, running, interrupted);
    {
        let mut s = TrialStore::open(at).unwrap();
        study = s.study("s", "b").unwrap();
        done = s.enqueue(study, "1", COST).unwrap();
        running = s.enqueue(study, "2", COST).unwrap();
        interrupted = s.enqueue(study, "3", COST).unwrap();
        s.claim(study, "w").unwrap();
        s.complete(done, 0.9, 0.3).unwrap();
        s.claim(study, "w").unwrap();
        s.report(running, 5, 0.4).unwrap();
        s.claim(study, "w").unwrap();
        s.interrupt(interrupted).unwrap();
        // The process dies here with `running` still running.
    }
    let mut s = TrialStore::open(at).unwrap();
    assert_eq!(s.requeue_unfinished(study, false).unwrap(), 2);
    let all = s.trials(study).unwrap();
    assert_eq!(
        all.iter().map(|t| t.state).collect::<Vec<_>>(),
        vec![TrialState::Complete, TrialState::Queued, TrialState::Queued]
    );
    assert!(s.reports(running).unwrap().is_empty());
    assert_eq!(s.claim(study, "w").unwrap().unwrap().id, running);
    assert_eq!(all[0].proxy_acc, Some(0.9));
}

/// A failure between the statements of one state change leaves nothing of it: a trigger
/// makes the second statement fail (as a crash or a full disk would), and the first
/// statement's effect is rolled back with it.
#[test]
fn a_change_that_fails_half_way_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir);
    let study = s.study("s", "b").unwrap();
    let id = s.enqueue(study, "1", COST).unwrap();
    s.claim(study, "w").unwrap().unwrap();
    s.report(id, 10, 0.5).unwrap();
    s.interrupt(id).unwrap();
    // requeue_unfinished deletes the trial's reports, then updates its state.
    s.conn
        .execute_batch(
            "CREATE TRIGGER fail_update BEFORE UPDATE ON trials \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let e = s.requeue_unfinished(study, false).unwrap_err().to_string();
    assert!(e.contains("injected failure"), "{e}");
    assert_eq!(
        s.reports(id).unwrap(),
        vec![(10, 0.5)],
        "the delete was rolled back"
    );
    assert_eq!(s.trial(id).unwrap().state, TrialState::Interrupted);
    s.conn.execute_batch("DROP TRIGGER fail_update;").unwrap();
    assert_eq!(s.requeue_unfinished(study, false).unwrap(), 1);
    assert!(s.reports(id).unwrap().is_empty());

    // record_rung_fidelity deletes the study's rows, then inserts the new ones.
    let row = |step, tau| RungFidelity {
        step,
        n: 3,
        kendall_tau: Some(tau),
    };
    s.record_rung_fidelity(study, &[row(0, 0.5)]).unwrap();
    s.conn
        .execute_batch(
            "CREATE TRIGGER fail_insert BEFORE INSERT ON rung_fidelity WHEN NEW.step = 7 \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    assert!(
        s.record_rung_fidelity(study, &[row(1, 0.1), row(7, 0.2)])
            .is_err()
    );
    assert_eq!(s.rung_fidelity(study).unwrap(), vec![row(0, 0.5)]);
}

#[test]
fn readers_see_the_writers_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = open(&dir);
    let reader = open(&dir);
    let study = writer.study("s", "b").unwrap();
    writer.enqueue(study, "1", COST).unwrap();
    assert_eq!(reader.trials(study).unwrap().len(), 1);
}

#[test]
fn concurrent_first_opens_migrate_once() {
    // A search and a reader opening a new file at the same instant both succeed.
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || TrialStore::open(&path).map(|s| s.schema_version()))
            })
            .collect();
        for h in handles {
            let v = h.join().unwrap().expect("open").expect("version");
            assert_eq!(v, schema::VERSION);
        }
    }
}

#[test]
fn a_v1_store_gains_the_validation_column_and_keeps_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO studies VALUES (1, 's', 'b', 0);
             INSERT INTO trials (id, study_id, number, state, config, flops, params,
                 size_bytes, queued_at) VALUES (1, 1, 0, 'complete', '{}', 1, 2, 3, 0);
             INSERT INTO final_results VALUES (1, 0.5, 0.9, 1.2, 4, NULL, 0);",
        )
        .unwrap();
    }
    let mut store = TrialStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), schema::VERSION);
    let f = store.final_result(1).unwrap().unwrap();
    assert_eq!(
        (f.val_top1, f.top1, f.epochs, f.reason.clone()),
        (None, 0.5, 4, None)
    );
    let newer = FinalResult {
        val_top1: Some(0.7),
        reason: Some("warm_start".into()),
        ..f
    };
    store.record_final(1, &newer).unwrap();
    assert_eq!(store.final_result(1).unwrap(), Some(newer));
}

/// A v3 store's early-stopped trials (stored as `pruned`) read as `EarlyStopped` after
/// the v4 migration, with their reports and final results still attached, and foreign
/// keys enforced afterwards.
#[test]
fn a_v3_store_renames_pruned_trials_and_keeps_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO studies (id, name, budget, created_at) VALUES (1, 's', 'b', 0);
             INSERT INTO trials (id, study_id, number, state, config, flops, params,
                 size_bytes, proxy_acc, queued_at) VALUES
                 (1, 1, 0, 'pruned', '{}', 1, 2, 3, 0.25, 0),
                 (2, 1, 1, 'complete', '{}', 1, 2, 3, 0.75, 0);
             INSERT INTO reports VALUES (1, 30, 0.25);
             INSERT INTO final_results (trial_id, top1, top5, loss, epochs, finished_at)
                 VALUES (1, 0.5, 0.9, 1.2, 4, 0);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), schema::VERSION);
    let trials = store.trials(1).unwrap();
    let states: Vec<_> = trials.iter().map(|t| (t.number, t.state)).collect();
    assert_eq!(
        states,
        vec![(0, TrialState::EarlyStopped), (1, TrialState::Complete)]
    );
    assert_eq!(trials[0].proxy_acc, Some(0.25));
    assert!(store.final_result(1).unwrap().is_some());
    let orphan = store
        .conn
        .execute("INSERT INTO reports VALUES (99, 0, 0.5)", []);
    assert!(orphan.is_err(), "foreign keys are enforced after migrating");
}

#[test]
fn rung_fidelity_is_stored_per_study_and_replaced_whole() {
    each_store(rung_fidelity);
}

fn rung_fidelity(at: &Path) {
    let mut store = TrialStore::open(at).unwrap();
    let (a, b) = (
        store.study("a", "x").unwrap(),
        store.study("b", "y").unwrap(),
    );
    let row = |step, n, tau| RungFidelity {
        step,
        n,
        kendall_tau: tau,
    };
    store
        .record_rung_fidelity(a, &[row(0, 3, Some(0.5)), row(200, 3, None)])
        .unwrap();
    store
        .record_rung_fidelity(b, &[row(50, 2, Some(-1.0))])
        .unwrap();
    assert_eq!(
        store.rung_fidelity(a).unwrap(),
        vec![row(0, 3, Some(0.5)), row(200, 3, None)]
    );
    store
        .record_rung_fidelity(a, &[row(0, 4, Some(0.25))])
        .unwrap();
    assert_eq!(store.rung_fidelity(a).unwrap(), vec![row(0, 4, Some(0.25))]);
    assert_eq!(
        store.rung_fidelity(b).unwrap(),
        vec![row(50, 2, Some(-1.0))]
    );
}

#[test]
fn a_read_only_store_reads_what_a_writer_commits_and_refuses_writes() {
    each_store(read_only);
}

fn read_only(path: &Path) {
    let mut writer = TrialStore::open(path).unwrap();
    let study = writer.study("s", "budget").unwrap();
    writer
        .set_study_state(study, StudyState::Running, None)
        .unwrap();
    let mut reader = TrialStore::open_read_only(path).unwrap();
    assert_eq!(
        reader.studies().unwrap()[0].state,
        Some(StudyState::Running)
    );
    writer.enqueue(study, "{}", COST).unwrap();
    writer
        .set_study_state(study, StudyState::Finished, Some("budget"))
        .unwrap();
    assert_eq!(reader.trials(study).unwrap().len(), 1);
    let row = &reader.studies().unwrap()[0];
    assert_eq!(row.state, Some(StudyState::Finished));
    assert_eq!(row.stop_reason.as_deref(), Some("budget"));
    let e = reader.enqueue(study, "{\"x\":1}", COST).err().unwrap();
    assert!(e.to_string().contains("read"), "{e}");
    assert_eq!(writer.trials(study).unwrap().len(), 1);
}

#[test]
fn a_read_only_open_refuses_an_older_schema_and_names_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.conn.pragma_update(None, "user_version", 4).unwrap();
    drop(store);
    let path = dir.path().join("study.sqlite");
    let e = TrialStore::open_read_only(&path).err().unwrap().to_string();
    assert!(e.contains("rankprune trials --db"), "{e}");
    // Nothing was migrated.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 4);
}

#[test]
fn concurrent_claimers_take_every_trial_exactly_once() {
    each_store(concurrent_claims);
}

/// Four connections claim 40 trials at once (as worker processes would): each trial is
/// claimed once, none is lost, and no claim fails.
fn concurrent_claims(at: &Path) {
    let mut s = TrialStore::open(at).unwrap();
    let study = s.study("s", "b").unwrap();
    for i in 0..40 {
        s.enqueue(study, &i.to_string(), COST).unwrap();
    }
    let claimed: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                scope.spawn(move || {
                    let mut s = TrialStore::open(at).unwrap();
                    let mut mine = Vec::new();
                    while let Some(t) = s.claim(study, &format!("w{w}")).unwrap() {
                        assert_eq!(t.worker.as_deref(), Some(format!("w{w}").as_str()));
                        mine.push(t.id);
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<i64> = claimed.concat();
    all.sort();
    let mut expected: Vec<i64> = s.trials(study).unwrap().iter().map(|t| t.id).collect();
    expected.sort();
    assert_eq!(all, expected);
    assert!(
        s.trials(study)
            .unwrap()
            .iter()
            .all(|t| t.state == TrialState::Running)
    );
}

#[test]
fn leases_expire_back_to_the_queue_and_heartbeats_keep_them() {
    each_store(leases);
}

fn leases(at: &Path) {
    let mut s = TrialStore::open(at).unwrap();
    let idle = s.study("idle", "b").unwrap();
    let live = s.study("live", "b").unwrap();
    s.enqueue(idle, "0", COST).unwrap();
    let a = s.enqueue(live, "1", COST).unwrap();
    let b = s.enqueue(live, "2", COST).unwrap();
    // Only running studies hand out trials to worker processes.
    assert!(s.claim_any("w", 60.0).unwrap().is_none());
    s.set_study_state(live, StudyState::Running, None).unwrap();
    let t = s.claim_any("w1", 0.2).unwrap().unwrap();
    assert_eq!((t.id, t.worker.as_deref()), (a, Some("w1")));
    s.report(a, 5, 0.5).unwrap();
    let u = s.claim_any("w2", 60.0).unwrap().unwrap();
    assert_eq!(u.id, b);
    assert!(s.heartbeat(a, "w1", 0.2).unwrap());
    assert!(
        !s.heartbeat(a, "w2", 0.2).unwrap(),
        "only the holder renews"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    // a's lease ran out; b's did not.
    assert_eq!(s.requeue_expired(live).unwrap(), 1);
    assert!(
        !s.heartbeat(a, "w1", 60.0).unwrap(),
        "a lost lease stays lost"
    );
    assert!(s.reports(a).unwrap().is_empty());
    let again = s.claim_any("w3", 60.0).unwrap().unwrap();
    assert_eq!((again.id, again.worker.as_deref()), (a, Some("w3")));
    s.hand_back(b).unwrap();
    assert_eq!(s.trial(b).unwrap().state, TrialState::Queued);
    // The controller's own claims carry no lease and never expire.
    let own = s.claim(live, "cpu0").unwrap().unwrap();
    assert_eq!(own.id, b);
    assert_eq!(s.requeue_expired(live).unwrap(), 0);
    assert!(!s.heartbeat(b, "cpu0", 1.0).unwrap());
}

#[test]
fn running_studies_share_the_workers() {
    each_store(sharing);
}

fn sharing(at: &Path) {
    let mut s = TrialStore::open(at).unwrap();
    let first = s.study("first", "b").unwrap();
    let second = s.study("second", "b").unwrap();
    let f: Vec<i64> = (0..3)
        .map(|i| s.enqueue(first, &i.to_string(), COST).unwrap())
        .collect();
    let g: Vec<i64> = (0..2)
        .map(|i| s.enqueue(second, &i.to_string(), COST).unwrap())
        .collect();
    for id in [first, second] {
        s.set_study_state(id, StudyState::Running, None).unwrap();
    }
    let mut take = |w: &str| s.claim_any(w, 60.0).unwrap().unwrap().id;
    // One running trial each before either study gets a second; ties go to the older.
    assert_eq!(take("w1"), f[0]);
    assert_eq!(take("w2"), g[0]);
    assert_eq!(take("w3"), f[1]);
    assert_eq!(take("w4"), g[1]);
    assert_eq!(take("w5"), f[2]);
}

#[test]
fn submissions_stops_identities_and_verdicts_round_trip() {
    each_store(daemon_columns);
}

fn daemon_columns(at: &Path) {
    let mut s = TrialStore::open(at).unwrap();
    let id = s.study("d", "b").unwrap();
    let row = |s: &TrialStore| {
        s.studies()
            .unwrap()
            .into_iter()
            .find(|r| r.id == id)
            .unwrap()
    };
    assert_eq!(row(&s).submitted_at, None);
    s.submit(id).unwrap();
    let r = row(&s);
    assert!(r.submitted_at.is_some() && r.stop_requested_at.is_none());
    assert_eq!(r.state, Some(StudyState::Submitted));
    s.set_identity(id, "{\"files\":{}}").unwrap();
    assert_eq!(row(&s).identity.as_deref(), Some("{\"files\":{}}"));
    // Verdicts: a running trial's report waits for one until the controller gives it.
    s.set_study_state(id, StudyState::Running, None).unwrap();
    let a = s.enqueue(id, "1", COST).unwrap();
    s.enqueue(id, "2", COST).unwrap();
    s.enqueue(id, "3", COST).unwrap();
    assert_eq!(s.claim_any("w", 60.0).unwrap().unwrap().id, a);
    s.report(a, 10, 0.25).unwrap();
    s.report(a, 20, 0.5).unwrap();
    assert_eq!(s.verdict(a, 10).unwrap(), None);
    assert_eq!(
        s.pending_verdicts(id).unwrap(),
        vec![(a, 10, 0.25), (a, 20, 0.5)]
    );
    s.set_verdict(a, 10, false).unwrap();
    s.set_verdict(a, 20, true).unwrap();
    assert_eq!(s.verdict(a, 10).unwrap(), Some(false));
    assert_eq!(s.verdict(a, 20).unwrap(), Some(true));
    assert_eq!(s.verdict(a, 30).unwrap(), None, "no such report");
    assert!(s.pending_verdicts(id).unwrap().is_empty());
    // A stop request; the queued trials are withdrawn, the running one stays.
    s.request_stop(id).unwrap();
    assert!(row(&s).stop_requested_at.is_some());
    assert_eq!(s.withdraw_queued(id).unwrap(), 2);
    let left = s.trials(id).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, TrialState::Running);
    // A new submission clears the stop.
    s.submit(id).unwrap();
    assert!(row(&s).stop_requested_at.is_none());
}

/// A controller enqueueing while worker processes claim, report and complete at full
/// speed on other connections: no write ever fails with "database is locked" (on SQLite
/// a transaction that reads before it writes must take the write lock first).
#[test]
fn enqueues_beside_busy_workers_never_fail() {
    each_store(busy_writers);
}

fn busy_writers(at: &Path) {
    let mut s = TrialStore::open(at).unwrap();
    let id = s.study("busy", "b").unwrap();
    s.set_study_state(id, StudyState::Running, None).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (at, done) = (at.to_path_buf(), done.clone());
            std::thread::spawn(move || {
                let mut s = TrialStore::open(&at).unwrap();
                let name = format!("w{w}");
                let mut ran = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(t) = s.claim_any(&name, 60.0).unwrap() {
                        s.report(t.id, 1, 0.5).unwrap();
                        s.heartbeat(t.id, &name, 60.0).unwrap();
                        s.complete(t.id, 0.5, 1.0).unwrap();
                        ran += 1;
                    }
                }
                ran
            })
        })
        .collect();
    for i in 0..300 {
        s.enqueue(id, &i.to_string(), COST).unwrap();
        s.requeue_expired(id).unwrap();
    }
    // Until every trial is finished, or a worker has stopped (it can only have failed:
    // the join below then reports its error, where waiting would never end).
    while s
        .trials(id)
        .unwrap()
        .iter()
        .any(|t| t.finished_at.is_none())
        && !workers.iter().any(|w| w.is_finished())
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let ran: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(ran, 300);
}

#[test]
fn a_lease_has_one_holder_until_released_or_expired() {
    each_store(controller_leases);
}

fn controller_leases(at: &Path) {
    let mut a = TrialStore::open(at).unwrap();
    let mut b = TrialStore::open(at).unwrap();
    let first = a.acquire_lease(DAEMON_SCOPE, "a", 0.6).unwrap().unwrap();
    // Held: another holder is told who holds it; another scope is free.
    let held = b
        .acquire_lease(DAEMON_SCOPE, "b", 0.6)
        .unwrap()
        .unwrap_err();
    assert_eq!((held.id, held.holder.as_str()), (first.id, "a"));
    let other = b.acquire_lease(&study_scope(1), "b", 5.0).unwrap().unwrap();
    // Renewals keep it past its first expiry.
    for _ in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(a.renew_lease(first.id, 0.6).unwrap());
    }
    assert!(b.acquire_lease(DAEMON_SCOPE, "b", 0.6).unwrap().is_err());
    // Expired: b takes it over, and a's renewal fails from then on.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let second = b.acquire_lease(DAEMON_SCOPE, "b", 5.0).unwrap().unwrap();
    assert!(!a.renew_lease(first.id, 0.6).unwrap());
    assert!(b.renew_lease(second.id, 5.0).unwrap());
    // Released: free at once.
    b.release_lease(second.id).unwrap();
    assert!(!b.renew_lease(second.id, 5.0).unwrap());
    let third = a.acquire_lease(DAEMON_SCOPE, "a", 5.0).unwrap().unwrap();
    // The history: three holdings, none overlapping the next.
    let h = a.leases(DAEMON_SCOPE).unwrap();
    assert_eq!(
        h.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![first.id, second.id, third.id]
    );
    for w in h.windows(2) {
        let end = w[0].released_at.unwrap_or(w[0].expires_at);
        assert!(end <= w[1].acquired_at, "{w:?}");
    }
    assert_eq!(b.leases(&study_scope(1)).unwrap(), vec![other]);
}

/// Many processes racing for one free lease: exactly one gets it.
#[test]
fn racing_acquirers_get_one_lease() {
    each_store(|at| {
        drop(TrialStore::open(at).unwrap());
        let won: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    s.spawn(move || {
                        let mut st = TrialStore::open(at).unwrap();
                        st.acquire_lease("race", &format!("h{i}"), 30.0)
                            .unwrap()
                            .is_ok() as usize
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 1);
    });
}

#[test]
fn a_restart_beside_live_workers_requeues_only_expired_leases() {
    each_store(|at| {
        let mut s = TrialStore::open(at).unwrap();
        let study = s.study("s", "b").unwrap();
        let (live, dead, local) = (
            s.enqueue(study, "1", COST).unwrap(),
            s.enqueue(study, "2", COST).unwrap(),
            s.enqueue(study, "3", COST).unwrap(),
        );
        s.set_study_state(study, StudyState::Running, None).unwrap();
        s.claim_any("w1", 30.0).unwrap();
        s.claim_any("w2", 0.01).unwrap();
        s.claim(study, "cpu0").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(s.requeue_unfinished(study, true).unwrap(), 2);
        let state = |id| s.trial(id).unwrap().state;
        assert_eq!(state(live), TrialState::Running);
        assert_eq!(state(dead), TrialState::Queued);
        assert_eq!(state(local), TrialState::Queued);
        assert_eq!(s.requeue_unfinished(study, false).unwrap(), 1);
        assert_eq!(s.trial(live).unwrap().state, TrialState::Queued);
    });
}

#[test]
fn a_study_is_looked_up_by_its_id() {
    each_store(|at| {
        let mut s = TrialStore::open(at).unwrap();
        let a = s.study("a", "budget a").unwrap();
        let b = s.study("b", "budget b").unwrap();
        let all = s.studies().unwrap();
        for id in [a, b] {
            assert_eq!(
                s.study_row(id).unwrap().as_ref(),
                all.iter().find(|r| r.id == id)
            );
        }
        assert_eq!(s.study_row(b + 100).unwrap(), None);
    });
}

/// The one definition of the trial endings, in each store's placeholder style.
#[test]
fn endings_are_one_guarded_update_per_dialect() {
    let e = Ending::Complete {
        proxy_acc: 0.5,
        proxy_loss: 1.5,
    };
    let sets = e.sets(7.0);
    assert_eq!(
        e.sql(&sets, |i| format!("?{i}")),
        "UPDATE trials SET state = 'complete', proxy_acc = ?1, proxy_loss = ?2, \
         finished_at = ?3 WHERE id = ?4 AND state = 'running'"
    );
    let f = Ending::Failed { error: "boom" };
    assert_eq!(
        f.sql(&f.sets(7.0), |i| format!("${i}")),
        "UPDATE trials SET state = 'failed', error = $1, finished_at = $2 \
         WHERE id = $3 AND state = 'running'"
    );
    assert_eq!(f.sets(7.0)[0], ("error", Value::Text("boom")));
    assert_eq!(
        Ending::Interrupted.sql(&[], |i| format!("?{i}")),
        "UPDATE trials SET state = 'interrupted' WHERE id = ?1 AND state = 'running'"
    );
    let stopped = Ending::EarlyStopped { proxy_acc: 0.25 };
    assert_eq!(stopped.state(), TrialState::EarlyStopped);
    assert_eq!(
        stopped.sets(3.0),
        vec![
            ("proxy_acc", Value::Real(0.25)),
            ("finished_at", Value::Real(3.0))
        ]
    );
}

#[test]
fn final_runs_controls_and_verdicts_round_trip() {
    each_store(final_runs);
}

fn final_runs(at: &Path) {
    let mut s = TrialStore::open(at).unwrap();
    let id = s.study("f", "b").unwrap();
    let other = s.study("g", "b").unwrap();
    let t = s.enqueue(id, "1", COST).unwrap();
    let run = |subject, seed, bits: &str| FinalRun {
        subject,
        seed,
        val_top1: 0.5,
        top1: 0.25,
        top5: 1.0,
        loss: 0.5,
        epochs: 2,
        weights_path: Some(format!("w{seed}")),
        val_correct: bits.bytes().map(|b| b == b'1').collect(),
        test_correct: vec![true, false, false, false],
    };
    s.record_final_run(id, &run(Subject::Trial(t), 2, "10"))
        .unwrap();
    s.record_final_run(id, &run(Subject::Control, 1, "01"))
        .unwrap();
    s.record_final_run(other, &run(Subject::Control, 1, "11"))
        .unwrap();
    // A run recorded again replaces the first.
    s.record_final_run(id, &run(Subject::Trial(t), 2, "11"))
        .unwrap();
    let got = s.final_runs(id).unwrap();
    assert_eq!(
        got,
        vec![
            run(Subject::Control, 1, "01"),
            run(Subject::Trial(t), 2, "11")
        ]
    );
    assert_eq!(s.final_runs(other).unwrap().len(), 1);
    s.set_study_json(id, StudyJson::Control, "{\"c\":1}")
        .unwrap();
    s.set_study_json(id, StudyJson::Verdict, "{\"v\":2}")
        .unwrap();
    let row = s.study_row(id).unwrap().unwrap();
    assert_eq!(
        (row.control.as_deref(), row.verdict.as_deref()),
        (Some("{\"c\":1}"), Some("{\"v\":2}"))
    );
    assert_eq!(s.study_row(other).unwrap().unwrap().control, None);
    assert_eq!(
        Subject::parse(&Subject::Trial(17).key()),
        Some(Subject::Trial(17))
    );
    assert_eq!(Subject::parse("trial:x"), None);
}
