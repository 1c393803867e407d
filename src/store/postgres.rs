//! The PostgreSQL store (`postgres://user@host/db`), for studies whose workers and
//! readers sit on several machines. Same tables and migrations as the SQLite store; every
//! state change is one transaction, and claims take rows with `FOR UPDATE SKIP LOCKED`, so
//! concurrent claimers never wait on each other or take the same trial.
//!
//! The client is the `postgres` crate (the synchronous face of `tokio-postgres`, by the
//! same authors): the store interface is synchronous, like rusqlite's. That client runs
//! its own small runtime and must not block inside another one, so a call made from a
//! tokio thread (the controller's loop) runs on a scoped helper thread.

use super::{
    CandidateCost, Ending, FinalResult, FinalRun, LEASE_COLUMNS, Lease, RUN_COLUMNS, RungFidelity,
    STUDY_COLUMNS, Store, StoreError, StoreResult, StudyJson, StudyRow, StudyState, Subject, Trial,
    TrialState, Value, bits_text, now, pg_schema, schema, text_bits,
};
use ::postgres::types::ToSql;
use ::postgres::{Client, NoTls, Row};
use std::sync::Mutex;

/// A connection to one PostgreSQL database.
pub struct PgStore {
    /// Always Some but while dropping (the client closes on a helper thread).
    client: Mutex<Option<Client>>,
    /// The URL with any password masked, for messages.
    location: String,
}

/// `url` with the password (if any) replaced by `***`.
fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// Runs `f` where the synchronous client may block: on a scoped thread when called from
/// inside a tokio runtime, else right here.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(f).join().expect("a store call panicked"))
    } else {
        f()
    }
}

const TRIAL_COLUMNS: &str = "id, study_id, number, state, config, flops, params, size_bytes, proxy_acc, \
     proxy_loss, worker, error, queued_at, started_at, finished_at, latency_us";

fn trial_from_row(r: &Row) -> Result<Trial, String> {
    let state: String = r.get(3);
    Ok(Trial {
        id: r.get(0),
        study_id: r.get(1),
        number: r.get(2),
        state: TrialState::parse(&state).ok_or_else(|| format!("unknown trial state {state:?}"))?,
        config: r.get(4),
        cost: CandidateCost {
            flops: r.get::<_, i64>(5) as u64,
            params: r.get::<_, i64>(6) as u64,
            size_bytes: r.get::<_, i64>(7) as u64,
            latency_us: r.get::<_, Option<i64>>(15).map(|v| v as u64),
        },
        proxy_acc: r.get(8),
        proxy_loss: r.get(9),
        worker: r.get(10),
        error: r.get(11),
        queued_at: r.get(12),
        started_at: r.get(13),
        finished_at: r.get(14),
    })
}

/// An advisory lock key of rankprune's migrations ("rankprun" in ASCII).
const MIGRATION_LOCK: i64 = 0x72616e6b7072756e;

impl PgStore {
    /// Connects to `url`, migrating the schema unless `read_only` (then the session
    /// refuses every write, and a schema of another version is refused).
    pub fn open(url: &str, read_only: bool) -> StoreResult<Self> {
        let location = masked(url);
        let client =
            off_runtime(|| Client::connect(url, NoTls)).map_err(|e| StoreError::Postgres {
                location: location.clone(),
                message: message(&e),
            })?;
        let store = Self {
            client: Mutex::new(Some(client)),
            location,
        };
        if read_only {
            store.run(|c| c.batch_execute("SET default_transaction_read_only = on"))?;
            let found = store.schema_version()?;
            let (path, known) = (store.location.clone(), schema::VERSION);
            if found > known {
                return Err(StoreError::TooNew { path, found, known });
            }
            if found < known {
                return Err(StoreError::TooOld { path, found, known });
            }
        } else {
            store.migrate()?;
        }
        Ok(store)
    }

    /// Brings the database to the current version in one transaction, under an advisory
    /// lock, so that processes connecting at once migrate it once.
    fn migrate(&self) -> StoreResult<()> {
        let (location, known) = (self.location.clone(), schema::VERSION);
        let found = self.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS rankprune_schema (version BIGINT NOT NULL);",
            )?;
            let found: i64 = match tx.query_opt("SELECT version FROM rankprune_schema", &[])? {
                Some(r) => r.get(0),
                None => {
                    tx.execute("INSERT INTO rankprune_schema VALUES (0)", &[])?;
                    0
                }
            };
            if found <= known {
                for sql in pg_schema::MIGRATIONS.iter().skip(found as usize) {
                    tx.batch_execute(sql)?;
                }
                tx.execute("UPDATE rankprune_schema SET version = $1", &[&known])?;
            }
            tx.commit()?;
            Ok(found)
        })?;
        if found > known {
            return Err(StoreError::TooNew {
                path: location,
                found,
                known,
            });
        }
        Ok(())
    }

    /// Runs `f` on the connection, mapping its error to the store's.
    fn run<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, ::postgres::Error> + Send,
    ) -> StoreResult<T> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let client = guard.as_mut().expect("the client is open until drop");
        off_runtime(|| f(client)).map_err(|e| StoreError::Postgres {
            location: self.location.clone(),
            message: message(&e),
        })
    }

    fn rows_to_trials(&self, rows: Vec<Row>) -> StoreResult<Vec<Trial>> {
        rows.iter()
            .map(|r| {
                trial_from_row(r).map_err(|message| StoreError::Postgres {
                    location: self.location.clone(),
                    message,
                })
            })
            .collect()
    }

    /// Takes the queued trial that `pick` (a query of one trial id that locks its row,
    /// skipping locked ones; `$1` is `study`) chooses, for `worker`, with a lease of
    /// `lease_s` seconds if any (queued -> running), in one transaction.
    fn take(
        &mut self,
        pick: &str,
        study: Option<i64>,
        worker: &str,
        lease_s: Option<f64>,
    ) -> StoreResult<Option<Trial>> {
        let t = now();
        let lease_until = lease_s.map(|l| t + l);
        let rows = self.run(|c| {
            let mut tx = c.transaction()?;
            let next = match &study {
                Some(study) => tx.query_opt(pick, &[study])?,
                None => tx.query_opt(pick, &[])?,
            };
            let Some(next) = next else {
                return Ok(Vec::new());
            };
            let id: i64 = next.get(0);
            let rows = tx.query(
                &format!(
                    "UPDATE trials SET state = 'running', worker = $2, started_at = $3, \
                     lease_until = $4 WHERE id = $1 RETURNING {TRIAL_COLUMNS}"
                ),
                &[&id, &worker, &t, &lease_until],
            )?;
            tx.commit()?;
            Ok(rows)
        })?;
        Ok(self.rows_to_trials(rows)?.into_iter().next())
    }

    /// Ends a running trial (the SQL of [`Ending::sql`]); any other state is a
    /// [`StoreError::Transition`] naming the state it was in.
    fn transition(&mut self, trial: i64, ending: Ending<'_>) -> StoreResult<()> {
        let sets = ending.sets(now());
        let sql = ending.sql(&sets, |i| format!("${i}"));
        let mut args: Vec<&(dyn ToSql + Sync)> = sets
            .iter()
            .map(|(_, v)| match v {
                Value::Real(x) => x as &(dyn ToSql + Sync),
                Value::Text(t) => t as &(dyn ToSql + Sync),
            })
            .collect();
        args.push(&trial);
        let to = ending.state();
        let from = self.run(|c| {
            let mut tx = c.transaction()?;
            let changed = tx.execute(sql.as_str(), &args)?;
            if changed == 1 {
                tx.commit()?;
                return Ok(None);
            }
            let state = tx
                .query_opt("SELECT state FROM trials WHERE id = $1", &[&trial])?
                .map(|r| r.get::<_, String>(0));
            Ok(Some(state))
        })?;
        match from {
            None => Ok(()),
            Some(from) => Err(StoreError::Transition {
                trial,
                from: from.unwrap_or_else(|| "nowhere (no such trial)".into()),
                to: to.as_str(),
            }),
        }
    }
}

/// Creates the database `name` (lowercase letters, digits and `_`) on the server of
/// `server_url` (any database there the user may connect to) and returns its URL.
pub fn create_database(server_url: &str, name: &str) -> StoreResult<String> {
    let location = masked(server_url);
    let fail = |message: String| StoreError::Postgres {
        location: location.clone(),
        message,
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(fail(format!("{name:?} is not a plain database name")));
    }
    off_runtime(|| {
        let mut c = Client::connect(server_url, NoTls)?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))
    })
    .map_err(|e| fail(message(&e)))?;
    // The URL's path is the database: replace it (keeping any ?options).
    let (base, options) = server_url.split_once('?').unwrap_or((server_url, ""));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    let options = if options.is_empty() {
        String::new()
    } else {
        format!("?{options}")
    };
    Ok(format!("{base}/{name}{options}"))
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let client = self.client.get_mut().ok().and_then(|c| c.take());
        if let Some(client) = client {
            off_runtime(move || drop(client));
        }
    }
}

/// The server's message where there is one (::postgres::Error's own text is terse).
fn message(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn study_row(r: &Row) -> StudyRow {
    StudyRow {
        id: r.get(0),
        name: r.get(1),
        budget: r.get(2),
        created_at: r.get(3),
        target: r.get(4),
        state: r
            .get::<_, Option<String>>(5)
            .and_then(|s| StudyState::parse(&s)),
        stop_reason: r.get(6),
        state_at: r.get(7),
        budget_dir: r.get(8),
        submitted_at: r.get(9),
        stop_requested_at: r.get(10),
        identity: r.get(11),
        control: r.get(12),
        verdict: r.get(13),
        gate: r.get(14),
    }
}

/// A stored run; None for a subject this build cannot read.
fn final_run(r: &Row) -> Option<FinalRun> {
    Some(FinalRun {
        subject: Subject::parse(r.get(0))?,
        seed: r.get(1),
        val_top1: r.get(2),
        top1: r.get(3),
        top5: r.get(4),
        loss: r.get(5),
        epochs: r.get::<_, i64>(6) as usize,
        weights_path: r.get(7),
        val_correct: text_bits(r.get(8)),
        test_correct: text_bits(r.get(9)),
    })
}

impl Store for PgStore {
    fn schema_version(&self) -> StoreResult<i64> {
        self.run(|c| {
            let exists: bool = c
                .query_one("SELECT to_regclass('rankprune_schema') IS NOT NULL", &[])?
                .get(0);
            if !exists {
                return Ok(0);
            }
            Ok(c.query_opt("SELECT version FROM rankprune_schema", &[])?
                .map_or(0, |r| r.get(0)))
        })
    }

    fn study(&mut self, name: &str, budget: &str) -> StoreResult<i64> {
        let t = now();
        self.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO studies (name, budget, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &budget, &t],
            )?;
            let id = tx
                .query_one("SELECT id FROM studies WHERE name = $1", &[&name])?
                .get(0);
            tx.commit()?;
            Ok(id)
        })
    }

    fn enqueue(&mut self, study: i64, config: &str, cost: CandidateCost) -> StoreResult<i64> {
        let (flops, params, size) = (
            cost.flops as i64,
            cost.params as i64,
            cost.size_bytes as i64,
        );
        let t = now();
        let latency = cost.latency_us.map(|v| v as i64);
        self.run(|c| {
            let mut tx = c.transaction()?;
            // The study row's lock orders concurrent enqueues, so numbers never clash.
            tx.execute("SELECT id FROM studies WHERE id = $1 FOR UPDATE", &[&study])?;
            let id = tx
                .query_one(
                    "INSERT INTO trials (study_id, number, state, config, flops, params, size_bytes, queued_at, latency_us) \
                     SELECT $1, COALESCE(MAX(number) + 1, 0), 'queued', $2, $3, $4, $5, $6, $7 \
                     FROM trials WHERE study_id = $1 RETURNING id",
                    &[&study, &config, &flops, &params, &size, &t, &latency],
                )?
                .get(0);
            tx.commit()?;
            Ok(id)
        })
    }

    fn has_config(&self, study: i64, config: &str) -> StoreResult<bool> {
        self.run(|c| {
            Ok(c.query_one(
                "SELECT EXISTS(SELECT 1 FROM trials WHERE study_id = $1 AND config = $2 AND state != 'failed')",
                &[&study, &config],
            )?
            .get(0))
        })
    }

    fn claim(&mut self, study: i64, worker: &str) -> StoreResult<Option<Trial>> {
        self.take(
            "SELECT id FROM trials WHERE study_id = $1 AND state = 'queued' \
             ORDER BY number LIMIT 1 FOR UPDATE SKIP LOCKED",
            Some(study),
            worker,
            None,
        )
    }

    fn report(&mut self, trial: i64, step: i64, value: f64) -> StoreResult<()> {
        self.run(|c| {
            c.execute(
                "INSERT INTO reports (trial_id, step, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (trial_id, step) DO UPDATE SET value = EXCLUDED.value",
                &[&trial, &step, &value],
            )
            .map(drop)
        })
    }

    fn reports(&self, trial: i64) -> StoreResult<Vec<(i64, f64)>> {
        self.run(|c| {
            let rows = c.query(
                "SELECT step, value FROM reports WHERE trial_id = $1 ORDER BY step",
                &[&trial],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn end(&mut self, trial: i64, ending: Ending<'_>) -> StoreResult<()> {
        self.transition(trial, ending)
    }

    fn requeue_unfinished(&mut self, study: i64, keep_leased: bool) -> StoreResult<usize> {
        let which = "study_id = $1 AND state IN ('running', 'interrupted') AND NOT \
             ($2 AND state = 'running' AND lease_until IS NOT NULL AND lease_until > $3)";
        let t = now();
        self.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                &format!(
                    "DELETE FROM reports WHERE trial_id IN (SELECT id FROM trials WHERE {which})"
                ),
                &[&study, &keep_leased, &t],
            )?;
            let n = tx.execute(
                &format!(
                    "UPDATE trials SET state = 'queued', worker = NULL, started_at = NULL, \
                     lease_until = NULL WHERE {which}"
                ),
                &[&study, &keep_leased, &t],
            )?;
            tx.commit()?;
            Ok(n as usize)
        })
    }

    fn set_study_target(&mut self, study: i64, target: &str, budget: &str) -> StoreResult<()> {
        self.run(|c| {
            c.execute(
                "UPDATE studies SET target = $2, budget = $3 WHERE id = $1",
                &[&study, &target, &budget],
            )
            .map(drop)
        })
    }

    fn set_study_state(
        &mut self,
        study: i64,
        state: StudyState,
        stop_reason: Option<&str>,
    ) -> StoreResult<()> {
        let t = now();
        self.run(|c| {
            c.execute(
                "UPDATE studies SET state = $2, stop_reason = COALESCE($3, stop_reason), \
                 state_at = $4 WHERE id = $1",
                &[&study, &state.as_str(), &stop_reason, &t],
            )
            .map(drop)
        })
    }

    fn studies(&self) -> StoreResult<Vec<StudyRow>> {
        self.run(|c| {
            let rows = c.query(
                &format!("SELECT {STUDY_COLUMNS} FROM studies ORDER BY id"),
                &[],
            )?;
            Ok(rows.iter().map(study_row).collect())
        })
    }

    fn study_row(&self, id: i64) -> StoreResult<Option<StudyRow>> {
        self.run(|c| {
            let row = c.query_opt(
                &format!("SELECT {STUDY_COLUMNS} FROM studies WHERE id = $1"),
                &[&id],
            )?;
            Ok(row.as_ref().map(study_row))
        })
    }

    fn values_at(&self, study: i64, step: i64, except_trial: i64) -> StoreResult<Vec<f64>> {
        self.run(|c| {
            let rows = c.query(
                "SELECT r.value FROM reports r JOIN trials t ON t.id = r.trial_id \
                 WHERE t.study_id = $1 AND r.step = $2 AND t.id != $3",
                &[&study, &step, &except_trial],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn record_rung_fidelity(&mut self, study: i64, rows: &[RungFidelity]) -> StoreResult<()> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM rung_fidelity WHERE study_id = $1", &[&study])?;
            for r in rows {
                tx.execute(
                    "INSERT INTO rung_fidelity (study_id, step, n, kendall_tau) VALUES ($1, $2, $3, $4)",
                    &[&study, &r.step, &r.n, &r.kendall_tau],
                )?;
            }
            tx.commit()
        })
    }

    fn rung_fidelity(&self, study: i64) -> StoreResult<Vec<RungFidelity>> {
        self.run(|c| {
            let rows = c.query(
                "SELECT step, n, kendall_tau FROM rung_fidelity WHERE study_id = $1 ORDER BY step",
                &[&study],
            )?;
            Ok(rows
                .iter()
                .map(|r| RungFidelity {
                    step: r.get(0),
                    n: r.get(1),
                    kendall_tau: r.get(2),
                })
                .collect())
        })
    }

    fn record_final(&mut self, trial: i64, result: &FinalResult) -> StoreResult<()> {
        let (t, epochs) = (now(), result.epochs as i64);
        self.run(|c| {
            c.execute(
                "INSERT INTO final_results \
                 (trial_id, top1, top5, loss, epochs, weights_path, finished_at, val_top1, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (trial_id) DO UPDATE SET top1 = EXCLUDED.top1, top5 = EXCLUDED.top5, \
                 loss = EXCLUDED.loss, epochs = EXCLUDED.epochs, weights_path = EXCLUDED.weights_path, \
                 finished_at = EXCLUDED.finished_at, val_top1 = EXCLUDED.val_top1, reason = EXCLUDED.reason",
                &[
                    &trial,
                    &result.top1,
                    &result.top5,
                    &result.loss,
                    &epochs,
                    &result.weights_path,
                    &t,
                    &result.val_top1,
                    &result.reason,
                ],
            )
            .map(drop)
        })
    }

    fn final_result(&self, trial: i64) -> StoreResult<Option<FinalResult>> {
        self.run(|c| {
            let row = c.query_opt(
                "SELECT top1, top5, loss, epochs, weights_path, val_top1, reason \
                 FROM final_results WHERE trial_id = $1",
                &[&trial],
            )?;
            Ok(row.map(|r| FinalResult {
                top1: r.get(0),
                top5: r.get(1),
                loss: r.get(2),
                epochs: r.get::<_, i64>(3) as usize,
                weights_path: r.get(4),
                val_top1: r.get(5),
                reason: r.get(6),
            }))
        })
    }

    fn record_final_run(&mut self, study: i64, run: &FinalRun) -> StoreResult<()> {
        let (t, epochs, key) = (now(), run.epochs as i64, run.subject.key());
        let (val, test) = (bits_text(&run.val_correct), bits_text(&run.test_correct));
        self.run(|c| {
            c.execute(
                &format!(
                    "INSERT INTO final_runs (study_id, {RUN_COLUMNS}, finished_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (study_id, subject, seed) DO UPDATE SET \
                     val_top1 = EXCLUDED.val_top1, top1 = EXCLUDED.top1, top5 = EXCLUDED.top5, \
                     loss = EXCLUDED.loss, epochs = EXCLUDED.epochs, \
                     weights_path = EXCLUDED.weights_path, val_correct = EXCLUDED.val_correct, \
                     test_correct = EXCLUDED.test_correct, finished_at = EXCLUDED.finished_at"
                ),
                &[
                    &study,
                    &key,
                    &run.seed,
                    &run.val_top1,
                    &run.top1,
                    &run.top5,
                    &run.loss,
                    &epochs,
                    &run.weights_path,
                    &val,
                    &test,
                    &t,
                ],
            )
            .map(drop)
        })
    }

    fn final_runs(&self, study: i64) -> StoreResult<Vec<FinalRun>> {
        self.run(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM final_runs WHERE study_id = $1 \
                     ORDER BY subject, seed"
                ),
                &[&study],
            )?;
            Ok(rows.iter().filter_map(final_run).collect())
        })
    }

    fn set_study_json(&mut self, study: i64, column: StudyJson, json: &str) -> StoreResult<()> {
        self.run(|c| {
            c.execute(
                &format!("UPDATE studies SET {} = $2 WHERE id = $1", column.column()),
                &[&study, &json],
            )
            .map(drop)
        })
    }

    fn trial(&self, id: i64) -> StoreResult<Trial> {
        let rows = self.run(|c| {
            c.query(
                &format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE id = $1"),
                &[&id],
            )
        })?;
        self.rows_to_trials(rows)?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Postgres {
                location: self.location.clone(),
                message: format!("no trial with id {id}"),
            })
    }

    fn trials(&self, study: i64) -> StoreResult<Vec<Trial>> {
        let rows = self.run(|c| {
            c.query(
                &format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE study_id = $1 ORDER BY number"),
                &[&study],
            )
        })?;
        self.rows_to_trials(rows)
    }

    fn claim_any(&mut self, worker: &str, lease_s: f64) -> StoreResult<Option<Trial>> {
        self.take(
            "SELECT t.id FROM trials t JOIN studies s ON s.id = t.study_id \
             WHERE t.state = 'queued' AND s.state = 'running' \
             ORDER BY (SELECT COUNT(*) FROM trials r \
                       WHERE r.study_id = t.study_id AND r.state = 'running'), \
                      t.study_id, t.number LIMIT 1 FOR UPDATE OF t SKIP LOCKED",
            None,
            worker,
            Some(lease_s),
        )
    }

    fn heartbeat(&mut self, trial: i64, worker: &str, lease_s: f64) -> StoreResult<bool> {
        let until = now() + lease_s;
        self.run(|c| {
            let n = c.execute(
                "UPDATE trials SET lease_until = $3 \
                 WHERE id = $1 AND worker = $2 AND state = 'running' AND lease_until IS NOT NULL",
                &[&trial, &worker, &until],
            )?;
            Ok(n == 1)
        })
    }

    fn requeue_expired(&mut self, study: i64) -> StoreResult<usize> {
        let t = now();
        self.run(|c| {
            let mut tx = c.transaction()?;
            let expired = "SELECT id FROM trials WHERE study_id = $1 AND state = 'running' \
                           AND lease_until IS NOT NULL AND lease_until < $2";
            tx.execute(
                &format!("DELETE FROM reports WHERE trial_id IN ({expired})"),
                &[&study, &t],
            )?;
            let n = tx.execute(
                &format!(
                    "UPDATE trials SET state = 'queued', worker = NULL, started_at = NULL, \
                     lease_until = NULL WHERE id IN ({expired})"
                ),
                &[&study, &t],
            )?;
            tx.commit()?;
            Ok(n as usize)
        })
    }

    fn hand_back(&mut self, trial: i64) -> StoreResult<()> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE trials SET state = 'queued', worker = NULL, started_at = NULL, \
                 lease_until = NULL WHERE id = $1 AND state = 'running'",
                &[&trial],
            )?;
            if n == 1 {
                tx.execute("DELETE FROM reports WHERE trial_id = $1", &[&trial])?;
            }
            tx.commit()
        })
    }

    fn set_budget_dir(&mut self, study: i64, dir: &str) -> StoreResult<()> {
        self.exec(
            "UPDATE studies SET budget_dir = $2 WHERE id = $1",
            &[&study, &dir],
        )
        .map(drop)
    }

    fn submit(&mut self, study: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE studies SET submitted_at = $2, state = 'submitted', state_at = $2, \
             stop_requested_at = NULL WHERE id = $1",
            &[&study, &now()],
        )
        .map(drop)
    }

    fn request_stop(&mut self, study: i64) -> StoreResult<()> {
        self.exec(
            "UPDATE studies SET stop_requested_at = $2 WHERE id = $1",
            &[&study, &now()],
        )
        .map(drop)
    }

    fn set_identity(&mut self, study: i64, identity: &str) -> StoreResult<()> {
        self.exec(
            "UPDATE studies SET identity = $2 WHERE id = $1",
            &[&study, &identity],
        )
        .map(drop)
    }

    fn withdraw_queued(&mut self, study: i64) -> StoreResult<usize> {
        self.exec(
            "DELETE FROM trials WHERE study_id = $1 AND state = 'queued'",
            &[&study],
        )
    }

    fn pending_verdicts(&self, study: i64) -> StoreResult<Vec<(i64, i64, f64)>> {
        self.run(|c| {
            let rows = c.query(
                "SELECT r.trial_id, r.step, r.value FROM reports r JOIN trials t ON t.id = r.trial_id \
                 WHERE t.study_id = $1 AND t.state = 'running' AND r.verdict IS NULL \
                 ORDER BY r.trial_id, r.step",
                &[&study],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
        })
    }

    fn set_verdict(&mut self, trial: i64, step: i64, stop: bool) -> StoreResult<()> {
        self.exec(
            "UPDATE reports SET verdict = $3 WHERE trial_id = $1 AND step = $2",
            &[&trial, &step, &stop],
        )
        .map(drop)
    }

    fn verdict(&self, trial: i64, step: i64) -> StoreResult<Option<bool>> {
        self.run(|c| {
            let row = c.query_opt(
                "SELECT verdict FROM reports WHERE trial_id = $1 AND step = $2",
                &[&trial, &step],
            )?;
            Ok(row.and_then(|r| r.get::<_, Option<bool>>(0)))
        })
    }

    /// Lease times are the server's clock, so machines whose clocks differ agree on them.
    fn acquire_lease(
        &mut self,
        scope: &str,
        holder: &str,
        lease_s: f64,
    ) -> StoreResult<Result<Lease, Lease>> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            // Acquirers and renewals of any scope wait on each other.
            tx.batch_execute("LOCK TABLE leases IN SHARE ROW EXCLUSIVE MODE")?;
            let t: f64 = tx.query_one(SERVER_NOW, &[])?.get(0);
            let current = tx
                .query_opt(
                    &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE scope = $1 ORDER BY id DESC LIMIT 1"),
                    &[&scope],
                )?
                .map(|r| lease_from_row(&r));
            if let Some(c) = current.filter(|c| c.live_at(t)) {
                return Ok(Err(c));
            }
            let row = tx.query_one(
                &format!(
                    "INSERT INTO leases (scope, holder, acquired_at, renewed_at, expires_at) \
                     VALUES ($1, $2, $3, $3, $4) RETURNING {LEASE_COLUMNS}"
                ),
                &[&scope, &holder, &t, &(t + lease_s)],
            )?;
            tx.commit()?;
            Ok(Ok(lease_from_row(&row)))
        })
    }

    fn renew_lease(&mut self, id: i64, lease_s: f64) -> StoreResult<bool> {
        let n = self.exec(
            &format!(
                "UPDATE leases SET renewed_at = ({SERVER_NOW}), expires_at = ({SERVER_NOW}) + $2 \
                 WHERE id = $1 AND released_at IS NULL \
                 AND id = (SELECT MAX(l.id) FROM leases l WHERE l.scope = leases.scope)"
            ),
            &[&id, &lease_s],
        )?;
        Ok(n == 1)
    }

    fn release_lease(&mut self, id: i64) -> StoreResult<()> {
        self.exec(
            &format!(
                "UPDATE leases SET released_at = ({SERVER_NOW}) WHERE id = $1 AND released_at IS NULL"
            ),
            &[&id],
        )
        .map(drop)
    }

    fn leases(&self, scope: &str) -> StoreResult<Vec<Lease>> {
        self.run(|c| {
            let rows = c.query(
                &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE scope = $1 ORDER BY id"),
                &[&scope],
            )?;
            Ok(rows.iter().map(lease_from_row).collect())
        })
    }
}

/// The server's clock in Unix seconds.
const SERVER_NOW: &str = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION";

fn lease_from_row(r: &Row) -> Lease {
    Lease {
        id: r.get(0),
        scope: r.get(1),
        holder: r.get(2),
        acquired_at: r.get(3),
        renewed_at: r.get(4),
        expires_at: r.get(5),
        released_at: r.get(6),
    }
}

impl PgStore {
    /// One statement, in its own transaction; returns the rows it changed.
    fn exec(
        &self,
        sql: &str,
        args: &[&(dyn ::postgres::types::ToSql + Sync)],
    ) -> StoreResult<usize> {
        self.run(|c| c.execute(sql, args).map(|n| n as usize))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(
            super::masked("postgres://me:secret@db.example:5432/rp"),
            "postgres://me:***@db.example:5432/rp"
        );
        assert_eq!(
            super::masked("postgres://me@127.0.0.1/rp"),
            "postgres://me@127.0.0.1/rp"
        );
    }

    #[test]
    fn both_stores_have_the_same_migrations() {
        assert_eq!(
            super::pg_schema::MIGRATIONS.len(),
            super::schema::MIGRATIONS.len()
        );
    }
}
