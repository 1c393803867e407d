//! The SQLite store: one file in WAL mode. Writers serialise on SQLite's lock; readers
//! (`trials`, `export`, the dashboard) wait on a busy timeout and never block a writer.

use super::{
    CandidateCost, Ending, FinalResult, FinalRun, LEASE_COLUMNS, Lease, RUN_COLUMNS, RungFidelity,
    STUDY_COLUMNS, Store, StoreError, StoreResult, StudyJson, StudyRow, StudyState, Subject, Trial,
    TrialState, Value, bits_text, now, schema, text_bits,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

fn sql_err(path: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_string(),
        source,
    }
}

/// A connection to one store file.
pub struct SqliteStore {
    pub(super) conn: Connection,
    path: String,
}

fn parse_state(s: &str) -> rusqlite::Result<TrialState> {
    TrialState::parse(s).ok_or_else(|| {
        rusqlite::Error::InvalidColumnType(0, s.to_string(), rusqlite::types::Type::Text)
    })
}

const TRIAL_COLUMNS: &str = "id, study_id, number, state, config, flops, params, size_bytes, proxy_acc, \
     proxy_loss, worker, error, queued_at, started_at, finished_at, latency_us";

fn trial_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Trial> {
    Ok(Trial {
        id: r.get(0)?,
        study_id: r.get(1)?,
        number: r.get(2)?,
        state: parse_state(&r.get::<_, String>(3)?)?,
        config: r.get(4)?,
        cost: CandidateCost {
            flops: r.get::<_, i64>(5)? as u64,
            params: r.get::<_, i64>(6)? as u64,
            size_bytes: r.get::<_, i64>(7)? as u64,
            latency_us: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
        },
        proxy_acc: r.get(8)?,
        proxy_loss: r.get(9)?,
        worker: r.get(10)?,
        error: r.get(11)?,
        queued_at: r.get(12)?,
        started_at: r.get(13)?,
        finished_at: r.get(14)?,
    })
}

fn study_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StudyRow> {
    Ok(StudyRow {
        id: r.get(0)?,
        name: r.get(1)?,
        budget: r.get(2)?,
        created_at: r.get(3)?,
        target: r.get(4)?,
        state: r
            .get::<_, Option<String>>(5)?
            .and_then(|s| StudyState::parse(&s)),
        stop_reason: r.get(6)?,
        state_at: r.get(7)?,
        budget_dir: r.get(8)?,
        submitted_at: r.get(9)?,
        stop_requested_at: r.get(10)?,
        identity: r.get(11)?,
        control: r.get(12)?,
        verdict: r.get(13)?,
        gate: r.get(14)?,
    })
}

fn run_from_row(r: &rusqlite::Row) -> rusqlite::Result<FinalRun> {
    let subject: String = r.get(0)?;
    Ok(FinalRun {
        subject: Subject::parse(&subject).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("final_runs.subject {subject:?}").into(),
            )
        })?,
        seed: r.get(1)?,
        val_top1: r.get(2)?,
        top1: r.get(3)?,
        top5: r.get(4)?,
        loss: r.get(5)?,
        epochs: r.get::<_, i64>(6)? as usize,
        weights_path: r.get(7)?,
        val_correct: text_bits(&r.get::<_, String>(8)?),
        test_correct: text_bits(&r.get::<_, String>(9)?),
    })
}

impl SqliteStore {
    /// Takes the queued trial that `pick` (a query of one trial id; `?4` is `study`)
    /// chooses, for `worker`, with a lease of `lease_s` seconds if any (queued -> running).
    /// One immediate transaction: the write lock is taken before the choice, so two
    /// processes claiming at once never choose the same trial.
    fn take(
        &mut self,
        pick: &str,
        study: Option<i64>,
        worker: &str,
        lease_s: Option<f64>,
    ) -> StoreResult<Option<Trial>> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.write_tx().map_err(&err)?;
        let t = now();
        let lease_until = lease_s.map(|l| t + l);
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&worker, &t, &lease_until];
        if let Some(study) = &study {
            args.push(study);
        }
        let claimed = tx
            .query_row(
                &format!(
                    "UPDATE trials SET state = 'running', worker = ?1, started_at = ?2, \
                     lease_until = ?3 WHERE id = ({pick}) RETURNING {TRIAL_COLUMNS}"
                ),
                args.as_slice(),
                trial_from_row,
            )
            .optional()
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(claimed)
    }

    /// Opens (creating and migrating as needed) the store at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let name = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: name.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        // Off while migrating (a migration may rebuild a table others refer to; the
        // bundled SQLite enforces foreign keys by default), on once the schema is current.
        conn.pragma_update(None, "foreign_keys", false)
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let mut store = Self {
            conn,
            path: name.clone(),
        };
        // Switching a new file to WAL and migrating it can meet another process doing
        // the same; SQLite then answers "busy" without waiting, so retry for a while.
        let started = std::time::Instant::now();
        loop {
            let attempt = store
                .conn
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(err)
                .and_then(|_| schema::migrate(&mut store.conn, &store.path));
            match attempt {
                Err(StoreError::Sqlite { source, .. })
                    if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && started.elapsed() < std::time::Duration::from_secs(10) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => {
                    other?;
                    store
                        .conn
                        .pragma_update(None, "foreign_keys", true)
                        .map_err(err)?;
                    return Ok(store);
                }
            }
        }
    }

    /// Opens an existing store for reading only: SQLite refuses every write on this
    /// connection, and nothing is migrated (a store of another schema version is refused).
    pub fn open_read_only(path: &Path) -> StoreResult<Self> {
        use rusqlite::OpenFlags;
        let name = path.display().to_string();
        let err = sql_err(&name);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(&err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(&err)?;
        let store = Self {
            conn,
            path: name.clone(),
        };
        let found = store.schema_version()?;
        if found != schema::VERSION {
            let (path, known) = (name.clone(), schema::VERSION);
            return Err(if found > known {
                StoreError::TooNew { path, found, known }
            } else {
                StoreError::TooOld { path, found, known }
            });
        }
        Ok(store)
    }

    /// Ends a running trial (the SQL of [`Ending::sql`]); any other state is a
    /// [`StoreError::Transition`] naming the state it was in.
    fn transition(&mut self, trial: i64, ending: Ending<'_>) -> StoreResult<()> {
        let sets = ending.sets(now());
        let sql = ending.sql(&sets, |i| format!("?{i}"));
        let mut args: Vec<&dyn rusqlite::ToSql> = sets
            .iter()
            .map(|(_, v)| match v {
                Value::Real(x) => x as &dyn rusqlite::ToSql,
                Value::Text(t) => t as &dyn rusqlite::ToSql,
            })
            .collect();
        args.push(&trial);
        let to = ending.state();
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.write_tx().map_err(&err)?;
        let changed = tx.execute(&sql, args.as_slice()).map_err(&err)?;
        if changed != 1 {
            let from: Option<String> = tx
                .query_row("SELECT state FROM trials WHERE id = ?1", [trial], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(&err)?;
            return Err(StoreError::Transition {
                trial,
                from: from.unwrap_or_else(|| "nowhere (no such trial)".into()),
                to: to.as_str(),
            });
        }
        tx.commit().map_err(&err)
    }
}

impl Store for SqliteStore {
    fn schema_version(&self) -> StoreResult<i64> {
        let path = self.path.clone();
        let err = sql_err(&path);
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(&err)
    }

    fn study(&mut self, name: &str, budget: &str) -> StoreResult<i64> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.write_tx().map_err(&err)?;
        let id: Option<i64> = tx
            .query_row("SELECT id FROM studies WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(&err)?;
        let id = match id {
            Some(id) => id,
            None => {
                tx.execute(
                    "INSERT INTO studies (name, budget, created_at) VALUES (?1, ?2, ?3)",
                    params![name, budget, now()],
                )
                .map_err(&err)?;
                tx.last_insert_rowid()
            }
        };
        tx.commit().map_err(&err)?;
        Ok(id)
    }

    fn enqueue(&mut self, study: i64, config: &str, cost: CandidateCost) -> StoreResult<i64> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.write_tx().map_err(&err)?;
        let number: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = ?1",
                [study],
                |r| r.get(0),
            )
            .map_err(&err)?;
        tx.execute(
            "INSERT INTO trials (study_id, number, state, config, flops, params, size_bytes, queued_at, latency_us) \
             VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8)",
            params![study, number, config, cost.flops as i64, cost.params as i64, cost.size_bytes as i64, now(), cost.latency_us.map(|v| v as i64)],
        )
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(&err)?;
        Ok(id)
    }

    fn has_config(&self, study: i64, config: &str) -> StoreResult<bool> {
        let path = self.path.clone();
        let err = sql_err(&path);
        self.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM trials WHERE study_id = ?1 AND config = ?2 AND state != 'failed')",
                params![study, config],
                |r| r.get(0),
            )
            .map_err(&err)
    }

    fn claim(&mut self, study: i64, worker: &str) -> StoreResult<Option<Trial>> {
        self.take(
            "SELECT id FROM trials WHERE study_id = ?4 AND state = 'queued' ORDER BY number LIMIT 1",
            Some(study),
            worker,
            None,
        )
    }

    fn report(&mut self, trial: i64, step: i64, value: f64) -> StoreResult<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        self.conn
            .execute(
                "INSERT OR REPLACE INTO reports (trial_id, step, value) VALUES (?1, ?2, ?3)",
                params![trial, step, value],
            )
            .map_err(&err)?;
        Ok(())
    }

    fn reports(&self, trial: i64) -> StoreResult<Vec<(i64, f64)>> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let mut st = self
            .conn
            .prepare("SELECT step, value FROM reports WHERE trial_id = ?1 ORDER BY step")
            .map_err(&err)?;
        let rows = st
            .query_map([trial], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn end(&mut self, trial: i64, ending: Ending<'_>) -> StoreResult<()> {
        self.transition(trial, ending)
    }

    fn requeue_unfinished(&mut self, study: i64, keep_leased: bool) -> StoreResult<usize> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.write_tx().map_err(&err)?;
        let which = "study_id = ?1 AND state IN ('running', 'interrupted') AND NOT \
             (?2 AND state = 'running' AND lease_until IS NOT NULL AND lease_until > ?3)";
        let args = params![study, keep_leased, now()];
        tx.execute(
            &format!("DELETE FROM reports WHERE trial_id IN (SELECT id FROM trials WHERE {which})"),
            args,
        )
        .map_err(&err)?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE trials SET state = 'queued', worker = NULL, started_at = NULL, \
                     lease_until = NULL WHERE {which}"
                ),
                args,
            )
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(n)
    }

    fn set_study_target(&mut self, study: i64, target: &str, budget: &str) -> StoreResult<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        self.conn
            .execute(
                "UPDATE studies SET target = ?2, budget = ?3 WHERE id = ?1",
                params![study, target, budget],
            )
            .map_err(&err)?;
        Ok(())
    }

    fn set_study_state(
        &mut self,
        study: i64,
        state: StudyState,
        stop_reason: Option<&str>,
    ) -> StoreResult<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        self.conn
            .execute(
                "UPDATE studies SET state = ?2, stop_reason = COALESCE(?3, stop_reason), \
                 state_at = ?4 WHERE id = ?1",
                params![study, state.as_str(), stop_reason, now()],
            )
            .map_err(&err)?;
        Ok(())
    }

    fn studies(&self) -> StoreResult<Vec<StudyRow>> {
        let err = sql_err(&self.path);
        let mut st = self
            .conn
            .prepare(&format!("SELECT {STUDY_COLUMNS} FROM studies ORDER BY id"))
            .map_err(&err)?;
        let rows = st.query_map([], study_from_row).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn study_row(&self, id: i64) -> StoreResult<Option<StudyRow>> {
        self.conn
            .query_row(
                &format!("SELECT {STUDY_COLUMNS} FROM studies WHERE id = ?1"),
                [id],
                study_from_row,
            )
            .optional()
            .map_err(sql_err(&self.path))
    }

    fn values_at(&self, study: i64, step: i64, except_trial: i64) -> StoreResult<Vec<f64>> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let mut st = self
            .conn
            .prepare(
                "SELECT r.value FROM reports r JOIN trials t ON t.id = r.trial_id \
                 WHERE t.study_id = ?1 AND r.step = ?2 AND t.id != ?3",
            )
            .map_err(&err)?;
        let rows = st
            .query_map(params![study, step, except_trial], |r| r.get(0))
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn record_rung_fidelity(&mut self, study: i64, rows: &[RungFidelity]) -> StoreResult<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.write_tx().map_err(&err)?;
        tx.execute("DELETE FROM rung_fidelity WHERE study_id = ?1", [study])
            .map_err(&err)?;
        for r in rows {
            tx.execute(
                "INSERT INTO rung_fidelity (study_id, step, n, kendall_tau) VALUES (?1, ?2, ?3, ?4)",
                params![study, r.step, r.n, r.kendall_tau],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    fn rung_fidelity(&self, study: i64) -> StoreResult<Vec<RungFidelity>> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let mut st = self
            .conn
            .prepare(
                "SELECT step, n, kendall_tau FROM rung_fidelity WHERE study_id = ?1 ORDER BY step",
            )
            .map_err(&err)?;
        let rows = st
            .query_map([study], |r| {
                Ok(RungFidelity {
                    step: r.get(0)?,
                    n: r.get(1)?,
                    kendall_tau: r.get(2)?,
                })
            })
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn record_final(&mut self, trial: i64, result: &FinalResult) -> StoreResult<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        self.conn
            .execute(
                "INSERT OR REPLACE INTO final_results \
                 (trial_id, top1, top5, loss, epochs, weights_path, finished_at, val_top1, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    trial,
                    result.top1,
                    result.top5,
                    result.loss,
                    result.epochs as i64,
                    result.weights_path,
                    now(),
                    result.val_top1,
                    result.reason
                ],
            )
            .map_err(&err)?;
        Ok(())
    }

    fn final_result(&self, trial: i64) -> StoreResult<Option<FinalResult>> {
        let path = self.path.clone();
        let err = sql_err(&path);
        self.conn
            .query_row(
                "SELECT top1, top5, loss, epochs, weights_path, val_top1, reason \
                 FROM final_results WHERE trial_id = ?1",
                [trial],
                |r| {
                    Ok(FinalResult {
                        top1: r.get(0)?,
                        top5: r.get(1)?,
                        loss: r.get(2)?,
                        epochs: r.get::<_, i64>(3)? as usize,
                        weights_path: r.get(4)?,
                        val_top1: r.get(5)?,
                        reason: r.get(6)?,
                    })
                },
            )
            .optional()
            .map_err(&err)
    }

    fn record_final_run(&mut self, study: i64, run: &FinalRun) -> StoreResult<()> {
        self.conn
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO final_runs (study_id, {RUN_COLUMNS}, finished_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                params![
                    study,
                    run.subject.key(),
                    run.seed,
                    run.val_top1,
                    run.top1,
                    run.top5,
                    run.loss,
                    run.epochs as i64,
                    run.weights_path,
                    bits_text(&run.val_correct),
                    bits_text(&run.test_correct),
                    now()
                ],
            )
            .map_err(sql_err(&self.path))?;
        Ok(())
    }

    fn final_runs(&self, study: i64) -> StoreResult<Vec<FinalRun>> {
        let err = sql_err(&self.path);
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM final_runs WHERE study_id = ?1 ORDER BY subject, seed"
            ))
            .map_err(&err)?;
        let rows = st.query_map([study], run_from_row).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn set_study_json(&mut self, study: i64, column: StudyJson, json: &str) -> StoreResult<()> {
        self.conn
            .execute(
                &format!("UPDATE studies SET {} = ?2 WHERE id = ?1", column.column()),
                params![study, json],
            )
            .map_err(sql_err(&self.path))?;
        Ok(())
    }

    fn trial(&self, id: i64) -> StoreResult<Trial> {
        let path = self.path.clone();
        let err = sql_err(&path);
        self.conn
            .query_row(
                &format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE id = ?1"),
                [id],
                trial_from_row,
            )
            .map_err(&err)
    }

    fn trials(&self, study: i64) -> StoreResult<Vec<Trial>> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {TRIAL_COLUMNS} FROM trials WHERE study_id = ?1 ORDER BY number"
            ))
            .map_err(&err)?;
        let rows = st.query_map([study], trial_from_row).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn claim_any(&mut self, worker: &str, lease_s: f64) -> StoreResult<Option<Trial>> {
        self.take(
            "SELECT t.id FROM trials t JOIN studies s ON s.id = t.study_id \
             WHERE t.state = 'queued' AND s.state = 'running' \
             ORDER BY (SELECT COUNT(*) FROM trials r \
                       WHERE r.study_id = t.study_id AND r.state = 'running'), \
                      t.study_id, t.number LIMIT 1",
            None,
            worker,
            Some(lease_s),
        )
    }

    fn heartbeat(&mut self, trial: i64, worker: &str, lease_s: f64) -> StoreResult<bool> {
        let path = self.path.clone();
        let n = self
            .conn
            .execute(
                "UPDATE trials SET lease_until = ?3 \
                 WHERE id = ?1 AND worker = ?2 AND state = 'running' AND lease_until IS NOT NULL",
                params![trial, worker, now() + lease_s],
            )
            .map_err(sql_err(&path))?;
        Ok(n == 1)
    }

    fn requeue_expired(&mut self, study: i64) -> StoreResult<usize> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.write_tx().map_err(&err)?;
        let expired = "SELECT id FROM trials WHERE study_id = ?1 AND state = 'running' \
                       AND lease_until IS NOT NULL AND lease_until < ?2";
        let t = now();
        tx.execute(
            &format!("DELETE FROM reports WHERE trial_id IN ({expired})"),
            params![study, t],
        )
        .map_err(&err)?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE trials SET state = 'queued', worker = NULL, started_at = NULL, \
                     lease_until = NULL WHERE id IN ({expired})"
                ),
                params![study, t],
            )
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(n)
    }

    fn hand_back(&mut self, trial: i64) -> StoreResult<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.write_tx().map_err(&err)?;
        let n = tx
            .execute(
                "UPDATE trials SET state = 'queued', worker = NULL, started_at = NULL, \
                 lease_until = NULL WHERE id = ?1 AND state = 'running'",
                [trial],
            )
            .map_err(&err)?;
        if n == 1 {
            tx.execute("DELETE FROM reports WHERE trial_id = ?1", [trial])
                .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    fn set_budget_dir(&mut self, study: i64, dir: &str) -> StoreResult<()> {
        self.exec(
            "UPDATE studies SET budget_dir = ?2 WHERE id = ?1",
            params![study, dir],
        )
        .map(drop)
    }

    fn submit(&mut self, study: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE studies SET submitted_at = ?2, state = 'submitted', state_at = ?2, \
             stop_requested_at = NULL WHERE id = ?1",
            params![study, now()],
        )
        .map(drop)
    }

    fn request_stop(&mut self, study: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE studies SET stop_requested_at = ?2 WHERE id = ?1",
            params![study, now()],
        )
        .map(drop)
    }

    fn set_identity(&mut self, study: i64, identity: &str) -> StoreResult<()> {
        self.exec(
            "UPDATE studies SET identity = ?2 WHERE id = ?1",
            params![study, identity],
        )
        .map(drop)
    }

    fn withdraw_queued(&mut self, study: i64) -> StoreResult<usize> {
        self.exec(
            "DELETE FROM trials WHERE study_id = ?1 AND state = 'queued'",
            params![study],
        )
    }

    fn pending_verdicts(&self, study: i64) -> StoreResult<Vec<(i64, i64, f64)>> {
        let err = sql_err(&self.path);
        let mut st = self
            .conn
            .prepare(
                "SELECT r.trial_id, r.step, r.value FROM reports r JOIN trials t ON t.id = r.trial_id \
                 WHERE t.study_id = ?1 AND t.state = 'running' AND r.verdict IS NULL \
                 ORDER BY r.trial_id, r.step",
            )
            .map_err(&err)?;
        let rows = st
            .query_map([study], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn set_verdict(&mut self, trial: i64, step: i64, stop: bool) -> StoreResult<()> {
        self.exec(
            "UPDATE reports SET verdict = ?3 WHERE trial_id = ?1 AND step = ?2",
            params![trial, step, stop],
        )
        .map(drop)
    }

    /// Leases: one transaction each (the write lock orders them).
    fn acquire_lease(
        &mut self,
        scope: &str,
        holder: &str,
        lease_s: f64,
    ) -> StoreResult<Result<Lease, Lease>> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.write_tx().map_err(&err)?;
        let t = now();
        let current = tx
            .query_row(
                &format!(
                    "SELECT {LEASE_COLUMNS} FROM leases WHERE scope = ?1 ORDER BY id DESC LIMIT 1"
                ),
                [scope],
                lease_from_row,
            )
            .optional()
            .map_err(&err)?;
        if let Some(c) = current.filter(|c| c.live_at(t)) {
            return Ok(Err(c));
        }
        let lease = tx
            .query_row(
                &format!(
                    "INSERT INTO leases (scope, holder, acquired_at, renewed_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?3, ?4) RETURNING {LEASE_COLUMNS}"
                ),
                params![scope, holder, t, t + lease_s],
                lease_from_row,
            )
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(Ok(lease))
    }

    fn renew_lease(&mut self, id: i64, lease_s: f64) -> StoreResult<bool> {
        let t = now();
        let n = self.exec(
            "UPDATE leases SET renewed_at = ?2, expires_at = ?3 WHERE id = ?1 \
             AND released_at IS NULL \
             AND id = (SELECT MAX(l.id) FROM leases l WHERE l.scope = leases.scope)",
            params![id, t, t + lease_s],
        )?;
        Ok(n == 1)
    }

    fn release_lease(&mut self, id: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE leases SET released_at = ?2 WHERE id = ?1 AND released_at IS NULL",
            params![id, now()],
        )
        .map(drop)
    }

    fn leases(&self, scope: &str) -> StoreResult<Vec<Lease>> {
        let err = sql_err(&self.path);
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE scope = ?1 ORDER BY id"
            ))
            .map_err(&err)?;
        let rows = st.query_map([scope], lease_from_row).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn verdict(&self, trial: i64, step: i64) -> StoreResult<Option<bool>> {
        self.conn
            .query_row(
                "SELECT verdict FROM reports WHERE trial_id = ?1 AND step = ?2",
                params![trial, step],
                |r| r.get::<_, Option<bool>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(sql_err(&self.path))
    }
}

fn lease_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        id: r.get(0)?,
        scope: r.get(1)?,
        holder: r.get(2)?,
        acquired_at: r.get(3)?,
        renewed_at: r.get(4)?,
        expires_at: r.get(5)?,
        released_at: r.get(6)?,
    })
}

impl SqliteStore {
    /// A write transaction that takes the write lock at once (waiting on the busy
    /// timeout): a deferred one that reads first cannot upgrade once another connection
    /// has written meanwhile, and fails with "database is locked" without waiting.
    fn write_tx(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }

    /// One statement, in its own transaction; returns the rows it changed.
    fn exec(&self, sql: &str, args: impl rusqlite::Params) -> StoreResult<usize> {
        self.conn.execute(sql, args).map_err(sql_err(&self.path))
    }
}
