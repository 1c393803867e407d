//! The daemon: `rankprune serve --db STORE` runs every study submitted to the store
//! (`rankprune submit`), each as its own controller task (start, dispatch loop, final
//! stage) that leaves its trials to worker processes, until SIGINT/SIGTERM.
//! `rankprune stop` asks one study's controller to stop proposing.

use super::budget::Budget;
use super::controller::{SearchOutcome, Signals, run_study};
use super::export::pick_study;
use super::space::SpaceFile;
use crate::data::{ImageSet, Split};
use crate::store::{StudyRow, StudyState, TrialStore, is_postgres};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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

/// Checks what a daemon on this machine will need before it takes the study: the budget,
/// its search space, its base weights (or a way to train them) and its training files.
fn check_budget(budget: &Budget) -> Result<()> {
    super::precheck::check_space(budget, &SpaceFile::load(&budget.search.space)?)?;
    budget.model.epochs_to_train()?;
    for f in ImageSet::source_files(&budget.data.dir, budget.data.dataset, Split::Train)
        .map_err(|e| Error::BadInput(format!("data: {e}")))?
    {
        if !f.exists() {
            return Err(Error::BadInput(format!(
                "data: {}: no such file",
                f.display()
            )));
        }
    }
    Ok(())
}

/// Hands the study of `budget_path` to the daemon serving `db` (the budget's own
/// `study.db` is not used). A new study, or an interrupted one with the same budget, is
/// accepted; an active or finished one is refused.
pub fn submit(budget_path: &Path, db: &Path) -> Result<Submitted> {
    let (budget, text) = Budget::load_with_text(budget_path)?;
    check_budget(&budget)?;
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
/// final stage runs). A study no controller runs (submitted and not yet started, or
/// interrupted) is marked finished at once. Returns its state after the request.
pub fn request_stop(db: &Path, name: &str) -> Result<StudyState> {
    let mut store = TrialStore::open(db)?;
    let row = pick_study(&store, &db.display().to_string(), Some(name))?;
    match row.state {
        Some(StudyState::Finished) => Err(Error::BadInput(format!(
            "{}: study {name} is already finished",
            db.display()
        ))),
        Some(StudyState::Running | StudyState::FinalStage) => {
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
/// processes (the daemon runs none itself; long runs use this machine's CPU).
fn daemon_budget(row: &StudyRow, db: &Path) -> Result<Budget> {
    let mut budget = Budget::from_toml(&row.budget, &format!("study {}", row.name))?;
    let dir = row
        .budget_dir
        .as_deref()
        .ok_or_else(|| Error::BadInput(format!("study {}: no budget folder recorded", row.name)))?;
    budget.resolve_paths(Path::new(dir));
    budget.study.db = db.to_path_buf();
    budget.workers.cpu = 0;
    budget.workers.wgpu.clear();
    budget.workers.processes = true;
    Ok(budget)
}

/// Runs the daemon until SIGINT/SIGTERM; returns the outcomes of the studies that ended.
pub fn run_serve(db: &Path) -> Result<Vec<SearchOutcome>> {
    if !db.exists() && !is_postgres(db) {
        tracing::info!(db = %db.display(), "no such store yet: it is created");
    }
    drop(TrialStore::open(db)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Failure(format!("cannot start the runtime: {e}")))?;
    rt.block_on(serve(db.to_path_buf()))
}

type StudyTask = tokio::task::JoinHandle<Result<SearchOutcome>>;

/// Starts every submitted study that no task runs and that did not already end in this
/// daemon since its last submission (`ended` maps it to that submission's time).
fn pick_up(
    store: &mut TrialStore,
    db: &Path,
    tasks: &mut HashMap<i64, (String, StudyTask)>,
    ended: &HashMap<i64, f64>,
    signals: &Signals,
) -> Result<()> {
    for row in store.studies()? {
        let Some(submitted) = row.submitted_at else {
            continue;
        };
        if tasks.contains_key(&row.id)
            || ended.get(&row.id) == Some(&submitted)
            || row.state == Some(StudyState::Finished)
        {
            continue;
        }
        let budget = match daemon_budget(&row, db) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(study = %row.name, "cannot run the study: {e}");
                store.set_study_state(row.id, StudyState::Interrupted, Some("error"))?;
                continue;
            }
        };
        tracing::info!(study = %row.name, id = row.id, "study starts");
        let task = tokio::spawn(run_study(
            budget,
            row.budget.clone(),
            signals.clone(),
            false,
            false,
        ));
        tasks.insert(row.id, (row.name.clone(), task));
    }
    Ok(())
}

async fn serve(db: PathBuf) -> Result<Vec<SearchOutcome>> {
    let mut signals = Signals::new()?;
    let mut store = TrialStore::open(&db)?;
    let mut tasks: HashMap<i64, (String, StudyTask)> = HashMap::new();
    let mut ended: HashMap<i64, f64> = HashMap::new();
    let mut outcomes = Vec::new();
    tracing::info!(db = %db.display(), "the daemon serves the store");
    loop {
        if !signals.received() {
            pick_up(&mut store, &db, &mut tasks, &ended, &signals)?;
        }
        let done: Vec<i64> = tasks
            .iter()
            .filter(|(_, (_, t))| t.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let (name, task) = tasks.remove(&id).expect("listed");
            match task.await {
                Ok(Ok(o)) => {
                    tracing::info!(study = %name, stopped = ?o.stopped, "study ends");
                    outcomes.push(o);
                }
                Ok(Err(e)) => {
                    tracing::error!(study = %name, "study failed: {e}");
                    store.set_study_state(id, StudyState::Interrupted, Some("error"))?;
                }
                Err(e) => tracing::error!(study = %name, "study task: {e}"),
            }
            let submitted = store
                .studies()?
                .iter()
                .find(|s| s.id == id)
                .and_then(|s| s.submitted_at);
            ended.insert(id, submitted.unwrap_or_default());
        }
        if signals.received() && tasks.is_empty() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = signals.recv(), if !signals.received() => {
                tracing::warn!(studies = tasks.len(), "signal received: the daemon stops its studies");
            }
        }
    }
    Ok(outcomes)
}
