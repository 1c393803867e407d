//! The trial store: every study and trial of a search in one SQLite file (bundled
//! SQLite, WAL mode). The controller is the only writer; readers (inspect, export) wait
//! on a busy timeout. Every state change is one transaction, so a crash at any instant
//! leaves the file consistent; on restart, `running` and `interrupted` trials are queued
//! again and completed trials are never repeated.

mod schema;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifecycle of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    Queued,
    Running,
    Complete,
    Failed,
    /// Stopped early by the search's early-stop rule (stored as "early_stopped").
    EarlyStopped,
    /// Was running when the controller stopped; queued again on restart.
    Interrupted,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Queued => "queued",
            TrialState::Running => "running",
            TrialState::Complete => "complete",
            TrialState::Failed => "failed",
            TrialState::EarlyStopped => "early_stopped",
            TrialState::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Self> {
        Ok(match s {
            "queued" => TrialState::Queued,
            "running" => TrialState::Running,
            "complete" => TrialState::Complete,
            "failed" => TrialState::Failed,
            "early_stopped" => TrialState::EarlyStopped,
            "interrupted" => TrialState::Interrupted,
            other => {
                return Err(rusqlite::Error::InvalidColumnType(
                    0,
                    other.to_string(),
                    rusqlite::types::Type::Text,
                ));
            }
        })
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("trial {trial}: cannot go from {from} to {to}")]
    Transition {
        trial: i64,
        from: String,
        to: &'static str,
    },
    #[error(
        "{path}: schema version {found} is older than this rankprune's ({known}) and the store \
         is open read-only; open it once with `rankprune trials --db {path}` to upgrade it"
    )]
    TooOld {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("{path}: schema version {found} is newer than this rankprune understands ({known})")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Cost figures of a trial's candidate, known before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CandidateCost {
    pub flops: u64,
    pub params: u64,
    pub size_bytes: u64,
}

/// One trial as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trial {
    pub id: i64,
    pub study_id: i64,
    /// 0, 1, 2, ... within the study.
    pub number: i64,
    pub state: TrialState,
    /// The layer config (JSON, reference format).
    pub config: String,
    pub cost: CandidateCost,
    pub proxy_acc: Option<f64>,
    pub proxy_loss: Option<f64>,
    pub worker: Option<String>,
    pub error: Option<String>,
    pub queued_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
}

/// A study as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyRow {
    pub id: i64,
    pub name: String,
    /// The budget file's text when the study was created (or last allowed to change).
    pub budget: String,
    pub created_at: f64,
    /// The study's cost target (JSON), stored when it starts.
    pub target: Option<String>,
    /// Where the study stands (None for studies run before schema v5).
    pub state: Option<StudyState>,
    /// Why its search loop last ended (`budget`, `wall_limit`, `signal`, `exhausted`).
    pub stop_reason: Option<String>,
    /// When `state` last changed (Unix seconds).
    pub state_at: Option<f64>,
}

/// Where a study stands, as its controller last wrote it. A controller that was killed
/// leaves `Running` behind; readers judge liveness by the trials' timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyState {
    Running,
    FinalStage,
    Finished,
    Interrupted,
}

impl StudyState {
    pub fn as_str(self) -> &'static str {
        match self {
            StudyState::Running => "running",
            StudyState::FinalStage => "final_stage",
            StudyState::Finished => "finished",
            StudyState::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            StudyState::Running,
            StudyState::FinalStage,
            StudyState::Finished,
            StudyState::Interrupted,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// How well one rung's scores ranked a study's re-trained trials.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RungFidelity {
    /// The rung's step; the proxy's last step stands for the trial's proxy accuracy.
    pub step: i64,
    /// Re-trained trials scored at this rung.
    pub n: i64,
    /// Kendall's tau-b against validation accuracy after re-training (None when undefined).
    pub kendall_tau: Option<f64>,
}

/// A trial re-trained with the full recipe and scored on the test set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinalResult {
    /// Best validation top-1 of the re-training (absent in stores from schema v1).
    pub val_top1: Option<f64>,
    /// Test-set scores of the best-by-validation weights.
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    pub epochs: usize,
    pub weights_path: Option<String>,
    /// Why the trial was re-trained (`top_k` or `warm_start`; absent before schema v3).
    pub reason: Option<String>,
}

fn sql_err(path: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_string(),
        source,
    }
}

/// Unix time in seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A connection to one store file.
pub struct TrialStore {
    conn: Connection,
    path: String,
}

const TRIAL_COLUMNS: &str = "id, study_id, number, state, config, flops, params, size_bytes, proxy_acc, \
     proxy_loss, worker, error, queued_at, started_at, finished_at";

fn trial_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Trial> {
    Ok(Trial {
        id: r.get(0)?,
        study_id: r.get(1)?,
        number: r.get(2)?,
        state: TrialState::parse(&r.get::<_, String>(3)?)?,
        config: r.get(4)?,
        cost: CandidateCost {
            flops: r.get::<_, i64>(5)? as u64,
            params: r.get::<_, i64>(6)? as u64,
            size_bytes: r.get::<_, i64>(7)? as u64,
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

impl TrialStore {
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

    /// Schema version of the open file.
    pub fn schema_version(&self) -> StoreResult<i64> {
        let path = self.path.clone();
        let err = sql_err(&path);
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(&err)
    }

    /// The study called `name`, created with `budget` (the budget file's text) if new.
    pub fn study(&mut self, name: &str, budget: &str) -> StoreResult<i64> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.conn.transaction().map_err(&err)?;
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

    /// Queues a candidate; returns its trial id.
    pub fn enqueue(&mut self, study: i64, config: &str, cost: CandidateCost) -> StoreResult<i64> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.conn.transaction().map_err(&err)?;
        let number: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = ?1",
                [study],
                |r| r.get(0),
            )
            .map_err(&err)?;
        tx.execute(
            "INSERT INTO trials (study_id, number, state, config, flops, params, size_bytes, queued_at) \
             VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7)",
            params![study, number, config, cost.flops as i64, cost.params as i64, cost.size_bytes as i64, now()],
        )
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(&err)?;
        Ok(id)
    }

    /// Whether the study already holds a trial with exactly this config (any state but failed).
    pub fn has_config(&self, study: i64, config: &str) -> StoreResult<bool> {
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

    /// One guarded state change: applies only if the trial is in one of `from`.
    fn transition(
        &mut self,
        trial: i64,
        from: &[TrialState],
        to: TrialState,
        set: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> StoreResult<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let allowed = from
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE trials SET state = '{}'{set} WHERE id = ? AND state IN ({allowed})",
            to.as_str()
        );
        let mut args: Vec<&dyn rusqlite::ToSql> = values.to_vec();
        args.push(&trial);
        let tx = self.conn.transaction().map_err(&err)?;
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

    /// Takes the oldest queued trial of `study` for `worker` (queued -> running).
    pub fn claim(&mut self, study: i64, worker: &str) -> StoreResult<Option<Trial>> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let next: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM trials WHERE study_id = ?1 AND state = 'queued' ORDER BY number LIMIT 1",
                [study],
                |r| r.get(0),
            )
            .optional()
            .map_err(&err)?;
        let Some(id) = next else { return Ok(None) };
        let t = now();
        self.transition(
            id,
            &[TrialState::Queued],
            TrialState::Running,
            ", worker = ?, started_at = ?",
            &[&worker, &t],
        )?;
        self.trial(id).map(Some)
    }

    /// An intermediate report (e.g. validation accuracy at a step) of a running trial.
    pub fn report(&mut self, trial: i64, step: i64, value: f64) -> StoreResult<()> {
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

    pub fn reports(&self, trial: i64) -> StoreResult<Vec<(i64, f64)>> {
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

    pub fn complete(&mut self, trial: i64, proxy_acc: f64, proxy_loss: f64) -> StoreResult<()> {
        let t = now();
        self.transition(
            trial,
            &[TrialState::Running],
            TrialState::Complete,
            ", proxy_acc = ?, proxy_loss = ?, finished_at = ?",
            &[&proxy_acc, &proxy_loss, &t],
        )
    }

    pub fn fail(&mut self, trial: i64, error: &str) -> StoreResult<()> {
        let t = now();
        self.transition(
            trial,
            &[TrialState::Running],
            TrialState::Failed,
            ", error = ?, finished_at = ?",
            &[&error, &t],
        )
    }

    /// Stopped early by the search's rule, with the last accuracy seen.
    pub fn early_stop(&mut self, trial: i64, proxy_acc: f64) -> StoreResult<()> {
        let t = now();
        self.transition(
            trial,
            &[TrialState::Running],
            TrialState::EarlyStopped,
            ", proxy_acc = ?, finished_at = ?",
            &[&proxy_acc, &t],
        )
    }

    /// Marks a running trial interrupted (graceful shutdown).
    pub fn interrupt(&mut self, trial: i64) -> StoreResult<()> {
        self.transition(
            trial,
            &[TrialState::Running],
            TrialState::Interrupted,
            "",
            &[],
        )
    }

    /// On restart: running or interrupted trials go back to the queue, their partial
    /// reports dropped. Returns how many.
    pub fn requeue_unfinished(&mut self, study: i64) -> StoreResult<usize> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.conn.transaction().map_err(&err)?;
        tx.execute(
            "DELETE FROM reports WHERE trial_id IN \
             (SELECT id FROM trials WHERE study_id = ?1 AND state IN ('running', 'interrupted'))",
            [study],
        )
        .map_err(&err)?;
        let n = tx
            .execute(
                "UPDATE trials SET state = 'queued', worker = NULL, started_at = NULL \
                 WHERE study_id = ?1 AND state IN ('running', 'interrupted')",
                [study],
            )
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(n)
    }

    /// Stores the study's cost target (JSON) and the budget text it comes from.
    pub fn set_study_target(&mut self, study: i64, target: &str, budget: &str) -> StoreResult<()> {
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

    /// Records where the study stands (and, when its search loop ended, why).
    pub fn set_study_state(
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

    /// Every study in the file, oldest first.
    pub fn studies(&self) -> StoreResult<Vec<StudyRow>> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let mut st = self
            .conn
            .prepare(
                "SELECT id, name, budget, created_at, target, state, stop_reason, state_at \
                 FROM studies ORDER BY id",
            )
            .map_err(&err)?;
        let rows = st
            .query_map([], |r| {
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
                })
            })
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    /// Validation values reported at `step` by the study's trials other than `except_trial`,
    /// whatever became of them (a rung compares a trial with all that reached it).
    pub fn values_at(&self, study: i64, step: i64, except_trial: i64) -> StoreResult<Vec<f64>> {
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

    /// Replaces the study's rung fidelity rows, in one transaction.
    pub fn record_rung_fidelity(&mut self, study: i64, rows: &[RungFidelity]) -> StoreResult<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.conn.transaction().map_err(&err)?;
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

    pub fn rung_fidelity(&self, study: i64) -> StoreResult<Vec<RungFidelity>> {
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

    /// Records the full re-training of a completed trial (replacing an earlier one).
    pub fn record_final(&mut self, trial: i64, result: &FinalResult) -> StoreResult<()> {
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

    /// The final result of a trial, if it was re-trained.
    pub fn final_result(&self, trial: i64) -> StoreResult<Option<FinalResult>> {
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

    pub fn trial(&self, id: i64) -> StoreResult<Trial> {
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

    /// All trials of a study in order.
    pub fn trials(&self, study: i64) -> StoreResult<Vec<Trial>> {
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
}

/// A store failure as the crate's error: a store from a newer version is bad input (exit
/// code 2), anything else a failure (1).
impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooNew { .. } | StoreError::TooOld { .. } => {
                crate::error::Error::BadInput(e.to_string())
            }
            _ => crate::error::Error::Failure(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
