//! The daemon: `rankprune serve --db STORE` runs every study submitted to the store
//! (`rankprune submit`), each as its own controller task (start, dispatch loop, final
//! stage) that leaves its trials to worker processes, until SIGINT/SIGTERM.
//! `rankprune stop` asks one study's controller to stop proposing.

use super::controller::{SearchOutcome, Signals, run_study};
use super::export::pick_study;
use super::lease::{HeldLease, holder_name, live_holder};
use super::space::SpaceFile;
use crate::budget::Budget;
use crate::data::Split;
use crate::store::{DAEMON_SCOPE, StudyRow, StudyState, TrialStore, is_postgres, study_scope};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the daemon looks for submitted studies.
const POLL: Duration = Duration::from_millis(500);

/// What `submit` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Submitted {
    pub study: String,
    pub id: i64,
    pub db: PathBuf,
    /// Whether the study existed (an interrupted one, submitted again to resume).
    pub resumed: bool,
}

/// Checks, before any work, what a study needs (for `submit`, and `search` before it
/// touches the store): its training files, its search space and reachable target, and
/// its base weights (or a way to train them).
pub(crate) fn check_inputs(budget: &Budget) -> Result<()> {
    for f in budget
        .source()
        .files(Split::Train)
        .map_err(|e| Error::BadInput(format!("data: {e}")))?
    {
        if !f.exists() {
            return Err(Error::BadInput(format!(
                "data: {}: cannot read: no such file",
                f.display()
            )));
        }
    }
    super::precheck::check_space(budget, &SpaceFile::load(&budget.search.space)?)?;
    budget.model.epochs_to_train()?;
    Ok(())
}

/// Hands the study of `budget_path` to the daemon serving `db` (the budget's own
/// `study.db` is not used). A new study, or an interrupted one with the same budget, is
/// accepted; an active or finished one is refused.
pub fn submit(budget_path: &Path, db: &Path) -> Result<Submitted> {
    let (budget, text) = Budget::load_with_text(budget_path)?;
    check_inputs(&budget)?;
    let mut store = TrialStore::open(db)?;
    let name = &budget.study.name;
    let existing = store.studies()?.into_iter().find(|s| &s.name == name);
    if let Some(row) = &existing {
        let state = row.state.map_or("ended", |s| s.as_str());
        if !matches!(row.state, Some(StudyState::Interrupted) | None) {
            return Err(Error::BadInput(format!(
                "{}: study {name} is {state}; give the budget another study.name",
                db.display()
            )));
        }
        if row.budget != text {
            return Err(Error::BadInput(format!(
                "{}: study {name} was started with another budget; give this one another study.name",
                db.display()
            )));
        }
    }
    let id = store.study(name, &text)?;
    let dir = std::fs::canonicalize(&budget.dir).unwrap_or_else(|_| budget.dir.clone());
    store.set_budget_dir(id, &dir.display().to_string())?;
    store.submit(id)?;
    tracing::info!(study = %name, id, "submitted");
    Ok(Submitted {
        study: name.clone(),
        id,
        db: db.to_path_buf(),
        resumed: existing.is_some(),
    })
}

/// Asks study `name`'s controller to stop proposing (its running trials finish, its
/// final stage runs). A study no live controller runs (submitted and not yet started,
/// interrupted, or left running by a controller that died) is marked finished at once.
/// Returns its state after the request.
pub fn request_stop(db: &Path, name: &str) -> Result<StudyState> {
    let mut store = TrialStore::open(db)?;
    let row = pick_study(&store, &db.display().to_string(), Some(name))?;
    match row.state {
        Some(StudyState::Finished) => Err(Error::BadInput(format!(
            "{}: study {name} is already finished",
            db.display()
        ))),
        Some(StudyState::Running | StudyState::FinalStage)
            if live_holder(&store, &study_scope(row.id))?.is_some() =>
        {
            store.request_stop(row.id)?;
            Ok(row.state.expect("matched"))
        }
        _ => {
            store.request_stop(row.id)?;
            store.set_study_state(row.id, StudyState::Finished, Some("stopped"))?;
            Ok(StudyState::Finished)
        }
    }
}

/// A submitted study's budget as the daemon runs it: its paths resolved against the
/// folder `submit` recorded, its store the daemon's, and its trials left to worker
/// processes (the daemon runs none itself; long runs use this machine's CPU); its
/// inputs checked again, as they may have changed since `submit`.
fn daemon_budget(row: &StudyRow, db: &Path) -> Result<Budget> {
    if row.budget_dir.is_none() {
        return Err(Error::BadInput(format!(
            "study {}: no budget folder recorded",
            row.name
        )));
    }
    let mut budget = Budget::of_study(row)?;
    budget.study.db = db.to_path_buf();
    budget.workers.cpu = 0;
    budget.workers.wgpu.clear();
    budget.workers.processes = true;
    check_inputs(&budget)?;
    Ok(budget)
}

/// Runs the daemon until SIGINT/SIGTERM; returns the outcomes of the studies that ended.
/// Another daemon active on the store makes this one a standby that takes over once the
/// other's lease (`lease_s` seconds) expires.
pub fn run_serve(db: &Path, lease_s: f64) -> Result<Vec<SearchOutcome>> {
    if !db.exists() && !is_postgres(db) {
        tracing::info!(db = %db.display(), "no such store yet: it is created");
    }
    drop(TrialStore::open(db)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Failure(format!("cannot start the runtime: {e}")))?;
    rt.block_on(serve(db.to_path_buf(), lease_s))
}

/// A study this daemon runs: its name, its controller task, and whether the task lost
/// the study's lease (then it must not write the study's state).
struct Running {
    name: String,
    task: tokio::task::JoinHandle<Result<SearchOutcome>>,
    lost: Arc<AtomicBool>,
}

/// What the daemon keeps between polls.
struct Daemon {
    db: PathBuf,
    store: TrialStore,
    holder: String,
    lease_s: f64,
    tasks: HashMap<i64, Running>,
    /// Studies that ended in this daemon, with the submission time they ended under.
    ended: HashMap<i64, f64>,
    outcomes: Vec<SearchOutcome>,
}

impl Daemon {
    /// Starts every submitted study that no task runs, that did not already end here
    /// since its last submission, and whose controller lease it can take (a study whose
    /// last controller died is taken once that lease expires).
    fn pick_up(&mut self, signals: &Signals) -> Result<()> {
        for row in self.store.studies()? {
            let Some(submitted) = row.submitted_at else {
                continue;
            };
            if self.tasks.contains_key(&row.id)
                || self.ended.get(&row.id) == Some(&submitted)
                || row.state == Some(StudyState::Finished)
            {
                continue;
            }
            let scope = study_scope(row.id);
            if let Some(l) = live_holder(&self.store, &scope)? {
                tracing::debug!(study = %row.name, holder = %l.holder, "held by another controller");
                continue;
            }
            let budget = match daemon_budget(&row, &self.db) {
                Ok(b) => b,
                Err(e) => {
                    // Not tried again until it is submitted again.
                    tracing::error!(study = %row.name, "cannot run the study: {e}");
                    self.store
                        .set_study_state(row.id, StudyState::Interrupted, Some("error"))?;
                    self.ended.insert(row.id, submitted);
                    continue;
                }
            };
            let lease = match HeldLease::acquire(
                &mut self.store,
                &self.db,
                &scope,
                &self.holder,
                self.lease_s,
            )? {
                Ok(l) => l,
                Err(_) => continue,
            };
            tracing::info!(study = %row.name, id = row.id, "study starts");
            let lost = lease.lost_flag();
            let task = tokio::spawn(run_study(
                budget,
                row.budget.clone(),
                lease,
                signals.clone(),
                false,
                false,
            ));
            self.tasks.insert(
                row.id,
                Running {
                    name: row.name.clone(),
                    task,
                    lost,
                },
            );
        }
        Ok(())
    }

    /// Collects the studies whose controller task ended.
    async fn reap(&mut self) -> Result<()> {
        let done: Vec<i64> = self
            .tasks
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let r = self.tasks.remove(&id).expect("listed");
            match r.task.await {
                Ok(Ok(o)) => {
                    tracing::info!(study = %r.name, stopped = ?o.stopped, "study ends");
                    self.outcomes.push(o);
                }
                Ok(Err(e)) if r.lost.load(Ordering::Relaxed) => {
                    tracing::error!(study = %r.name, "study left to another controller: {e}")
                }
                Ok(Err(e)) => {
                    tracing::error!(study = %r.name, "study failed: {e}");
                    self.store
                        .set_study_state(id, StudyState::Interrupted, Some("error"))?;
                }
                Err(e) => tracing::error!(study = %r.name, "study task: {e}"),
            }
            let submitted = self.store.study_row(id)?.and_then(|s| s.submitted_at);
            self.ended.insert(id, submitted.unwrap_or_default());
        }
        Ok(())
    }
}

/// Waits until this daemon holds the store's daemon lease (None: a signal came first).
async fn become_active(
    db: &Path,
    holder: &str,
    lease_s: f64,
    signals: &mut Signals,
) -> Result<Option<HeldLease>> {
    let mut store = TrialStore::open(db)?;
    let mut told = false;
    loop {
        // A standby reads who holds the store, and tries to take it only once it is free.
        let attempt = match live_holder(&store, DAEMON_SCOPE)? {
            Some(current) => Err(current),
            None => HeldLease::acquire(&mut store, db, DAEMON_SCOPE, holder, lease_s)?,
        };
        match attempt {
            Ok(l) => {
                tracing::info!(db = %db.display(), "the daemon serves the store");
                return Ok(Some(l));
            }
            Err(current) if !told => {
                tracing::warn!(
                    db = %db.display(),
                    active = %super::lease::describe(&current),
                    "another daemon serves the store: standing by, to take over when its lease expires"
                );
                told = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(lease_s / 3.0)) => {}
            _ = signals.recv() => return Ok(None),
        }
    }
}

async fn serve(db: PathBuf, lease_s: f64) -> Result<Vec<SearchOutcome>> {
    let mut signals = Signals::new()?;
    let holder = holder_name("serve");
    let Some(active) = become_active(&db, &holder, lease_s, &mut signals).await? else {
        return Ok(Vec::new());
    };
    let mut d = Daemon {
        store: TrialStore::open(&db)?,
        db,
        holder,
        lease_s,
        tasks: HashMap::new(),
        ended: HashMap::new(),
        outcomes: Vec::new(),
    };
    loop {
        if active.lost() {
            for r in d.tasks.values() {
                r.task.abort();
            }
            active.check()?;
        }
        if !signals.received() {
            d.pick_up(&signals)?;
        }
        d.reap().await?;
        if signals.received() && d.tasks.is_empty() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = signals.recv(), if !signals.received() => {
                tracing::warn!(studies = d.tasks.len(), "signal received: the daemon stops its studies");
            }
        }
    }
    Ok(d.outcomes)
}
