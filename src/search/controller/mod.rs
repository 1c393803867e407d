//! The search controller (tokio): the only writer of the trial store. It asks the
//! strategy for feasible points, queues them, hands queued trials to workers (blocking
//! threads, one per CPU worker or wgpu device), records every report and result, applies
//! the early-stop rule, stops on the budget, and re-trains the top trials. SIGINT and
//! SIGTERM stop proposing, mark running trials interrupted and return; re-running the
//! same budget resumes the study.

use super::budget::{Budget, ObjectiveKind, StrategyName};
use super::export::{best_trial, export_config};
use super::finalists::finalists;
use super::problem::{Observation, Problem, Target};
use super::space::{Point, SpaceFile};
use super::strategy::{self, Strategy};
use super::trial::{TrialContext, TrialEnd, Verdict, run_trial};
use crate::arch::{Arch, ArchSpec};
use crate::compress::decompose::{TuckerCache, recommend_ranks};
use crate::config::LayerConfig;
use crate::cost;
use crate::data::{ImageSet, Split};
use crate::device::parse_device;
use crate::model::Vgg;
use crate::store::{
    CandidateCost, FinalResult, StudyState, Trial, TrialState, TrialStore, is_postgres,
};
use crate::train::{Control, TrainConfig, evaluate, train};
use crate::weights::Weights;
use crate::{Error, Result};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

/// Memory for Tucker factors shared by the trials (see [`TuckerCache`]).
mod final_stage;
mod shutdown;

use final_stage::final_stage;
use shutdown::{Signals, bar, blocking, epoch_progress};

const TUCKER_CACHE_BYTES: usize = 1 << 30;
/// Trials kept queued for worker processes when the controller has no workers of its own.
const EXTERNAL_QUEUE: usize = 4;
/// How often such a controller looks at the store.
const EXTERNAL_TICK: Duration = Duration::from_millis(250);

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
    pub export: Option<PathBuf>,
    pub seconds: f64,
}

/// Runs (or resumes) the study a budget file describes, in the foreground.
pub fn run_search(budget_path: &Path, progress: bool, allow_change: bool) -> Result<SearchOutcome> {
    let budget = Budget::load(budget_path)?;
    let text = std::fs::read_to_string(budget_path)
        .map_err(|e| Error::BadInput(format!("{}: cannot read: {e}", budget_path.display())))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Failure(format!("cannot start the runtime: {e}")))?;
    rt.block_on(search(budget, text, progress, allow_change))
}

/// The base weights: loaded, or trained first when the budget says so.
async fn base_weights(
    budget: &Budget,
    base: &Arch,
    data: (&Arc<ImageSet>, &Arc<ImageSet>),
    signals: &mut Signals,
    progress: bool,
) -> Result<Option<Weights>> {
    let path = &budget.model.weights;
    if path.exists() {
        let w = Weights::load(path)?.matched_to(base, &path.display().to_string())?;
        return Ok(Some(w));
    }
    let Some(epochs) = budget.model.train_epochs else {
        return Err(Error::BadInput(format!(
            "model.weights = {}: no such file (set model.train_epochs to train the base model first)",
            path.display()
        )));
    };
    tracing::info!(epochs, out = %path.display(), "training the base model");
    let stop = Arc::new(AtomicBool::new(false));
    let (arch, train_set, val_set) = (base.clone(), data.0.clone(), data.1.clone());
    let seed = budget.search.seed;
    let pb = bar(
        epochs as u64,
        "base model {bar:30} epoch {pos}/{len} {msg} [{elapsed}<{eta}]",
        progress,
    );
    let (stop_flag, bar) = (stop.clone(), pb.clone());
    let device = parse_device(&budget.workers.long_run_device())?;
    let (out, signalled) = blocking(signals, &stop, move || {
        let cfg = TrainConfig {
            epochs,
            seed,
            ..TrainConfig::default()
        };
        train(
            &arch,
            Weights::init(&arch, seed),
            train_set,
            val_set,
            &cfg,
            &device,
            epoch_progress(&bar, &stop_flag),
        )
    })
    .await?;
    pb.finish_and_clear();
    if signalled {
        return Ok(None);
    }
    let out = out?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Failure(format!("{}: {e}", dir.display())))?;
    }
    out.best_weights.save_safetensors(path)?;
    tracing::info!(
        val_top1 = out.best_val.as_ref().map(|v| v.top1),
        "base model written to {}",
        path.display()
    );
    Ok(Some(out.best_weights))
}

/// A worker slot: a device and the trial it runs.
struct Slot {
    name: String,
    device: Device,
    busy: Option<i64>,
}

enum Msg {
    Eval {
        trial: i64,
        step: usize,
        acc: f64,
        reply: oneshot::Sender<Verdict>,
    },
    Done {
        slot: usize,
        trial: i64,
        end: TrialEnd,
        seconds: f64,
    },
}

struct Controller {
    store: TrialStore,
    study: i64,
    budget: Budget,
    problem: Problem,
    strategy: Box<dyn Strategy>,
    points: HashMap<i64, Point>,
    stop: Arc<AtomicBool>,
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
        match self.problem.space.point_of(&config) {
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

    /// Queues new points until `want` trials wait or the budget is spent. Returns
    /// whether the strategy gave nothing new when asked.
    fn fill(&mut self, want: usize) -> Result<bool> {
        let trials = self.store.trials(self.study)?;
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
            for p in self.strategy.propose(need - added, &self.problem) {
                let config = serde_json::to_string(&self.problem.config(&p))
                    .expect("a config always serializes");
                if self.store.has_config(self.study, &config)? {
                    continue;
                }
                let c = self.problem.cost(&p);
                let id = self.store.enqueue(
                    self.study,
                    &config,
                    CandidateCost {
                        flops: c.flops,
                        params: c.params,
                        size_bytes: c.size_bytes,
                    },
                )?;
                self.points.insert(id, p);
                added += 1;
            }
            if added == need {
                break;
            }
        }
        Ok(added == 0)
    }
}

/// Fixes the study's target: stored when the study starts; a budget whose target differs
/// from the stored one is refused unless `allow_change`, which stores the new one (and
/// the new budget text) so every reader uses it.
fn settle_target(
    store: &mut TrialStore,
    study: &crate::store::StudyRow,
    target: &Target,
    budget_text: &str,
    allow_change: bool,
) -> std::result::Result<(), String> {
    let new = serde_json::to_string(target).expect("a target serializes");
    let old: Option<Target> = study
        .target
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok());
    match old {
        Some(old) if old == *target => Ok(()),
        Some(old) if !allow_change => Err(format!(
            "study {} was started with the target {old}; this budget asks for {target}. Run with --allow-budget-change to continue the study with the new target, or give the study a new name",
            study.name
        )),
        Some(old) => {
            tracing::warn!(study = %study.name, %old, new = %target, "the study's target changes");
            store
                .set_study_target(study.id, &new, budget_text)
                .map_err(|e| e.to_string())
        }
        None => store
            .set_study_target(study.id, &new, &study.budget)
            .map_err(|e| e.to_string()),
    }
}

/// The study's problem: its space (VBMF ranks of `weights` filled in where the space or
/// the warm start needs them), its cost target, and with `warm` the warm-start points.
pub fn study_problem(
    budget: &Budget,
    space_file: &SpaceFile,
    base: &Arch,
    weights: &Weights,
    warm: bool,
) -> Result<Problem> {
    let vbmf = if space_file.needs_vbmf() || warm {
        Some(recommend_ranks(base, weights, 0.0, |_| {})?)
    } else {
        None
    };
    let space = space_file.resolve(
        base,
        vbmf.as_deref(),
        &budget.search.space.display().to_string(),
    )?;
    let target = Target::from_objective(&cost::count(base), &budget.objective);
    let mut problem = Problem::new(base.clone(), space, target);
    if let Some(v) = vbmf.as_deref().filter(|_| warm) {
        problem.warm_starts = super::warm::warm_start(&problem, weights, v)?;
        tracing::info!(points = problem.warm_starts.len(), "warm-start points");
    }
    Ok(problem)
}

/// One slot per CPU worker and per wgpu device of the budget.
fn worker_slots(budget: &Budget) -> Result<Vec<Slot>> {
    let mut slots: Vec<Slot> = (0..budget.workers.cpu)
        .map(|i| Slot {
            name: format!("cpu{i}"),
            device: Device::flex(),
            busy: None,
        })
        .collect();
    for &id in &budget.workers.wgpu {
        slots.push(Slot {
            name: format!("wgpu:{id}"),
            device: parse_device(&format!("wgpu:{id}"))?,
            busy: None,
        });
    }
    Ok(slots)
}

/// The search's summary once it stops: exports the best trial's config (beside a SQLite
/// store) and counts the trials by state.
fn outcome(
    ctl: &Controller,
    budget: &Budget,
    stopped: StopReason,
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
        export,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn search(
    budget: Budget,
    budget_text: String,
    progress: bool,
    allow_change: bool,
) -> Result<SearchOutcome> {
    let started = Instant::now();
    let mut signals = Signals::new()?;
    let base = ArchSpec::parse(&budget.model.arch)?.build(budget.model.num_classes);
    let (train_set, val_set) = budget.train_val()?;
    let (train_set, val_set) = (Arc::new(train_set), Arc::new(val_set));
    let space_file = SpaceFile::load(&budget.search.space)?;
    // Check the space before any slow work (VBMF ranks are filled in below).
    if !space_file.needs_vbmf() {
        space_file.resolve(&base, None, &budget.search.space.display().to_string())?;
    }
    let Some(weights) = base_weights(
        &budget,
        &base,
        (&train_set, &val_set),
        &mut signals,
        progress,
    )
    .await?
    else {
        return Err(Error::Failure(
            "interrupted while training the base model; nothing was written".into(),
        ));
    };
    let warm = budget.search.strategy != StrategyName::Random;
    let problem = study_problem(&budget, &space_file, &base, &weights, warm)?;
    let strategy = strategy::make(
        budget.search.strategy,
        budget.search.seed,
        budget.objective.kind == ObjectiveKind::Pareto,
    );

    if let Some(dir) = budget
        .study
        .db
        .parent()
        .filter(|_| !is_postgres(&budget.study.db))
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Failure(format!("{}: {e}", dir.display())))?;
    }
    let mut store = TrialStore::open(&budget.study.db)?;
    let study = store.study(&budget.study.name, &budget_text)?;
    let stored = super::export::pick_study(&store, "", Some(&budget.study.name))?;
    settle_target(
        &mut store,
        &stored,
        &problem.target,
        &budget_text,
        allow_change,
    )
    .map_err(|e| Error::BadInput(format!("{}: {e}", budget.study.db.display())))?;
    if stored.budget != budget_text {
        tracing::warn!(
            study = %budget.study.name,
            "the budget file changed since the study began; continuing with the new one"
        );
    }
    let requeued = store.requeue_unfinished(study)?;
    let dir = std::fs::canonicalize(&budget.dir).unwrap_or_else(|_| budget.dir.clone());
    store.set_budget_dir(study, &dir.display().to_string())?;
    store.set_study_state(study, StudyState::Running, None)?;
    let mut ctl = Controller {
        store,
        study,
        budget: budget.clone(),
        problem,
        strategy,
        points: HashMap::new(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let history = ctl.store.trials(study)?;
    for t in &history {
        if matches!(
            t.state,
            TrialState::Complete | TrialState::EarlyStopped | TrialState::Failed
        ) {
            ctl.observe(t);
        }
    }
    tracing::info!(
        study = %budget.study.name,
        db = %budget.study.db.display(),
        knobs = ctl.problem.space.dims(),
        finished = history.iter().filter(|t| t.finished_at.is_some()).count(),
        requeued,
        "search starts"
    );

    let mut slots = worker_slots(&budget)?;
    let ctx = TrialContext {
        base: base.clone(),
        weights: Arc::new(weights),
        train: train_set.clone(),
        val: val_set.clone(),
        proxy: budget.proxy.clone(),
        seed: budget.search.seed,
        cache: Arc::new(TuckerCache::new(TUCKER_CACHE_BYTES)),
        repair: budget.search.repair,
    };
    let pb = bar(
        budget.limits.max_trials as u64,
        "trials {bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]",
        progress,
    );
    let refresh = |ctl: &Controller, pb: &ProgressBar| -> Result<()> {
        let trials = ctl.store.trials(ctl.study)?;
        let count = |s| trials.iter().filter(|t| t.state == s).count();
        let best = trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .filter_map(|t| t.proxy_acc.map(|a| (a, t)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        pb.set_position(trials.iter().filter(|t| t.finished_at.is_some()).count() as u64);
        pb.set_message(format!(
            "running {} · failed {} · early-stopped {} · best {}",
            count(TrialState::Running),
            count(TrialState::Failed),
            count(TrialState::EarlyStopped),
            best.map_or("-".into(), |(a, t)| format!(
                "{:.1}% (#{}, {:.1}x FLOPs)",
                100.0 * a,
                t.number,
                ctl.problem.base_cost.flops as f64 / t.cost.flops.max(1) as f64
            ))
        ));
        Ok(())
    };
    refresh(&ctl, &pb)?;

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let deadline = budget
        .limits
        .max_wall_hours
        .map(|h| tokio::time::Instant::now() + Duration::from_secs_f64(h * 3600.0));
    let mut stopping: Option<StopReason> = None;
    let mut exhausted = false;
    // With worker processes the controller keeps a few more trials queued for them and
    // looks at the store on a tick: their results, their expired leases.
    let external = budget.workers.processes;
    let mut observed: HashSet<i64> = history
        .iter()
        .filter(|t| t.finished_at.is_some())
        .map(|t| t.id)
        .collect();
    loop {
        if external {
            ctl.store.requeue_expired(study)?;
            for t in ctl.store.trials(study)? {
                if t.finished_at.is_some() && observed.insert(t.id) {
                    ctl.observe(&t);
                }
            }
        }
        if stopping.is_none() {
            let local = slots.iter().filter(|s| s.busy.is_none()).count();
            let idle = local + if external { EXTERNAL_QUEUE } else { 0 };
            if idle > 0 && !exhausted {
                exhausted = ctl.fill(idle)?;
            }
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.busy.is_some() {
                    continue;
                }
                let Some(trial) = ctl.store.claim(study, &slot.name)? else {
                    break;
                };
                let config = match LayerConfig::from_json(&trial.config, "<stored trial>") {
                    Ok(c) => c,
                    Err(e) => {
                        ctl.store
                            .fail(trial.id, &format!("stored config unreadable: {e}"))?;
                        continue;
                    }
                };
                slot.busy = Some(trial.id);
                tracing::debug!(trial = trial.number, worker = %slot.name, "trial starts");
                let (ctx, tx, stop, device) = (
                    ctx.clone(),
                    tx.clone(),
                    ctl.stop.clone(),
                    slot.device.clone(),
                );
                let id = trial.id;
                tokio::task::spawn_blocking(move || {
                    let t0 = Instant::now();
                    let eval_tx = tx.clone();
                    let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_trial(&ctx, &config, &device, &stop, |step, acc| {
                            let (reply, answer) = oneshot::channel();
                            let msg = Msg::Eval {
                                trial: id,
                                step,
                                acc,
                                reply,
                            };
                            if eval_tx.send(msg).is_err() {
                                return Verdict::Continue;
                            }
                            answer.blocking_recv().unwrap_or(Verdict::Continue)
                        })
                    }))
                    .unwrap_or_else(|p| {
                        let what = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        TrialEnd::Failed(format!("panic: {what}"))
                    });
                    let _ = tx.send(Msg::Done {
                        slot: i,
                        trial: id,
                        end,
                        seconds: t0.elapsed().as_secs_f64(),
                    });
                });
            }
            refresh(&ctl, &pb)?;
        }
        let running = if external {
            let trials = ctl.store.trials(study)?;
            trials
                .iter()
                .filter(|t| t.state == TrialState::Running)
                .count()
        } else {
            slots.iter().filter(|s| s.busy.is_some()).count()
        };
        if running == 0 {
            if stopping.is_some() {
                break;
            }
            let trials = ctl.store.trials(study)?;
            if trials.len() >= budget.limits.max_trials
                && trials.iter().all(|t| t.finished_at.is_some())
            {
                stopping = Some(StopReason::Budget);
                break;
            }
            if exhausted {
                stopping = Some(StopReason::Exhausted);
                break;
            }
        }
        tokio::select! {
            msg = rx.recv() => match msg.expect("the controller holds a sender") {
                Msg::Eval { trial, step, acc, reply } => {
                    ctl.store.report(trial, step as i64, acc)?;
                    let v = if stopping == Some(StopReason::Signal) {
                        Verdict::Continue
                    } else {
                        super::promotion::verdict(
                            &budget.proxy,
                            step,
                            acc,
                            &ctl.store.values_at(study, step as i64, trial)?,
                        )
                    };
                    let _ = reply.send(v);
                }
                Msg::Done { slot, trial, end, seconds } => {
                    slots[slot].busy = None;
                    match &end {
                        TrialEnd::Complete { acc, loss } => ctl.store.complete(trial, *acc, *loss)?,
                        TrialEnd::EarlyStopped { acc } => ctl.store.early_stop(trial, *acc)?,
                        TrialEnd::Failed(why) => ctl.store.fail(trial, why)?,
                        TrialEnd::Interrupted => ctl.store.interrupt(trial)?,
                    }
                    let t = ctl.store.trial(trial)?;
                    if end != TrialEnd::Interrupted && observed.insert(t.id) {
                        ctl.observe(&t);
                    }
                    match &end {
                        TrialEnd::Failed(why) => tracing::warn!(trial = t.number, seconds, "trial failed: {why}"),
                        _ => tracing::info!(trial = t.number, state = t.state.as_str(), acc = t.proxy_acc, seconds, "trial ends"),
                    }
                    refresh(&ctl, &pb)?;
                }
            },
            _ = tokio::time::sleep(EXTERNAL_TICK), if external => {
                refresh(&ctl, &pb)?;
            }
            _ = signals.recv(), if stopping != Some(StopReason::Signal) => {
                tracing::warn!("signal received: stopping; running trials are marked interrupted");
                stopping = Some(StopReason::Signal);
                ctl.stop.store(true, Ordering::Relaxed);
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if stopping.is_none() && deadline.is_some() => {
                tracing::info!("wall-time limit reached: running trials finish, no new ones start");
                stopping = Some(StopReason::WallLimit);
            }
        }
    }
    pb.finish_and_clear();
    let stopped = stopping.unwrap_or(StopReason::Budget);
    let (hits, misses) = ctx.cache.stats();
    tracing::info!(hits, misses, "Tucker factors reused across trials");

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
    ctl.store.set_study_state(study, done, reason)?;

    outcome(&ctl, &budget, stopped, started)
}
