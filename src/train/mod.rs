//! Training and evaluation with the reference recipe: SGD (momentum 0.9, dampening 0,
//! weight decay 5e-4), lr 0.01, batch 128, ReduceLROnPlateau on validation loss,
//! crop+flip augmentation; checkpoints at every epoch end and exact resume. A run cut far
//! shorter than the recipe's 100 epochs may decay its learning rate linearly to zero
//! instead ([`LrSchedule::Linear`]).

pub mod checkpoint;
pub mod distill;
pub mod metrics;
pub mod plateau;
pub mod recalibrate;
pub mod repair;

use crate::data::ImageSet;
use crate::data::batches::{Batch, EpochPlan, stream};
use crate::graph::Graph;
use crate::model::{GraphNet, graph_weight_shapes};
use crate::weights::Weights;
use crate::{Error, Result};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use checkpoint::{Checkpoint, TrainState};
use distill::Teacher;
pub use metrics::{EvalResult, evaluate, evaluate_each};
use plateau::PlateauConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Everything a training run needs besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// How the learning rate moves: ReduceLROnPlateau (the recipe) or a linear decay.
    #[serde(default)]
    pub schedule: LrSchedule,
    pub plateau: PlateauConfig,
    /// Stop after this many optimizer steps in total (proxy runs).
    pub max_steps: Option<usize>,
    /// Use only this many training images per epoch (proxy runs).
    pub subset: Option<usize>,
    /// Evaluate on the validation set every this many steps (besides each epoch end).
    pub eval_every: Option<usize>,
    /// And after these steps.
    #[serde(default)]
    pub eval_at: Vec<usize>,
    /// Validation images used by evaluations (all when `None`).
    pub eval_limit: Option<usize>,
    pub seed: u64,
    /// Write a checkpoint here at every epoch end.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `checkpoint_dir` (same epoch order and scheduler state).
    pub resume: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 128,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: LrSchedule::Plateau,
            plateau: PlateauConfig::default(),
            max_steps: None,
            subset: None,
            eval_every: None,
            eval_at: Vec::new(),
            eval_limit: None,
            seed: 0,
            checkpoint_dir: None,
            resume: false,
        }
    }
}

/// How the learning rate moves during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// ReduceLROnPlateau on the validation loss at every epoch end (the reference recipe).
    #[default]
    Plateau,
    /// From `lr` linearly down to zero over the run's planned steps, the schedule that
    /// serves a fixed step budget best (Li, Yumer and Ramanan, "Budgeted Training",
    /// ICLR 2020): a run cut short still ends annealed.
    Linear,
}

impl TrainConfig {
    /// Optimizer steps the run will take on a training set of `train_len` images: every
    /// epoch's batches (the last one may be short), capped by `max_steps`.
    pub fn planned_steps(&self, train_len: usize) -> usize {
        let images = self.subset.unwrap_or(train_len).min(train_len);
        let per_epoch = images.div_ceil(self.batch_size.max(1));
        let all = per_epoch.saturating_mul(self.epochs);
        self.max_steps.map_or(all, |m| m.min(all))
    }

    /// The learning rate of optimizer step `step` (counted from 0) of a run of `planned`
    /// steps, where ReduceLROnPlateau now stands at `plateau_lr`.
    pub fn lr_at(&self, step: usize, planned: usize, plateau_lr: f64) -> f64 {
        match self.schedule {
            LrSchedule::Plateau => plateau_lr,
            LrSchedule::Linear => self.lr * (1.0 - step as f64 / planned.max(1) as f64).max(0.0),
        }
    }
}

/// A progress report handed to the caller's callback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    /// Present on validation reports.
    pub val: Option<EvalResult>,
    pub images_per_s: f64,
    /// Share of the run's time the trainer waited for the next batch (data starvation).
    pub data_wait: f64,
}

/// What the callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Result of a training run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub weights: Weights,
    /// Weights with the best validation accuracy seen at an epoch end (or the last ones).
    pub best_weights: Weights,
    pub best_val: Option<EvalResult>,
    pub last_val: Option<EvalResult>,
    pub epochs_run: usize,
    pub steps: usize,
    pub stopped_early: bool,
}

fn sgd(cfg: &TrainConfig) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(cfg.momentum)
                .with_dampening(0.0),
        ))
        .with_weight_decay(
            (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32)),
        )
        .init()
}

/// A batch's images as `[n, 3, side, side]` on `device`.
pub fn images_tensor(b: &Batch, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(b.images.clone(), [b.len(), 3, b.side, b.side]),
        device,
    )
}

fn batch_tensors(b: &Batch, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let y = Tensor::from_data(TensorData::new(b.labels.clone(), [b.len()]), device);
    (images_tensor(b, device), y)
}

/// The teacher's logits for `batch` (inference, no gradient), on the training device.
fn teacher_logits(t: &Teacher, batch: &Batch, device: &Device, ad: &Device) -> Tensor<2> {
    let logits = t.model.forward(images_tensor(batch, device));
    Tensor::from_data(logits.into_data(), ad)
}

/// Trains `weights` (of `graph`: a VGG's [`crate::arch::Arch::graph`], a ResNet, an
/// imported model) on `train`, validating on `val`. With `cfg.resume`, the checkpoint in
/// `cfg.checkpoint_dir` replaces `weights` and the counters. `on_report` sees every
/// training and validation report and may stop the run.
pub fn train(
    graph: &Graph,
    weights: Weights,
    train: Arc<ImageSet>,
    val: Arc<ImageSet>,
    cfg: &TrainConfig,
    device: &Device,
    on_report: impl FnMut(&Report) -> Control,
) -> Result<TrainOutcome> {
    train_with(graph, weights, train, val, cfg, None, device, on_report)
}

/// Where a run starts: fresh, or from the checkpoint in `cfg.checkpoint_dir` when
/// `cfg.resume` (its weights, best weights, counters and optimizer state).
fn start(
    graph: &Graph,
    weights: Weights,
    cfg: &TrainConfig,
) -> Result<(Weights, Option<Weights>, TrainState, ModuleOptimizer)> {
    let optim = sgd(cfg);
    let state = TrainState::new(cfg.lr, cfg.plateau, cfg.seed);
    if !cfg.resume {
        return Ok((weights, None, state, optim));
    }
    let dir = cfg
        .checkpoint_dir
        .as_ref()
        .ok_or_else(|| Error::BadInput("--resume needs --checkpoint-dir".into()))?;
    let ck = Checkpoint::load(dir, graph_weight_shapes(graph))?;
    let optim = optim
        .load(dir.join(checkpoint::OPTIM_FILE))
        .map_err(|e| Error::Failure(format!("{}: {e:?}", dir.display())))?;
    if ck.state.seed != cfg.seed {
        tracing::warn!(
            checkpoint = ck.state.seed,
            given = cfg.seed,
            "resuming with the checkpoint's seed"
        );
    }
    tracing::info!(epoch = ck.state.epoch, step = ck.state.step, "resuming");
    Ok((ck.weights, ck.best_weights, ck.state, optim))
}

/// The training side of one epoch so far, and of the whole run.
struct Tally {
    loss_sum: f64,
    correct: usize,
    count: usize,
    /// Images seen since the run started, and when it started.
    seen: usize,
    started: std::time::Instant,
    /// Time spent waiting for batches from the data thread.
    waited: std::time::Duration,
}

impl Tally {
    fn new() -> Self {
        Self {
            loss_sum: 0.0,
            correct: 0,
            count: 0,
            seen: 0,
            started: std::time::Instant::now(),
            waited: std::time::Duration::ZERO,
        }
    }

    fn report(&self, state: &TrainState, lr: f64, val: Option<EvalResult>) -> Report {
        let elapsed = self.started.elapsed().as_secs_f64();
        Report {
            epoch: state.epoch,
            step: state.step,
            lr,
            train_loss: self.loss_sum / self.count.max(1) as f64,
            train_acc: self.correct as f64 / self.count.max(1) as f64,
            val,
            images_per_s: self.seen as f64 / elapsed.max(1e-9),
            data_wait: self.waited.as_secs_f64() / elapsed.max(1e-9),
        }
    }
}

/// What one optimizer step needs besides the model.
struct Stepper<'a> {
    optim: ModuleOptimizer,
    loss_fn: burn::nn::loss::CrossEntropyLoss,
    teacher: Option<&'a Teacher>,
    device: &'a Device,
    ad: Device,
}

impl Stepper<'_> {
    /// One SGD step on `batch` at learning rate `lr`: the model after it, the batch's
    /// mean loss and its top-1 hits. A non-finite loss is an error naming where.
    fn step(
        &mut self,
        model: GraphNet,
        batch: &Batch,
        lr: f64,
        state: &TrainState,
    ) -> Result<(GraphNet, f64, usize)> {
        let (x, y) = batch_tensors(batch, &self.ad);
        let logits = model.forward(x);
        let loss = match self.teacher {
            None => self.loss_fn.forward(logits.clone(), y),
            Some(t) => {
                let taught = teacher_logits(t, batch, self.device, &self.ad);
                distill::kd_loss(logits.clone(), taught, y, &t.distill, &self.loss_fn)
            }
        };
        // Read values from detached copies: the graph belongs to backward alone.
        let (loss_host, logits_host) = (loss.clone().detach(), logits.detach());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let loss_value = f64::from(loss_host.into_scalar::<f32>());
        if !loss_value.is_finite() {
            return Err(Error::Failure(format!(
                "non-finite training loss ({loss_value}) at epoch {} step {}: lower the learning rate",
                state.epoch, state.step
            )));
        }
        let model = self.optim.step(lr, model, grads);
        let host = logits_host
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        Ok((
            model,
            loss_value,
            metrics::top_k_correct(&host, &batch.labels, 1),
        ))
    }
}

/// Validation of the model being trained.
type Validate<'a> = dyn Fn(&GraphNet) -> Result<EvalResult> + 'a;

/// A run between its start and its outcome.
struct Run<'a> {
    cfg: &'a TrainConfig,
    stepper: Stepper<'a>,
    /// The model (taken by each step, which returns the next one).
    model: Option<GraphNet>,
    state: TrainState,
    best_weights: Option<Weights>,
    best_val: Option<EvalResult>,
    last_val: Option<EvalResult>,
    tally: Tally,
    /// The run's planned steps (the linear schedule's length).
    planned: usize,
}

impl Run<'_> {
    fn model(&self) -> &GraphNet {
        self.model.as_ref().expect("a model between steps")
    }

    /// One epoch's batches (seeded by the run's seed and the epoch); true when the step
    /// limit or `on_report` stopped the run.
    fn batches(
        &mut self,
        train: &Arc<ImageSet>,
        validate: &Validate,
        on_report: &mut impl FnMut(&Report) -> Control,
    ) -> Result<bool> {
        let (cfg, epoch) = (self.cfg, self.state.epoch as u64);
        let plan = EpochPlan {
            batch_size: cfg.batch_size,
            seed: Some(self.state.seed.wrapping_mul(1_000_003).wrapping_add(epoch)),
            limit: cfg.subset,
        };
        let t = &mut self.tally;
        (t.loss_sum, t.correct, t.count) = (0.0, 0, 0);
        let batches = stream(train.clone(), plan);
        loop {
            let asked = std::time::Instant::now();
            let Ok(batch) = batches.recv() else { break };
            self.tally.waited += asked.elapsed();
            if cfg.max_steps.is_some_and(|m| self.state.step >= m) {
                return Ok(true);
            }
            let lr = cfg.lr_at(self.state.step, self.planned, self.state.plateau.lr);
            let model = self.model.take().expect("a model between steps");
            let (next, loss, correct) = self.stepper.step(model, &batch, lr, &self.state)?;
            self.model = Some(next);
            let t = &mut self.tally;
            t.correct += correct;
            t.loss_sum += loss * batch.len() as f64;
            t.count += batch.len();
            t.seen += batch.len();
            self.state.step += 1;
            let step = self.state.step;
            let val = if cfg.eval_every.is_some_and(|e| step.is_multiple_of(e))
                || cfg.eval_at.contains(&step)
            {
                Some(validate(self.model())?)
            } else {
                None
            };
            if on_report(&self.tally.report(&self.state, lr, val)) == Control::Stop {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The epoch's end: validate, track the best, checkpoint, report; true when
    /// `on_report` stopped the run.
    fn end_epoch(
        &mut self,
        validate: &Validate,
        on_report: &mut impl FnMut(&Report) -> Control,
    ) -> Result<bool> {
        let v = validate(self.model())?;
        // Tracked under either schedule, so a checkpoint's state always has a finite
        // best loss (JSON has no infinity); only `Plateau` runs at its lr.
        self.state.plateau.step(v.loss);
        self.state.epoch += 1;
        if self
            .best_val
            .as_ref()
            .is_none_or(|b: &EvalResult| v.top1 > b.top1)
        {
            self.best_val = Some(v.clone());
            self.best_weights = Some(self.model().to_weights());
        }
        self.state.best_val = self.best_val.clone();
        let lr = self
            .cfg
            .lr_at(self.state.step, self.planned, self.state.plateau.lr);
        let report = self.tally.report(&self.state, lr, Some(v.clone()));
        self.last_val = Some(v);
        if let Some(dir) = &self.cfg.checkpoint_dir {
            Checkpoint::save(
                dir,
                &self.model().to_weights(),
                self.best_weights.as_ref(),
                &self.state,
                &self.stepper.optim,
            )?;
        }
        Ok(on_report(&report) == Control::Stop)
    }
}

/// [`train`], learning from `teacher` as well as the labels when one is given.
#[allow(clippy::too_many_arguments)]
pub fn train_with(
    graph: &Graph,
    weights: Weights,
    train: Arc<ImageSet>,
    val: Arc<ImageSet>,
    cfg: &TrainConfig,
    teacher: Option<&Teacher>,
    device: &Device,
    mut on_report: impl FnMut(&Report) -> Control,
) -> Result<TrainOutcome> {
    if cfg.batch_size == 0 || cfg.lr <= 0.0 || !cfg.lr.is_finite() {
        return Err(Error::BadInput(
            "batch size must be >= 1 and lr a positive number".into(),
        ));
    }
    let ad = device.clone().autodiff();
    let (weights, best_weights, state, optim) = start(graph, weights, cfg)?;
    let mut run = Run {
        cfg,
        model: Some(GraphNet::from_weights(graph, weights, "<train>", &ad)?),
        stepper: Stepper {
            optim,
            loss_fn: CrossEntropyLossConfig::new().init(&ad),
            teacher,
            device,
            ad,
        },
        best_val: state.best_val.clone(),
        state,
        best_weights,
        last_val: None,
        tally: Tally::new(),
        planned: cfg.planned_steps(train.len()),
    };
    let validate =
        |m: &GraphNet| evaluate(&m.valid(), &val, cfg.batch_size, cfg.eval_limit, device);
    let mut stopped_early = false;
    while run.state.epoch < cfg.epochs {
        if run.batches(&train, &validate, &mut on_report)? {
            stopped_early = true;
            break;
        }
        if run.end_epoch(&validate, &mut on_report)? {
            stopped_early = true;
            break;
        }
    }
    let weights = run.model().to_weights();
    Ok(TrainOutcome {
        best_weights: run.best_weights.unwrap_or_else(|| weights.clone()),
        weights,
        best_val: run.best_val,
        last_val: run.last_val,
        epochs_run: run.state.epoch,
        steps: run.state.step,
        stopped_early,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_steps_count_short_last_batches_and_the_step_cap() {
        let cfg = TrainConfig {
            epochs: 3,
            batch_size: 4,
            ..TrainConfig::default()
        };
        // 10 images in batches of 4: 3 batches an epoch, the last of 2.
        assert_eq!(cfg.planned_steps(10), 9);
        let capped = TrainConfig {
            max_steps: Some(5),
            ..cfg.clone()
        };
        assert_eq!(capped.planned_steps(10), 5);
        let subset = TrainConfig {
            subset: Some(4),
            ..cfg
        };
        assert_eq!(subset.planned_steps(10), 3);
    }

    #[test]
    fn linear_schedule_falls_from_lr_to_zero_and_plateau_passes_through() {
        let linear = TrainConfig {
            lr: 0.1,
            schedule: LrSchedule::Linear,
            ..TrainConfig::default()
        };
        // lr * (1 - t / T) at step t of T = 4, by definition.
        let lrs: Vec<f64> = (0..5).map(|t| linear.lr_at(t, 4, 0.5)).collect();
        for (got, want) in lrs.iter().zip([0.1, 0.075, 0.05, 0.025, 0.0]) {
            assert!((got - want).abs() < 1e-12, "{lrs:?}");
        }
        let plateau = TrainConfig::default();
        assert_eq!(plateau.lr_at(3, 4, 0.5), 0.5);
        // The command line's names are the budget file's.
        use clap::ValueEnum;
        assert_eq!(
            LrSchedule::from_str("linear", false),
            Ok(LrSchedule::Linear)
        );
        assert!(LrSchedule::from_str("cosine", false).is_err());
    }
}
