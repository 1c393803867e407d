//! A study's start: its data, base weights (trained first when the budget says so),
//! problem and strategy; its row in the store, with its target, folder, input identity
//! and state; the trials it already has, told to the strategy.

use super::shutdown::{bar, blocking, epoch_progress};
use super::{Controller, Signals};
use crate::budget::{Budget, ObjectiveKind, StrategyName};
use crate::compress::decompose::recommend_graph_ranks;
use crate::config::LayerConfig;
use crate::data::ImageSet;
use crate::device::parse_device;
use crate::graph::cost::count as graph_cost;
use crate::ladder::Context;
use crate::ladder::context::{load_base_weights, study_inputs};
use crate::network::Network;
use crate::search::anchored::Anchored;
use crate::search::identity::Identity;
use crate::search::lease::HeldLease;
use crate::search::problem::{Problem, Target};
use crate::search::space::{Point, Space, SpaceFile};
use crate::search::strategy;
use crate::store::{StudyJson, StudyState, TrialState, TrialStore};
use crate::train::{TrainConfig, train};
use crate::weights::Weights;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The base weights: loaded, or trained first when the budget says so.
pub(super) async fn base_weights(
    budget: &Budget,
    base: &Network,
    data: (&Arc<ImageSet>, &Arc<ImageSet>),
    signals: &mut Signals,
    progress: bool,
) -> Result<Option<Weights>> {
    let path = &budget.model.weights;
    let Some(epochs) = budget.model.epochs_to_train()? else {
        return Ok(Some(load_base_weights(budget, base)?));
    };
    tracing::info!(epochs, out = %path.display(), "training the base model");
    let stop = Arc::new(AtomicBool::new(false));
    let (base, train_set, val_set) = (base.clone(), data.0.clone(), data.1.clone());
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
            &base.graph,
            base.init_weights(seed),
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
    base: &Network,
    weights: &Weights,
    warm: bool,
) -> Result<Problem> {
    let vbmf = if space_file.needs_vbmf() || warm {
        Some(recommend_graph_ranks(&base.graph, weights, 0.0, |_| {})?)
    } else {
        None
    };
    let file = budget.search.space.display().to_string();
    let target = Target::from_objective(&graph_cost(&base.graph), &budget.objective);
    let space = match (&space_file.anchored, vbmf.as_deref()) {
        (Some(section), Some(vbmf)) => {
            crate::search::anchored::check_target(&target, &file)?;
            let calibration = budget.final_stage.control_calibration;
            Space::anchored(Anchored::resolve(
                section,
                &base.graph,
                weights,
                vbmf,
                calibration,
                &file,
            )?)
        }
        _ => space_file.resolve(&base.graph, vbmf.as_deref(), &file)?,
    };
    let mut problem = Problem::new(base.clone(), space, target);
    attach_latency(budget, &mut problem, &file)?;
    if problem.space.anchored.is_some() {
        check_anchor(budget, &problem, &file)?;
    }
    if let Some(v) = vbmf.as_deref().filter(|_| warm) {
        let heuristic = crate::search::warm::warm_start(&problem, weights, v)?;
        // Given configs first (another study's winner to refine), then the heuristic's.
        let mut points = given_warm_starts(budget, &problem)?;
        let fresh: Vec<Point> = heuristic
            .into_iter()
            .filter(|p| !points.contains(p))
            .collect();
        points.extend(fresh);
        problem.warm_starts = points;
        tracing::info!(points = problem.warm_starts.len(), "warm-start points");
    }
    Ok(problem)
}

/// With `objective.target_latency_reduction`, gives the problem the study's latency
/// table (read from its file when measured on this machine at this batch size, else
/// measured now, layer by layer) and the latency bound: the base model's predicted
/// latency over the reduction. Refuses a target that even the space's most compressed
/// model misses.
fn attach_latency(budget: &Budget, problem: &mut Problem, space: &str) -> Result<()> {
    let Some(reduction) = budget.objective.target_latency_reduction else {
        return Ok(());
    };
    let path = budget.latency_table();
    let batch = budget.objective.latency_batch;
    let table = crate::model::latency::LatencyTable::open(&path, batch)
        .map_err(|e| Error::BadInput(format!("objective.latency_table: {e}")))?;
    let latency = crate::search::problem::Latency {
        table: Arc::new(std::sync::Mutex::new(table)),
        path,
    };
    let base_us = latency.predict_us(&problem.base.graph);
    let bound = (base_us as f64 / reduction).floor() as u64;
    problem.target.max_latency_us = Some(bound);
    problem.latency = Some(latency);
    let cheapest = problem.cheapest_point();
    let cheapest_us = problem.latency_us(&cheapest).expect("a latency table");
    save_latency(problem)?;
    tracing::info!(
        base_ms = base_us as f64 / 1e3,
        bound_ms = bound as f64 / 1e3,
        batch,
        "latency target"
    );
    if cheapest_us > bound {
        return Err(Error::BadInput(format!(
            "objective.target_latency_reduction = {reduction}: the most compressed model of {space} reaches {:.2}x lower latency ({:.3} ms against the base's {:.3} ms at batch {batch}); no point can meet it",
            base_us as f64 / cheapest_us.max(1) as f64,
            cheapest_us as f64 / 1e3,
            base_us as f64 / 1e3,
        )));
    }
    Ok(())
}

/// Writes the problem's latency table (if it has one) to its file.
pub fn save_latency(problem: &Problem) -> Result<()> {
    match &problem.latency {
        Some(l) => l
            .save()
            .map_err(|e| Error::Failure(format!("latency table {}: {e}", l.path.display()))),
        None => Ok(()),
    }
}

/// Refuses an anchored space whose anchor, the heuristic's own config, is off the
/// study's target: every other point is a move away from it.
fn check_anchor(budget: &Budget, problem: &Problem, file: &str) -> Result<()> {
    let a = problem.space.anchored.as_ref().expect("an anchored space");
    let anchor = a.heuristic_point();
    let c = problem.cost(&anchor);
    if problem.admits(&anchor, &c) {
        return Ok(());
    }
    Err(Error::BadInput(format!(
        "{file}: the heuristic's own config (VBMF at final.control_calibration = {}, then SLAMP, at most {} of any conv's filters) reaches {:.2}x fewer FLOPs, {:.2}x fewer params: not on the study's target ({}); a calibration nearer the target is needed",
        budget.final_stage.control_calibration,
        a.max_ratio(),
        problem.base_cost.flops as f64 / c.flops.max(1) as f64,
        problem.base_cost.params as f64 / c.params.max(1) as f64,
        problem.target,
    )))
}

/// The points of `search.warm_configs` (those a point of the space fits; the others are
/// logged and left out).
fn given_warm_starts(budget: &Budget, problem: &Problem) -> Result<Vec<Point>> {
    let mut given = Vec::new();
    for path in &budget.search.warm_configs {
        let config = LayerConfig::load(path)
            .map_err(|e| Error::BadInput(format!("search.warm_configs: {e}")))?;
        match crate::search::warm::snapped(problem, &config) {
            Ok(p) if !given.contains(&p) => given.push(p),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                config = %path.display(),
                "search.warm_configs: not proposed: {e}"
            ),
        }
    }
    Ok(given)
}

/// Opens (or resumes) the study of `budget` in its store, ready for [`super::dispatch`]:
/// None when a signal interrupted the base model's training.
pub(super) async fn open_study(
    budget: &Budget,
    budget_text: &str,
    lease: HeldLease,
    signals: &mut Signals,
    progress: bool,
    allow_change: bool,
) -> Result<Option<(Controller, Context)>> {
    let (base, train_set, val_set) = study_inputs(budget)?;
    // Its inputs were checked before its lease was taken (`take_study`, the daemon's
    // `daemon_budget`).
    let space_file = SpaceFile::load(&budget.search.space)?;
    let Some(weights) =
        base_weights(budget, &base, (&train_set, &val_set), signals, progress).await?
    else {
        return Ok(None);
    };
    let warm = budget.search.strategy != StrategyName::Random;
    // The slow part of the start (VBMF ranks, warm starts, hashing the inputs) runs off
    // the runtime's threads, which a daemon shares among its studies.
    let weights = Arc::new(weights);
    let (b, arch, w) = (budget.clone(), base.clone(), weights.clone());
    let (problem, identity) = tokio::task::spawn_blocking(move || -> Result<_> {
        let problem = study_problem(&b, &space_file, &arch, &w, warm)?;
        Ok((problem, Identity::of(&b)?))
    })
    .await
    .map_err(|e| Error::Failure(format!("study start: {e}")))??;
    lease.check()?;
    let gate = crate::search::gate::decide(budget)?;
    let (mut store, study, requeued) = register(
        budget,
        budget_text,
        &problem.target,
        &identity,
        allow_change,
    )?;
    if let Some(g) = &gate {
        tracing::info!(study = %budget.study.name, "{}", g.describe());
        let json = serde_json::to_string(g).expect("a gate decision serializes");
        store.set_study_json(study, StudyJson::Gate, &json)?;
    }
    let mut ctl = Controller {
        store,
        study,
        budget: budget.clone(),
        problem,
        strategy: strategy::make(
            budget.search.strategy,
            budget.search.seed,
            budget.objective.kind == ObjectiveKind::Pareto,
        ),
        points: HashMap::new(),
        stop: Arc::new(AtomicBool::new(false)),
        lease,
        gate_stops: gate.is_none_or(|g| g.stops),
    };
    let finished = ctl.replay()?;
    tracing::info!(
        study = %budget.study.name,
        db = %budget.study.db.display(),
        knobs = ctl.problem.space.dims(),
        finished,
        requeued,
        "search starts"
    );
    let ctx = Context::new(budget, base, weights, train_set, val_set);
    Ok(Some((ctl, ctx)))
}

/// The study's row in its store, made ready to run: its target settled, its input
/// identity and budget folder recorded, its unfinished trials queued again (except
/// those worker processes still hold). Returns the store, the study's id and how many
/// trials were queued again.
fn register(
    budget: &Budget,
    budget_text: &str,
    target: &Target,
    identity: &Identity,
    allow_change: bool,
) -> Result<(TrialStore, i64, usize)> {
    let mut store = TrialStore::open(&budget.study.db)?;
    let study = store.study(&budget.study.name, budget_text)?;
    let stored = crate::search::export::pick_study(&store, "", Some(&budget.study.name))?;
    settle_target(&mut store, &stored, target, budget_text, allow_change)
        .map_err(|e| Error::BadInput(format!("{}: {e}", budget.study.db.display())))?;
    if stored.budget != budget_text {
        tracing::warn!(
            study = %budget.study.name,
            "the budget file changed since the study began; continuing with the new one"
        );
    }
    let identity = identity.to_json();
    if stored.identity.as_ref().is_some_and(|old| *old != identity) {
        tracing::warn!(
            study = %budget.study.name,
            "the base weights or data files changed since the study began; workers now check against the new ones"
        );
    }
    store.set_identity(study, &identity)?;
    // Trials that worker processes still hold go on; the rest are queued again.
    let requeued = store.requeue_unfinished(study, budget.workers.processes)?;
    let dir = std::fs::canonicalize(&budget.dir).unwrap_or_else(|_| budget.dir.clone());
    store.set_budget_dir(study, &dir.display().to_string())?;
    store.set_study_state(study, StudyState::Running, None)?;
    Ok((store, study, requeued))
}

impl Controller {
    /// Tells the strategy the study's history: its finished trials, and the unfinished
    /// ones it must not propose again. Returns how many were finished.
    fn replay(&mut self) -> Result<usize> {
        let history = self.store.trials(self.study)?;
        for t in &history {
            match t.state {
                TrialState::Complete | TrialState::EarlyStopped | TrialState::Failed => {
                    self.observe(t)
                }
                TrialState::Queued | TrialState::Running | TrialState::Interrupted => {
                    if let Some(p) = self.point_of(t) {
                        self.strategy.exclude(&p);
                    }
                }
            }
        }
        Ok(history.iter().filter(|t| t.finished_at.is_some()).count())
    }
}
