//! The search controller (tokio). It asks the strategy for feasible points, queues them,
//! hands queued trials to workers (blocking threads, one per CPU worker or wgpu device,
//! or worker processes that claim them from the store), records every report and
//! result, gives the early-stop verdicts, stops on the budget, and re-trains the top
//! trials. SIGINT and SIGTERM stop proposing, mark running trials interrupted and return;
//! re-running the same budget resumes the study. A study runs in three parts: its start
//! (`start`), the dispatch loop (`dispatch`) and the final stage (`final_stage`); the
//! daemon (`search::daemon`) runs them for many studies at once.

use super::export::{best_trial, export_config};
use super::lease::{self, DEFAULT_LEASE_S, HeldLease, holder_name};
use super::problem::{Observation, Problem};
use super::space::Point;
use super::strategy::Strategy;
use crate::budget::Budget;
use crate::config::LayerConfig;
use crate::store::{
    FinalResult, StudyState, Trial, TrialState, TrialStore, is_postgres, study_scope,
};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod dispatch;
mod final_stage;
mod shutdown;
mod start;

pub use dispatch::Dispatched;
use dispatch::dispatch;
use final_stage::final_stage;
pub use shutdown::Signals;
use start::open_study;
pub use start::study_problem;

/// Trials kept queued for worker processes: one per running trial (so a worker that
/// finishes finds the next one waiting), and at least this many.
const EXTERNAL_QUEUE: usize = 4;
/// How often the controller looks at the store for stop requests...
const TICK: Duration = Duration::from_millis(250);
/// ... and, with worker processes, for their results and the reports that wait for a
/// verdict (a worker waits for it at each rung: see experiments/worker-scaling).
const EXTERNAL_TICK: Duration = Duration::from_millis(50);

/// Why the search loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `limits.max_trials` trials are finished.
    Budget,
    /// `limits.max_wall_hours` passed (counted from this run's start).
    WallLimit,
    /// SIGINT or SIGTERM.
    Signal,
    /// The strategy found no new feasible point.
    Exhausted,
    /// `rankprune stop` asked for it.
    Stopped,
}

/// What `search` prints at the end.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchOutcome {
    pub study: String,
    pub db: PathBuf,
    pub stopped: StopReason,
    pub counts: HashMap<&'static str, usize>,
    pub best: Option<Trial>,
    pub best_final: Option<FinalResult>,
    /// The final stage's verdict on the winner against the one-shot heuristic.
    pub verdict: Option<crate::search::verdict::Verdict>,
    pub export: Option<PathBuf>,
    pub seconds: f64,
    /// This run's dispatch loop: its ticks and the trial-list reads they made.
    pub dispatch: Dispatched,
}

/// Runs (or resumes) the study a budget file describes, in the foreground.
pub fn run_search(budget_path: &Path, progress: bool, allow_change: bool) -> Result<SearchOutcome> {
    let (budget, text) = Budget::load_with_text(budget_path)?;
    let lease = take_study(&budget, &text, &holder_name("search"), DEFAULT_LEASE_S)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Failure(format!("cannot start the runtime: {e}")))?;
    let out = rt.block_on(async {
        let signals = Signals::new()?;
        run_study(budget, text, lease, signals, progress, allow_change).await
    });
    // Without waiting for a trial thread abandoned after a signal (see `STOP_GRACE`).
    rt.shutdown_background();
    out
}

/// Checks the budget's inputs (data files, space and target, base weights), then takes
/// the controller lease of its study (creating its row if new), or refuses (exit code 2)
/// naming the process that holds it.
pub fn take_study(budget: &Budget, text: &str, holder: &str, lease_s: f64) -> Result<HeldLease> {
    // A budget that cannot work is refused before the store is touched.
    crate::search::daemon::check_inputs(budget)?;
    let db = &budget.study.db;
    if let Some(dir) = db.parent().filter(|_| !is_postgres(db)) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Failure(format!("{}: {e}", dir.display())))?;
    }
    let mut store = TrialStore::open(db)?;
    let id = store.study(&budget.study.name, text)?;
    let scope = study_scope(id);
    let mut taken = HeldLease::acquire(&mut store, db, &scope, holder, lease_s)?;
    // A controller of this machine that died (SIGKILL, a crash) leaves its lease to
    // expire; it can go at once.
    if let Err(l) = &taken
        && lease::gone_from_this_host(&l.holder)
    {
        tracing::warn!(study = %budget.study.name, last = %l.holder, "the study's last controller is gone: taking over");
        store.release_lease(l.id)?;
        taken = HeldLease::acquire(&mut store, db, &scope, holder, lease_s)?;
    }
    taken.map_err(|l| {
        Error::BadInput(format!(
            "{}: study {} is run by {}; wait for it to end, or `rankprune stop {}`",
            db.display(),
            budget.study.name,
            lease::describe(&l),
            budget.study.name
        ))
    })
}

/// Runs (or resumes) one study to its end: its start, the dispatch loop, the final stage.
/// `signals` stops it (and, in a daemon, every other study).
pub async fn run_study(
    budget: Budget,
    budget_text: String,
    lease: HeldLease,
    mut signals: Signals,
    progress: bool,
    allow_change: bool,
) -> Result<SearchOutcome> {
    let started = Instant::now();
    let Some((mut ctl, ctx)) = open_study(
        &budget,
        &budget_text,
        lease,
        &mut signals,
        progress,
        allow_change,
    )
    .await?
    else {
        return Err(Error::Failure(
            "interrupted while training the base model; no trial was run".into(),
        ));
    };
    let (stopped, dispatched) = dispatch(&mut ctl, &ctx, &mut signals, progress).await?;
    let (hits, misses) = ctx.cache.stats();
    tracing::info!(hits, misses, "Tucker factors reused across trials");

    let study = ctl.study;
    let reason = serde_json::to_value(stopped).expect("a stop reason serializes");
    let reason = reason.as_str();
    let mut finished = stopped != StopReason::Signal;
    if finished && (budget.final_stage.top_k > 0 || budget.final_stage.warm_starts > 0) {
        ctl.store
            .set_study_state(study, StudyState::FinalStage, reason)?;
        finished = final_stage(&mut ctl, &ctx, &budget, &mut signals, progress).await?;
    }
    let done = if !finished {
        StudyState::Interrupted
    } else {
        StudyState::Finished
    };
    ctl.lease.check()?;
    ctl.store.set_study_state(study, done, reason)?;
    outcome(&ctl, &budget, (stopped, dispatched), started)
}

struct Controller {
    store: TrialStore,
    study: i64,
    budget: Budget,
    problem: Problem,
    strategy: Box<dyn Strategy>,
    points: HashMap<i64, Point>,
    stop: Arc<AtomicBool>,
    /// The study's controller lease: while it holds, no other controller acts on it.
    lease: HeldLease,
    /// Whether the step-0 rung may stop trials (`search::gate`).
    gate_stops: bool,
}

impl Controller {
    /// Tells the strategy about a finished trial.
    fn observe(&mut self, t: &Trial) {
        let Some(point) = self.point_of(t) else {
            return;
        };
        let acc = match t.state {
            TrialState::Complete | TrialState::EarlyStopped => t.proxy_acc,
            _ => None,
        };
        self.strategy.observe(&Observation {
            point,
            acc,
            flops: t.cost.flops,
            params: t.cost.params,
        });
    }

    fn point_of(&mut self, t: &Trial) -> Option<Point> {
        if let Some(p) = self.points.get(&t.id) {
            return Some(p.clone());
        }
        let config = LayerConfig::from_json(&t.config, "<stored trial>").ok()?;
        match self.problem.point_of(&config) {
            Ok(p) => {
                self.points.insert(t.id, p.clone());
                Some(p)
            }
            Err(e) => {
                tracing::warn!(trial = t.number, "not a point of the current space: {e}");
                None
            }
        }
    }

    /// Queues new points until `want` trials wait or the budget is spent (`trials`: the
    /// study's trials as this tick read them). Returns
    /// whether the strategy is exhausted: asked for points, it proposed none. (Points it
    /// proposes that the store already holds, as a config two points share, are
    /// skipped: the next call asks again.)
    fn fill(&mut self, want: usize, trials: &[Trial]) -> Result<bool> {
        let queued = trials
            .iter()
            .filter(|t| t.state == TrialState::Queued)
            .count();
        let room = self.budget.limits.max_trials.saturating_sub(trials.len());
        let need = want.saturating_sub(queued).min(room);
        if need == 0 {
            return Ok(false);
        }
        let mut added = 0;
        for _ in 0..3 {
            let proposed = self.strategy.propose(need - added, &self.problem);
            if proposed.is_empty() {
                return Ok(added == 0);
            }
            for p in proposed {
                let config = serde_json::to_string(&self.problem.config(&p))
                    .expect("a config always serializes");
                if self.store.has_config(self.study, &config)? {
                    continue;
                }
                let cost = self.problem.candidate_cost(&p);
                let id = self.store.enqueue(self.study, &config, cost)?;
                self.points.insert(id, p);
                added += 1;
            }
            if added == need {
                break;
            }
        }
        if added > 0 {
            start::save_latency(&self.problem)?;
        }
        Ok(false)
    }
}

/// The search's summary once it stops: exports the best trial's config (beside a SQLite
/// store) and counts the trials by state.
fn outcome(
    ctl: &Controller,
    budget: &Budget,
    (stopped, dispatched): (StopReason, Dispatched),
    started: Instant,
) -> Result<SearchOutcome> {
    let db = budget.study.db.display().to_string();
    let study_row = super::export::pick_study(&ctl.store, &db, Some(&budget.study.name))?;
    let best = best_trial(&ctl.store, &study_row)?;
    let mut export = None;
    if let Some((t, _)) = &best {
        let path = budget.output_path(&format!("{}.best.json", budget.study.name));
        export_config(&ctl.store, &study_row, t, &db)?
            .save(&path)
            .map_err(|e| Error::Failure(format!("{}: {e}", path.display())))?;
        export = Some(path);
    }
    let trials = ctl.store.trials(ctl.study)?;
    let mut counts = HashMap::new();
    for t in &trials {
        *counts.entry(t.state.as_str()).or_insert(0) += 1;
    }
    Ok(SearchOutcome {
        study: budget.study.name.clone(),
        db: budget.study.db.clone(),
        stopped: if ctl.stop.load(Ordering::Relaxed) {
            StopReason::Signal
        } else {
            stopped
        },
        counts,
        best_final: best.as_ref().and_then(|b| b.1.clone()),
        best: best.map(|b| b.0),
        verdict: crate::search::verdict::stored_verdict(&study_row),
        export,
        seconds: started.elapsed().as_secs_f64(),
        dispatch: dispatched,
    })
}
