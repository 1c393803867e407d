//! The trial store: every study and trial of a search, behind one interface ([`Store`])
//! with two implementations: a SQLite file (bundled SQLite, WAL mode; the default, for
//! one machine) and a PostgreSQL database (`postgres://...`, for many). Every state
//! change is one transaction, so a crash at any instant leaves the store consistent; on
//! restart, `running` and `interrupted` trials are queued again and completed trials are
//! never repeated.

mod pg_schema;
mod postgres;
mod schema;
mod sqlite;

pub use postgres::{PgStore, create_database};
pub use sqlite::SqliteStore;

use serde::Serialize;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifecycle of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
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

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => TrialState::Queued,
            "running" => TrialState::Running,
            "complete" => TrialState::Complete,
            "failed" => TrialState::Failed,
            "early_stopped" => TrialState::EarlyStopped,
            "interrupted" => TrialState::Interrupted,
            _ => return None,
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
    #[error("{location}: {message}")]
    Postgres { location: String, message: String },
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
    /// Predicted inference latency in microseconds, in a study with a latency target.
    pub latency_us: Option<u64>,
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

#[cfg(test)]
impl Trial {
    /// A trial of study 1 numbered `id - 1`, with `flops` FLOPs and 10 params, for tests.
    pub(crate) fn fixture(id: i64, state: TrialState, proxy: Option<f64>, flops: u64) -> Self {
        Trial {
            id,
            study_id: 1,
            number: id - 1,
            state,
            config: String::new(),
            cost: CandidateCost {
                flops,
                params: 10,
                size_bytes: 40,
                latency_us: None,
            },
            proxy_acc: proxy,
            proxy_loss: None,
            worker: None,
            error: None,
            queued_at: 0.0,
            started_at: None,
            finished_at: None,
        }
    }
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
    /// Why its search loop last ended (`budget`, `wall_limit`, `signal`, `exhausted`,
    /// `stopped`), or `error` when its controller failed.
    pub stop_reason: Option<String>,
    /// When `state` last changed (Unix seconds).
    pub state_at: Option<f64>,
    /// The folder the budget's relative paths resolve against (None before schema v6).
    pub budget_dir: Option<String>,
    /// When it was submitted to a daemon (`rankprune submit`); None for `search` studies.
    pub submitted_at: Option<f64>,
    /// When `rankprune stop` asked its controller to stop proposing.
    pub stop_requested_at: Option<f64>,
    /// SHA-256 of the base weights and data files it reads (JSON), recorded at its start.
    pub identity: Option<String>,
    /// The one-shot heuristic's config (JSON), re-trained as the final stage's control.
    pub control: Option<String>,
    /// The final stage's verdict on the winner against the control (JSON; see
    /// `search::verdict::Verdict`).
    pub verdict: Option<String>,
    /// Whether the step-0 gate stops trials, and the measurement that decided it (JSON;
    /// see `search::gate::GateDecision`), recorded at the study's start.
    pub gate: Option<String>,
}

/// A JSON text column of a study, written once its value is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudyJson {
    Control,
    Verdict,
    Gate,
}

impl StudyJson {
    fn column(self) -> &'static str {
        match self {
            StudyJson::Control => "control",
            StudyJson::Verdict => "verdict",
            StudyJson::Gate => "gate",
        }
    }
}

/// What a final re-training trained: a finalist (its trial id) or the control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Trial(i64),
    Control,
}

impl Subject {
    /// As stored: `trial:ID` or `control`.
    pub fn key(self) -> String {
        match self {
            Subject::Trial(id) => format!("trial:{id}"),
            Subject::Control => "control".into(),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "control" => Some(Subject::Control),
            _ => s.strip_prefix("trial:")?.parse().ok().map(Subject::Trial),
        }
    }
}

/// One re-training of a final-stage subject with one training seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinalRun {
    pub subject: Subject,
    /// The training seed (the same seeds for every subject of a study: paired).
    pub seed: i64,
    /// Validation top-1 of the best-by-validation weights.
    pub val_top1: f64,
    /// Test-set scores of those weights.
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    pub epochs: usize,
    pub weights_path: Option<String>,
    /// Per-image top-1 correctness of those weights, in the sets' order.
    #[serde(skip)]
    pub val_correct: Vec<bool>,
    #[serde(skip)]
    pub test_correct: Vec<bool>,
}

/// Per-image correctness as stored: '1' or '0' per image.
pub fn bits_text(v: &[bool]) -> String {
    v.iter().map(|&b| if b { '1' } else { '0' }).collect()
}

pub fn text_bits(s: &str) -> Vec<bool> {
    s.bytes().map(|b| b == b'1').collect()
}

/// Where a study stands, as its controller last wrote it. A controller that was killed
/// leaves `Running` behind; readers judge liveness by the trials' timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyState {
    /// Submitted to a daemon that has not picked it up yet.
    Submitted,
    Running,
    FinalStage,
    Finished,
    Interrupted,
}

impl StudyState {
    pub fn as_str(self) -> &'static str {
        match self {
            StudyState::Submitted => "submitted",
            StudyState::Running => "running",
            StudyState::FinalStage => "final_stage",
            StudyState::Finished => "finished",
            StudyState::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            StudyState::Submitted,
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

/// One holding of a lease: the store's active daemon (scope [`DAEMON_SCOPE`]) or a
/// study's controller ([`study_scope`]). Rows are kept as history; the newest row of a
/// scope is its holder while it is neither released nor expired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lease {
    pub id: i64,
    pub scope: String,
    /// Who holds it: the process's kind, host and pid.
    pub holder: String,
    pub acquired_at: f64,
    /// The holder's last renewal.
    pub renewed_at: f64,
    /// Anyone may take the scope over after this, unless renewed meanwhile.
    pub expires_at: f64,
    pub released_at: Option<f64>,
}

impl Lease {
    /// Whether it still holds its scope at `t` (Unix seconds).
    pub fn live_at(&self, t: f64) -> bool {
        self.released_at.is_none() && self.expires_at > t
    }
}

/// The scope of the store's active daemon.
pub const DAEMON_SCOPE: &str = "daemon";

/// The scope of study `id`'s controller.
pub fn study_scope(id: i64) -> String {
    format!("study:{id}")
}

/// The columns of a [`StudyRow`], in its fields' order (both stores read them so).
const STUDY_COLUMNS: &str = "id, name, budget, created_at, target, state, stop_reason, state_at, \
     budget_dir, submitted_at, stop_requested_at, identity, control, verdict, gate";

/// The columns of a [`FinalRun`] after its study, in its fields' order.
const RUN_COLUMNS: &str =
    "subject, seed, val_top1, top1, top5, loss, epochs, weights_path, val_correct, test_correct";

/// The columns of a [`Lease`], in its fields' order.
const LEASE_COLUMNS: &str = "id, scope, holder, acquired_at, renewed_at, expires_at, released_at";

/// Unix time in seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How a running trial ends. The guarded transitions are defined here once, for both
/// stores: the state each enters (from `running` only) and the columns it sets; a store
/// supplies only its SQL dialect's placeholders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ending<'a> {
    Complete {
        proxy_acc: f64,
        proxy_loss: f64,
    },
    Failed {
        error: &'a str,
    },
    EarlyStopped {
        proxy_acc: f64,
    },
    /// Stopped by a shutdown, to be run again.
    Interrupted,
}

/// A value an [`Ending`] writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Real(f64),
    Text(&'a str),
}

impl<'a> Ending<'a> {
    /// The one state a trial ends from.
    pub const FROM: TrialState = TrialState::Running;

    pub fn state(&self) -> TrialState {
        match self {
            Ending::Complete { .. } => TrialState::Complete,
            Ending::Failed { .. } => TrialState::Failed,
            Ending::EarlyStopped { .. } => TrialState::EarlyStopped,
            Ending::Interrupted => TrialState::Interrupted,
        }
    }

    /// The columns it sets besides the state, with their values (`now`: the time stamp).
    pub fn sets(&self, now: f64) -> Vec<(&'static str, Value<'a>)> {
        use Value::{Real, Text};
        match *self {
            Ending::Complete {
                proxy_acc,
                proxy_loss,
            } => vec![
                ("proxy_acc", Real(proxy_acc)),
                ("proxy_loss", Real(proxy_loss)),
                ("finished_at", Real(now)),
            ],
            Ending::Failed { error } => vec![("error", Text(error)), ("finished_at", Real(now))],
            Ending::EarlyStopped { proxy_acc } => {
                vec![("proxy_acc", Real(proxy_acc)), ("finished_at", Real(now))]
            }
            Ending::Interrupted => Vec::new(),
        }
    }

    /// The guarded UPDATE that sets `sets`: placeholders `arg(1)` .. `arg(n)` for their
    /// values and `arg(n + 1)` for the trial id.
    pub fn sql(&self, sets: &[(&str, Value)], arg: impl Fn(usize) -> String) -> String {
        let mut sql = format!("UPDATE trials SET state = '{}'", self.state().as_str());
        for (i, (column, _)) in sets.iter().enumerate() {
            sql += &format!(", {column} = {}", arg(i + 1));
        }
        sql + &format!(
            " WHERE id = {} AND state = '{}'",
            arg(sets.len() + 1),
            Self::FROM.as_str()
        )
    }
}

/// A trial store. Readers take `&self`; every write is one transaction.
pub trait Store: Send {
    /// Schema version of the open file.
    fn schema_version(&self) -> StoreResult<i64>;

    /// The study called `name`, created with `budget` (the budget file's text) if new.
    fn study(&mut self, name: &str, budget: &str) -> StoreResult<i64>;

    /// Queues a candidate; returns its trial id.
    fn enqueue(&mut self, study: i64, config: &str, cost: CandidateCost) -> StoreResult<i64>;

    /// Whether the study already holds a trial with exactly this config (any state but failed).
    fn has_config(&self, study: i64, config: &str) -> StoreResult<bool>;

    /// Takes the oldest queued trial of `study` for `worker` (queued -> running).
    fn claim(&mut self, study: i64, worker: &str) -> StoreResult<Option<Trial>>;

    /// An intermediate report (e.g. validation accuracy at a step) of a running trial.
    fn report(&mut self, trial: i64, step: i64, value: f64) -> StoreResult<()>;

    fn reports(&self, trial: i64) -> StoreResult<Vec<(i64, f64)>>;

    /// Ends a running trial (see [`Ending`]); any other state is a
    /// [`StoreError::Transition`].
    fn end(&mut self, trial: i64, ending: Ending<'_>) -> StoreResult<()>;

    fn complete(&mut self, trial: i64, proxy_acc: f64, proxy_loss: f64) -> StoreResult<()> {
        self.end(
            trial,
            Ending::Complete {
                proxy_acc,
                proxy_loss,
            },
        )
    }

    fn fail(&mut self, trial: i64, error: &str) -> StoreResult<()> {
        self.end(trial, Ending::Failed { error })
    }

    /// Stopped early by the search's rule, with the last accuracy seen.
    fn early_stop(&mut self, trial: i64, proxy_acc: f64) -> StoreResult<()> {
        self.end(trial, Ending::EarlyStopped { proxy_acc })
    }

    /// Marks a running trial interrupted (graceful shutdown).
    fn interrupt(&mut self, trial: i64) -> StoreResult<()> {
        self.end(trial, Ending::Interrupted)
    }

    /// On restart: running or interrupted trials go back to the queue, their partial
    /// reports dropped, except, with `keep_leased`, running ones whose worker process
    /// still holds a live lease (it goes on with them). Returns how many.
    fn requeue_unfinished(&mut self, study: i64, keep_leased: bool) -> StoreResult<usize>;

    /// Stores the study's cost target (JSON) and the budget text it comes from.
    fn set_study_target(&mut self, study: i64, target: &str, budget: &str) -> StoreResult<()>;

    /// Records where the study stands (and, when its search loop ended, why).
    fn set_study_state(
        &mut self,
        study: i64,
        state: StudyState,
        stop_reason: Option<&str>,
    ) -> StoreResult<()>;

    /// Every study in the file, oldest first.
    fn studies(&self) -> StoreResult<Vec<StudyRow>>;

    /// The study with id `id`, if any.
    fn study_row(&self, id: i64) -> StoreResult<Option<StudyRow>>;

    /// Validation values reported at `step` by the study's trials other than `except_trial`,
    /// whatever became of them (a rung compares a trial with all that reached it).
    fn values_at(&self, study: i64, step: i64, except_trial: i64) -> StoreResult<Vec<f64>>;

    /// Replaces the study's rung fidelity rows, in one transaction.
    fn record_rung_fidelity(&mut self, study: i64, rows: &[RungFidelity]) -> StoreResult<()>;

    fn rung_fidelity(&self, study: i64) -> StoreResult<Vec<RungFidelity>>;

    /// Records the full re-training of a completed trial (replacing an earlier one).
    fn record_final(&mut self, trial: i64, result: &FinalResult) -> StoreResult<()>;

    /// The final result of a trial, if it was re-trained.
    fn final_result(&self, trial: i64) -> StoreResult<Option<FinalResult>>;

    /// Records one seed's re-training of a final-stage subject (replacing an earlier one).
    fn record_final_run(&mut self, study: i64, run: &FinalRun) -> StoreResult<()>;

    /// Every final re-training of the study, by subject and seed.
    fn final_runs(&self, study: i64) -> StoreResult<Vec<FinalRun>>;

    /// Writes one of the study's JSON columns.
    fn set_study_json(&mut self, study: i64, column: StudyJson, json: &str) -> StoreResult<()>;

    fn trial(&self, id: i64) -> StoreResult<Trial>;

    /// All trials of a study in order.
    fn trials(&self, study: i64) -> StoreResult<Vec<Trial>>;

    /// Takes a queued trial of a running study for the worker process `worker`, with a
    /// lease of `lease_s` seconds (queued -> running). Studies share the workers: the
    /// trial comes from the study with the fewest running trials (the oldest study on a
    /// tie), and is that study's oldest queued trial.
    fn claim_any(&mut self, worker: &str, lease_s: f64) -> StoreResult<Option<Trial>>;

    /// Renews the lease of `trial` for `lease_s` seconds; false when `worker` no longer
    /// holds it (it expired and the trial was queued again, or the trial ended).
    fn heartbeat(&mut self, trial: i64, worker: &str, lease_s: f64) -> StoreResult<bool>;

    /// Queues again the study's running trials whose lease expired, dropping their
    /// partial reports; returns how many.
    fn requeue_expired(&mut self, study: i64) -> StoreResult<usize>;

    /// A running trial handed back by its worker (shutdown): queued again, its partial
    /// reports dropped.
    fn hand_back(&mut self, trial: i64) -> StoreResult<()>;

    /// Records the folder the study's budget paths resolve against.
    fn set_budget_dir(&mut self, study: i64, dir: &str) -> StoreResult<()>;

    /// Hands the study to a daemon: submitted now, state `submitted`, no stop asked.
    fn submit(&mut self, study: i64) -> StoreResult<()>;

    /// Asks the study's controller to stop proposing.
    fn request_stop(&mut self, study: i64) -> StoreResult<()>;

    /// Records the SHA-256 of the files the study reads (JSON).
    fn set_identity(&mut self, study: i64, identity: &str) -> StoreResult<()>;

    /// Deletes the study's queued trials (never started); returns how many.
    fn withdraw_queued(&mut self, study: i64) -> StoreResult<usize>;

    /// Reports of the study's running trials that wait for the controller's verdict:
    /// (trial, step, value).
    fn pending_verdicts(&self, study: i64) -> StoreResult<Vec<(i64, i64, f64)>>;

    /// The controller's early-stop verdict on the report of `trial` at `step`.
    fn set_verdict(&mut self, trial: i64, step: i64, stop: bool) -> StoreResult<()>;

    /// The verdict on that report, once the controller gave one.
    fn verdict(&self, trial: i64, step: i64) -> StoreResult<Option<bool>>;

    /// Takes the lease of `scope` for `holder` for `lease_s` seconds, in one
    /// transaction: `Ok(lease)` when the scope was free (never taken, released or
    /// expired), `Err(current)` naming who holds it.
    fn acquire_lease(
        &mut self,
        scope: &str,
        holder: &str,
        lease_s: f64,
    ) -> StoreResult<Result<Lease, Lease>>;

    /// Renews lease `id` for `lease_s` seconds from now; false when it no longer holds
    /// its scope (released, or taken over after it expired).
    fn renew_lease(&mut self, id: i64, lease_s: f64) -> StoreResult<bool>;

    /// Gives lease `id` up at once.
    fn release_lease(&mut self, id: i64) -> StoreResult<()>;

    /// Every holding of `scope`, oldest first (the last is the current or latest holder).
    fn leases(&self, scope: &str) -> StoreResult<Vec<Lease>>;
}

/// An open store of either kind; it derefs to [`Store`], and counts its reads of a
/// study's trial list (the controller's per-tick read: see [`TrialStore::trial_reads`]).
pub struct TrialStore {
    inner: Box<dyn Store>,
    trial_reads: std::sync::atomic::AtomicU64,
}

impl std::ops::Deref for TrialStore {
    type Target = dyn Store;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl std::ops::DerefMut for TrialStore {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.inner
    }
}

/// Whether `location` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres(location: &Path) -> bool {
    let s = location.to_string_lossy();
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl TrialStore {
    /// Opens (creating and migrating as needed) the store at `location`: a SQLite file,
    /// or a PostgreSQL URL.
    pub fn open(location: &Path) -> StoreResult<Self> {
        Ok(Self::of(if is_postgres(location) {
            Box::new(PgStore::open(&location.to_string_lossy(), false)?)
        } else {
            Box::new(SqliteStore::open(location)?)
        }))
    }

    fn of(inner: Box<dyn Store>) -> Self {
        Self {
            inner,
            trial_reads: Default::default(),
        }
    }

    /// Every trial of `study` ([`Store::trials`]), counted.
    pub fn trials(&self, study: i64) -> StoreResult<Vec<Trial>> {
        self.trial_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.trials(study)
    }

    /// How many times [`TrialStore::trials`] read a trial list since the store was opened.
    pub fn trial_reads(&self) -> u64 {
        self.trial_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens an existing store for reading only: every write is refused, and nothing is
    /// migrated (a store of another schema version is refused).
    pub fn open_read_only(location: &Path) -> StoreResult<Self> {
        Ok(Self::of(if is_postgres(location) {
            Box::new(PgStore::open(&location.to_string_lossy(), true)?)
        } else {
            Box::new(SqliteStore::open_read_only(location)?)
        }))
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
