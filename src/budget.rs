//! The budget file (TOML): everything one search study needs. Unknown keys and wrong
//! types are errors naming the file, the line and the key; values out of range name the
//! key and the allowed range.

use crate::data::DatasetKind;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub study: Study,
    pub model: Model,
    pub data: Data,
    pub search: Search,
    pub objective: Objective,
    pub limits: Limits,
    #[serde(default)]
    pub proxy: Proxy,
    #[serde(default)]
    pub workers: Workers,
    #[serde(default, rename = "final")]
    pub final_stage: FinalStage,
    /// The budget file's folder (set by `resolve_paths`; not a key of the file).
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    pub name: String,
    /// SQLite trial store.
    pub db: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub arch: String,
    pub num_classes: usize,
    /// Trained base weights (.safetensors, .pt, .pth).
    pub weights: PathBuf,
    /// When `weights` does not exist yet: train the base model this many epochs with
    /// the reference recipe and write it there first.
    pub train_epochs: Option<usize>,
    /// Side of the square images the model takes (32 for the CIFAR and IDX layouts).
    #[serde(default = "default_input_size")]
    pub input_size: usize,
}

fn default_input_size() -> usize {
    crate::data::BINARY_SIDE
}

impl Model {
    /// The epochs to train the base model for before the search: None when `weights`
    /// exists; an error when it does not and `train_epochs` is not set.
    pub fn epochs_to_train(&self) -> crate::Result<Option<usize>> {
        if self.weights.exists() {
            return Ok(None);
        }
        match self.train_epochs {
            Some(epochs) => Ok(Some(epochs)),
            None => Err(crate::Error::BadInput(format!(
                "model.weights = {}: no such file (set model.train_epochs to train the base model first)",
                self.weights.display()
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    pub dataset: DatasetKind,
    pub dir: PathBuf,
    #[serde(default = "default_val_split")]
    pub val_split: usize,
    /// Folder data: the shorter side images are resized to before the centre crop to
    /// `model.input_size`; unset = no resize (every image must have one size).
    pub resize: Option<usize>,
    /// Folder data: per-channel mean and std (of pixels in [0, 1]) to normalise with;
    /// unset = the training split's own, computed once and cached beside the data.
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
}

fn default_val_split() -> usize {
    5000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyName {
    Random,
    Evolution,
    Bayes,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Search space file (`search_spaces/*.toml`).
    pub space: PathBuf,
    pub strategy: StrategyName,
    #[serde(default)]
    pub seed: u64,
    /// Least-squares repair of every candidate build (trials, fidelity runs and the final
    /// stage alike) from this many training batches of `proxy.batch_size` images; 0 = off.
    /// See `train::repair`.
    #[serde(default)]
    pub repair: usize,
    /// Layer configs (JSON, e.g. another study's exported winner) that the strategy
    /// proposes first, beside the heuristic's warm starts, snapped to the space's grids
    /// and repaired to meet the target: a per-layer study refining an anchored study's
    /// winner (coarse, then fine).
    #[serde(default)]
    pub warm_configs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveKind {
    /// Maximise proxy accuracy subject to the cost targets.
    Constrained,
    /// Accuracy vs FLOPs front.
    Pareto,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    pub kind: ObjectiveKind,
    pub target_flops_reduction: Option<f64>,
    pub target_params_reduction: Option<f64>,
    /// At most 1/this of the base model's inference latency, as the study's per-layer
    /// latency table predicts it on the controller's machine (our engine) at
    /// `latency_batch` images.
    #[serde(default)]
    pub target_latency_reduction: Option<f64>,
    /// Images per forward pass the latency is predicted at.
    #[serde(default = "one")]
    pub latency_batch: usize,
    /// The latency table (JSON; relative to the budget file), read when it was measured
    /// on this machine at `latency_batch` and extended: by default `STUDY.latency.json`
    /// beside the store.
    #[serde(default)]
    pub latency_table: Option<PathBuf>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_trials: usize,
    pub max_wall_hours: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Proxy {
    /// Fine-tune steps per trial.
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Validation images used to score a trial.
    pub eval_samples: usize,
    /// Rungs: steps at which a trial is scored on the validation images and may be
    /// stopped (0 = after building the candidate and recalibrating its BNs, before any
    /// fine-tuning). `early_stop_step = s` is shorthand for `rungs = [s]`.
    pub rungs: Vec<usize>,
    pub early_stop_step: Option<usize>,
    /// At a rung, a trial below this accuracy is stopped.
    pub early_stop_min_acc: f64,
    /// At a rung, a trial is also stopped unless it is in the top 1/`eta` of all trials
    /// scored there so far (asynchronous successive halving; eta = 2 is the median rule),
    /// once three trials have been scored there.
    pub early_stop_median: bool,
    pub eta: f64,
    /// Re-estimate every BN's statistics from this many training batches after building
    /// the candidate (0 = off; EagleEye's adaptive BN).
    pub bn_recalibration: usize,
    /// The score of a rung at step 0: validation accuracy, or minus the KL divergence of
    /// the base model's softmax from the candidate's on the recalibration batches.
    pub rung0_score: Rung0Score,
    /// Distil from the base model during the proxy fine-tune (`[proxy.distill]`, with
    /// `temperature` and `alpha`; defaults 4 and 0.9).
    pub distill: Option<crate::train::distill::Distill>,
    /// The proxy fine-tune's learning-rate schedule: constant (`plateau`, which never
    /// acts within one epoch) or decayed linearly to zero over `steps` (`linear`).
    pub schedule: crate::train::LrSchedule,
    /// Whether the step-0 rung may stop trials: only where measured to rank them
    /// (`measured`, see `search::gate`), or always.
    pub gate: GateMode,
    /// A `fidelity.json` of `rankprune fidelity` run in this study's regime, whose
    /// step-0 signal's tau decides the gate.
    pub gate_evidence: Option<PathBuf>,
}

/// See [`Proxy::gate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    Measured,
    Always,
}

/// See [`Proxy::rung0_score`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rung0Score {
    Accuracy,
    Kl,
}

impl Proxy {
    /// Folds `early_stop_step` into `rungs` (sorted, without repeats).
    pub fn resolve_rungs(&mut self) {
        self.rungs.extend(self.early_stop_step.take());
        self.rungs.sort_unstable();
        self.rungs.dedup();
    }

    /// The proxy fine-tune of a trial: `steps` optimizer steps (the step limit ends the
    /// run, whatever the epoch count), validated on `eval_samples` images at every rung
    /// after step 0, on the proxy's schedule. The cheap probes that train start from it.
    pub fn train_config(&self, seed: u64) -> crate::train::TrainConfig {
        crate::train::TrainConfig {
            // Upper bound: the step limit ends the run.
            epochs: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            max_steps: Some(self.steps),
            eval_at: self.rungs.iter().copied().filter(|&s| s > 0).collect(),
            eval_limit: Some(self.eval_samples),
            seed,
            schedule: self.schedule,
            ..crate::train::TrainConfig::default()
        }
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self {
            steps: 200,
            batch_size: 128,
            lr: 0.01,
            eval_samples: 1000,
            rungs: Vec::new(),
            early_stop_step: None,
            early_stop_min_acc: 0.0,
            early_stop_median: true,
            eta: 2.0,
            bn_recalibration: 0,
            rung0_score: Rung0Score::Accuracy,
            schedule: crate::train::LrSchedule::Plateau,
            distill: None,
            gate: GateMode::Measured,
            gate_evidence: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workers {
    pub cpu: usize,
    /// wgpu device ids (needs a build with `--features wgpu`).
    pub wgpu: Vec<usize>,
    /// Worker processes (`rankprune worker --db STORE`) run trials too: the controller
    /// keeps trials queued for them and re-queues those whose lease expires.
    pub processes: bool,
    /// MiB of Tucker factors each process (controller or worker) keeps per study, shared
    /// by the candidates it builds (0 = none kept).
    pub tucker_cache_mib: usize,
}

impl Workers {
    /// The device of long runs (base training and the final re-training): the first
    /// wgpu device when there is one, else the CPU.
    pub fn long_run_device(&self) -> String {
        match self.wgpu.first() {
            Some(id) => format!("wgpu:{id}"),
            None => "cpu".into(),
        }
    }
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            cpu: 1,
            wgpu: Vec::new(),
            processes: false,
            tucker_cache_mib: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinalStage {
    /// Best trials re-trained with the full recipe.
    pub top_k: usize,
    /// Best warm starts by proxy re-trained as well, however they rank among all
    /// trials (see `finalists`).
    pub warm_starts: usize,
    pub epochs: usize,
    /// Paired training seeds: every finalist, and the one-shot heuristic's config as the
    /// control, is re-trained with seeds `seed`, `seed + 1`, ...: a number, or `"auto"`
    /// (as many as resolve `margin`, at least 3 and at most `max_seeds`).
    pub seeds: Seeds,
    /// With `seeds = "auto"`: the paired validation difference (points) the verdict's
    /// interval should resolve (its half-width), and the most seeds to spend on it.
    pub margin: f64,
    pub max_seeds: usize,
    /// The control's VBMF calibration ratio (the simple flow's `--calibration`; 0 in the
    /// reference), in [-1, 1].
    pub control_calibration: f64,
    /// The first of them (default `search.seed`): another value re-trains with seeds the
    /// search never used.
    pub seed: Option<u64>,
    /// The re-training's learning-rate schedule: ReduceLROnPlateau (the recipe) or a
    /// linear decay to zero over `epochs`.
    pub schedule: crate::train::LrSchedule,
}

impl Default for FinalStage {
    fn default() -> Self {
        Self {
            top_k: 1,
            warm_starts: 1,
            epochs: 100,
            seeds: Seeds::Fixed(3),
            margin: 0.5,
            max_seeds: 10,
            control_calibration: 0.0,
            seed: None,
            schedule: crate::train::LrSchedule::Plateau,
        }
    }
}

/// How many paired seeds the final stage re-trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeds {
    Fixed(usize),
    /// Sized from the noise the final stage measures (see `search::verdict::seeds_needed`).
    Auto,
}

/// The fewest seeds `"auto"` re-trains with: an sd from two runs is too rough to size on.
pub const AUTO_MIN_SEEDS: usize = 3;

impl<'de> Deserialize<'de> for Seeds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n >= 1 => Ok(Seeds::Fixed(n as usize)),
            Raw::S(s) if s == "auto" => Ok(Seeds::Auto),
            Raw::N(n) => Err(serde::de::Error::custom(format!(
                "seeds = {n}: allowed a number >= 1, or \"auto\""
            ))),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "seeds = {s:?}: allowed a number >= 1, or \"auto\""
            ))),
        }
    }
}

/// A TOML parse error as `line N: message` (the line of the offending key or value).
pub fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
    format!("{at}{}", e.message())
}

/// A budget file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct BudgetError {
    pub file: String,
    pub message: String,
}

impl Budget {
    /// Parses TOML text; `file` names the source in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, BudgetError> {
        let mut budget: Budget = toml::from_str(text).map_err(|e| BudgetError {
            file: file.to_string(),
            message: toml_message(text, &e),
        })?;
        budget.validate().map_err(|message| BudgetError {
            file: file.to_string(),
            message,
        })?;
        budget.proxy.resolve_rungs();
        Ok(budget)
    }

    pub fn load(path: &Path) -> Result<Self, BudgetError> {
        Self::load_with_text(path).map(|(budget, _)| budget)
    }

    /// The budget and the file's text, which a study stores (one read of the file).
    pub fn load_with_text(path: &Path) -> Result<(Self, String), BudgetError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| BudgetError {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let mut budget = Self::from_toml(&text, &file)?;
        budget.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok((budget, text))
    }

    /// The budget a study was started with (the text its store keeps), its relative paths
    /// resolved against the folder recorded with it, when one was. Every reader of a
    /// stored budget (daemon, worker processes, summaries, export, dashboard) parses it here.
    pub fn of_study(row: &crate::store::StudyRow) -> Result<Self, BudgetError> {
        let mut budget = Self::from_toml(&row.budget, &format!("study {}", row.name))?;
        if let Some(dir) = &row.budget_dir {
            budget.resolve_paths(Path::new(dir));
        }
        Ok(budget)
    }

    /// Makes relative paths (store, weights, data, space) relative to `dir`, the budget
    /// file's folder, so a study runs the same from any working directory. A PostgreSQL
    /// store's URL is left as it is.
    pub fn resolve_paths(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
        let db = std::mem::take(&mut self.study.db);
        self.study.db = if crate::store::is_postgres(&db) {
            db
        } else {
            dir.join(db)
        };
        for p in [
            &mut self.model.weights,
            &mut self.data.dir,
            &mut self.search.space,
        ]
        .into_iter()
        .chain(self.proxy.gate_evidence.as_mut())
        .chain(self.objective.latency_table.as_mut())
        .chain(self.search.warm_configs.iter_mut())
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }

    /// Where the search writes `file` (the winner's config, re-trained weights): beside
    /// a SQLite store, or in the budget file's folder for a PostgreSQL store.
    pub fn output_path(&self, file: &str) -> PathBuf {
        if crate::store::is_postgres(&self.study.db) {
            self.dir.join(file)
        } else {
            self.study.db.with_file_name(file)
        }
    }

    /// The study's latency table file (see [`Objective::latency_table`]).
    pub fn latency_table(&self) -> PathBuf {
        self.objective
            .latency_table
            .clone()
            .unwrap_or_else(|| self.output_path(&format!("{}.latency.json", self.study.name)))
    }

    /// Where the study's images come from and how they are prepared.
    pub fn source(&self) -> crate::data::Source {
        crate::data::Source {
            kind: self.data.dataset,
            dir: self.data.dir.clone(),
            folder: crate::data::FolderOptions {
                side: self.model.input_size,
                resize: self.data.resize,
                norm: self
                    .data
                    .mean
                    .zip(self.data.std)
                    .map(|(mean, std)| crate::data::augment::Normalization { mean, std }),
            },
        }
    }

    /// The base (uncompressed) network: `model.arch` for `model.input_size` inputs (an
    /// ONNX file's path relative to the budget's folder).
    pub fn base_network(&self) -> crate::Result<crate::network::Network> {
        let arch = if self.model.arch.ends_with(".onnx") {
            self.dir.join(&self.model.arch).display().to_string()
        } else {
            self.model.arch.clone()
        };
        crate::network::resolve(
            &arch,
            self.model.num_classes,
            self.model.input_size,
            &crate::network::BUDGET,
        )
    }

    /// The training images and the held-out validation images the study scores on.
    pub fn train_val(&self) -> crate::Result<(crate::data::ImageSet, crate::data::ImageSet)> {
        self.source()
            .train_val(self.model.num_classes, self.data.val_split)
            .map_err(|e| crate::Error::BadInput(format!("data: {e}")))
    }

    /// `model.arch` names a network its input size suits (an ONNX file is read later).
    fn validate_arch(&self) -> Result<(), String> {
        let m = &self.model;
        crate::network::check(
            &m.arch,
            m.num_classes,
            m.input_size,
            &crate::network::BUDGET,
        )
    }

    /// Every value in its allowed range: the first that is not, as `key = value: allowed`.
    fn validate(&self) -> Result<(), String> {
        self.validate_counts()?;
        self.proxy.validate()?;
        self.validate_arch()?;
        if self.data.dataset != DatasetKind::Folder {
            if self.model.input_size != crate::data::BINARY_SIDE {
                return Err(format!(
                    "model.input_size = {}: the {:?} layout has 32x32 images; other sizes need folder data (dataset = \"folder\")",
                    self.model.input_size, self.data.dataset
                ));
            }
            for (key, set) in [
                ("data.resize", self.data.resize.is_some()),
                ("data.mean", self.data.mean.is_some()),
                ("data.std", self.data.std.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "{key}: only folder data (dataset = \"folder\") is prepared; the {:?} layout has fixed 32x32 images and statistics",
                        self.data.dataset
                    ));
                }
            }
        }
        if self.data.mean.is_some() != self.data.std.is_some() {
            return Err("data.mean and data.std: give both or neither".into());
        }
        if let Some(std) = self.data.std
            && std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(format!("data.std = {std:?}: allowed positive values"));
        }
        if let Some(mean) = self.data.mean
            && mean.iter().any(|m| !m.is_finite())
        {
            return Err(format!("data.mean = {mean:?}: allowed finite values"));
        }
        if self.data.resize == Some(0) {
            return Err("data.resize = 0: allowed 1 or more".into());
        }
        self.objective.validate()?;
        if let Some(h) = self.limits.max_wall_hours
            && !(h.is_finite() && h > 0.0)
        {
            return Err(format!("limits.max_wall_hours = {h}: allowed > 0"));
        }
        if self.workers.cpu == 0 && self.workers.wgpu.is_empty() && !self.workers.processes {
            return Err(
                "workers: cpu = 0 and no wgpu devices: at least one worker is needed \
                 (or processes = true, for `rankprune worker` processes)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The counts that must be at least 1.
    fn validate_counts(&self) -> Result<(), String> {
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(format!("{key} = 0: allowed >= 1"))
            } else {
                Ok(())
            }
        };
        positive("model.num_classes", self.model.num_classes)?;
        positive("limits.max_trials", self.limits.max_trials)?;
        positive("proxy.steps", self.proxy.steps)?;
        positive("proxy.batch_size", self.proxy.batch_size)?;
        positive("proxy.eval_samples", self.proxy.eval_samples)?;
        positive("final.epochs", self.final_stage.epochs)?;
        positive("final.max_seeds", self.final_stage.max_seeds)?;
        let f = &self.final_stage;
        if !(-1.0..=1.0).contains(&f.control_calibration) {
            return Err(format!(
                "final.control_calibration = {}: allowed [-1, 1]",
                f.control_calibration
            ));
        }
        if !(f.margin > 0.0 && f.margin.is_finite()) {
            return Err(format!("final.margin = {}: allowed > 0 (points)", f.margin));
        }
        if f.seeds == Seeds::Auto && f.max_seeds < AUTO_MIN_SEEDS {
            return Err(format!(
                "final.max_seeds = {}: allowed >= {AUTO_MIN_SEEDS} with seeds = \"auto\"",
                f.max_seeds
            ));
        }
        // Trials are scored on the held-out images: with none, every trial fails.
        positive("data.val_split", self.data.val_split)?;
        if let Some(e) = self.model.train_epochs {
            positive("model.train_epochs", e)?;
        }
        Ok(())
    }
}

impl Objective {
    fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            (
                "objective.target_flops_reduction",
                self.target_flops_reduction,
            ),
            (
                "objective.target_params_reduction",
                self.target_params_reduction,
            ),
            (
                "objective.target_latency_reduction",
                self.target_latency_reduction,
            ),
        ] {
            if let Some(x) = v
                && !(x.is_finite() && x >= 1.0)
            {
                return Err(format!(
                    "{key} = {x}: allowed >= 1 (e.g. 8.0 = eight times fewer)"
                ));
            }
        }
        if self.kind == ObjectiveKind::Constrained
            && self.target_flops_reduction.is_none()
            && self.target_params_reduction.is_none()
            && self.target_latency_reduction.is_none()
        {
            return Err("objective: kind = \"constrained\" needs target_flops_reduction, target_params_reduction or target_latency_reduction".into());
        }
        if self.latency_batch == 0 {
            return Err("objective.latency_batch = 0: allowed >= 1".into());
        }
        Ok(())
    }
}

impl Proxy {
    fn validate(&self) -> Result<(), String> {
        if let Some(s) = self.early_stop_step
            && (s == 0 || s > self.steps)
        {
            return Err(format!(
                "proxy.early_stop_step = {s}: allowed 1 ..= proxy.steps ({})",
                self.steps
            ));
        }
        if let Some(&s) = self.rungs.iter().find(|&&s| s > self.steps) {
            return Err(format!(
                "proxy.rungs: {s} is past the last step: allowed 0 ..= proxy.steps ({})",
                self.steps
            ));
        }
        if self.rung0_score == Rung0Score::Kl && self.bn_recalibration == 0 {
            return Err(
                "proxy.rung0_score = \"kl\" is measured on the recalibration batches: set proxy.bn_recalibration >= 1".into(),
            );
        }
        if !(self.eta.is_finite() && self.eta > 1.0) {
            return Err(format!("proxy.eta = {}: allowed > 1", self.eta));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("proxy.lr = {}: allowed > 0", self.lr));
        }
        if !(0.0..=1.0).contains(&self.early_stop_min_acc) {
            return Err(format!(
                "proxy.early_stop_min_acc = {}: allowed [0, 1]",
                self.early_stop_min_acc
            ));
        }
        if let Some(d) = &self.distill {
            if !(d.temperature.is_finite() && d.temperature > 0.0) {
                return Err(format!(
                    "proxy.distill.temperature = {}: allowed > 0",
                    d.temperature
                ));
            }
            if !(0.0..=1.0).contains(&d.alpha) {
                return Err(format!("proxy.distill.alpha = {}: allowed [0, 1]", d.alpha));
            }
        }
        Ok(())
    }
}

/// A bad budget is bad input (exit code 2).
impl From<BudgetError> for crate::error::Error {
    fn from(e: BudgetError) -> Self {
        crate::error::Error::BadInput(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[study]
name = "digits"
db = "digits.sqlite"

[model]
arch = "vgg19_bn"
num_classes = 10
weights = "digits_vgg19.safetensors"

[data]
dataset = "cifar100"
dir = "experiments/data/digits32"
val_split = 200

[search]
space = "search_spaces/vgg19_bn.toml"
strategy = "evolution"
seed = 3

[objective]
kind = "constrained"
target_flops_reduction = 8.0

[limits]
max_trials = 50
max_wall_hours = 1.0

[proxy]
steps = 100
early_stop_step = 40
early_stop_min_acc = 0.3
"#;

    fn error_of(text: &str) -> String {
        Budget::from_toml(text, "b.toml").unwrap_err().to_string()
    }

    #[test]
    fn parses_with_defaults() {
        let b = Budget::from_toml(GOOD, "b.toml").unwrap();
        assert_eq!(b.search.strategy, StrategyName::Evolution);
        assert_eq!(b.data.dataset, DatasetKind::Cifar100);
        assert_eq!(b.objective.target_flops_reduction, Some(8.0));
        assert_eq!(b.proxy.steps, 100);
        assert_eq!(b.proxy.batch_size, 128);
        assert_eq!(b.workers, Workers::default());
        assert_eq!(b.final_stage, FinalStage::default());
        // early_stop_step is shorthand for one rung.
        assert_eq!(
            (b.proxy.rungs.clone(), b.proxy.early_stop_step),
            (vec![40], None)
        );
        assert_eq!(
            (b.proxy.eta, b.proxy.bn_recalibration, b.proxy.distill),
            (2.0, 0, None)
        );
    }

    #[test]
    fn schedules_parse_and_a_wrong_one_names_its_line() {
        use crate::train::LrSchedule;
        let b = Budget::from_toml(GOOD, "b.toml").unwrap();
        assert_eq!(
            (b.proxy.schedule, b.final_stage.schedule),
            (LrSchedule::Plateau, LrSchedule::Plateau)
        );
        let text = GOOD.replace("[proxy]", "[proxy]\nschedule = \"linear\"")
            + "\n[final]\nschedule = \"linear\"\n";
        let b = Budget::from_toml(&text, "b.toml").unwrap();
        assert_eq!(
            (b.proxy.schedule, b.final_stage.schedule),
            (LrSchedule::Linear, LrSchedule::Linear)
        );
        let bad = format!("{GOOD}\n[final]\nschedule = \"cosine\"\n");
        let e = error_of(&bad);
        let line = bad.lines().position(|l| l.starts_with("schedule")).unwrap() + 1;
        assert!(
            e.contains(&format!("line {line}")) && e.contains("cosine"),
            "{e}"
        );
    }

    /// `seeds` is the final stage's paired training seeds (it once named the warm starts).
    #[test]
    fn final_seeds_are_training_seeds_and_at_least_one() {
        let text = format!("{GOOD}\n[final]\ntop_k = 2\nwarm_starts = 3\nseeds = 5\nseed = 100\n");
        let b = Budget::from_toml(&text, "b.toml").unwrap();
        let f = &b.final_stage;
        let want = (2, 3, Seeds::Fixed(5), Some(100));
        assert_eq!((f.top_k, f.warm_starts, f.seeds, f.seed), want);
        let text = format!("{GOOD}\n[final]\nseeds = \"auto\"\nmargin = 0.3\nmax_seeds = 12\n");
        let f = Budget::from_toml(&text, "b.toml").unwrap().final_stage;
        assert_eq!((f.seeds, f.margin, f.max_seeds), (Seeds::Auto, 0.3, 12));
        for (bad, why) in [
            ("seeds = 0", "seeds = 0"),
            ("seeds = \"many\"", "\"many\""),
            ("margin = 0.0", "final.margin"),
            ("control_calibration = 1.5", "final.control_calibration"),
            ("seeds = \"auto\"\nmax_seeds = 2", "final.max_seeds"),
        ] {
            let text = format!("{GOOD}\n[final]\n{bad}\n");
            let e = Budget::from_toml(&text, "b.toml").unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("allowed"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_proxy_recipe_is_one_train_config() {
        let text = GOOD.replace(
            "early_stop_step = 40",
            "rungs = [0, 40, 80]\nschedule = \"linear\"",
        );
        let b = Budget::from_toml(&text, "b.toml").unwrap();
        let c = b.proxy.train_config(7);
        assert_eq!((c.max_steps, c.epochs, c.seed), (Some(100), 100, 7));
        // Step 0 is scored before training starts, not by the training loop.
        assert_eq!(c.eval_at, vec![40, 80]);
        assert_eq!((c.batch_size, c.lr, c.eval_limit), (128, 0.01, Some(1000)));
        assert_eq!(c.schedule, crate::train::LrSchedule::Linear);
    }

    #[test]
    fn the_tucker_cache_size_is_a_budget_key() {
        let b = Budget::from_toml(GOOD, "b.toml").unwrap();
        assert_eq!(b.workers.tucker_cache_mib, 1024);
        let text = format!("{GOOD}\n[workers]\ntucker_cache_mib = 64\n");
        let b = Budget::from_toml(&text, "b.toml").unwrap();
        assert_eq!(b.workers.tucker_cache_mib, 64);
    }

    #[test]
    fn long_runs_use_the_first_gpu_worker_else_the_cpu() {
        assert_eq!(Workers::default().long_run_device(), "cpu");
        let gpus = Workers {
            cpu: 0,
            wgpu: vec![1, 0],
            ..Workers::default()
        };
        assert_eq!(gpus.long_run_device(), "wgpu:1");
    }

    #[test]
    fn ladder_keys_parse_and_are_checked() {
        let text = GOOD.replace(
            "early_stop_step = 40",
            "rungs = [50, 0]\neta = 3\nbn_recalibration = 8",
        ) + "\n[proxy.distill]\ntemperature = 2.0\n";
        let b = Budget::from_toml(&text, "b.toml").unwrap();
        assert_eq!(b.proxy.rungs, vec![0, 50]);
        assert_eq!((b.proxy.eta, b.proxy.bn_recalibration), (3.0, 8));
        let d = b.proxy.distill.unwrap();
        assert_eq!((d.temperature, d.alpha), (2.0, 0.9));
        let e = error_of(&GOOD.replace("early_stop_step = 40", "rungs = [0, 101]"));
        assert!(
            e.contains("proxy.rungs: 101 is past the last step: allowed 0 ..= proxy.steps (100)"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("early_stop_step = 40", "rung0_score = \"kl\""));
        assert!(e.contains("set proxy.bn_recalibration >= 1"), "{e}");
        let kl = GOOD.replace(
            "early_stop_step = 40",
            "rung0_score = \"kl\"\nbn_recalibration = 2",
        );
        assert_eq!(
            Budget::from_toml(&kl, "b.toml").unwrap().proxy.rung0_score,
            Rung0Score::Kl
        );
        let e = error_of(&GOOD.replace("early_stop_step = 40", "eta = 1"));
        assert!(e.contains("proxy.eta = 1: allowed > 1"), "{e}");
        let e = error_of(&text.replace("temperature = 2.0", "alpha = 1.5"));
        assert!(
            e.contains("proxy.distill.alpha = 1.5: allowed [0, 1]"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = GOOD.replace("max_trials = 50", "max_trials = 50\nmax_trails = 5");
        let e = error_of(&text);
        assert!(e.starts_with("b.toml: line 27: "), "{e}");
        assert!(e.contains("max_trails"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let e = error_of(&GOOD.replace("num_classes = 10", "num_classes = \"ten\""));
        assert!(e.starts_with("b.toml: line 8: "), "{e}");
        let e = error_of(&GOOD.replace("strategy = \"evolution\"", "strategy = \"annealing\""));
        assert!(e.contains("annealing") && e.contains("random"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_key_and_range() {
        let cases = [
            (
                "target_flops_reduction = 8.0",
                "target_flops_reduction = 0.5",
                "objective.target_flops_reduction",
            ),
            (
                "max_trials = 50",
                "max_trials = 0",
                "limits.max_trials = 0: allowed >= 1",
            ),
            (
                "early_stop_min_acc = 0.3",
                "early_stop_min_acc = 1.5",
                "allowed [0, 1]",
            ),
            ("arch = \"vgg19_bn\"", "arch = \"resnet\"", "model.arch"),
            (
                "arch = \"vgg19_bn\"",
                "arch = \"cfg_bn:8,M,8,M,8,M,8,M,8,M,8,M\"",
                "model.arch: \"cfg_bn:8,M,8,M,8,M,8,M,8,M,8,M\" has 6 max-pools",
            ),
            (
                "val_split = 200",
                "val_split = 0",
                "data.val_split = 0: allowed >= 1",
            ),
            (
                "num_classes = 10",
                "num_classes = 10\ninput_size = 64",
                "model.input_size = 64: the Cifar100 layout has 32x32 images",
            ),
            (
                "num_classes = 10",
                "num_classes = 10\ninput_size = 16",
                "model.input_size = 16: allowed 32 or more",
            ),
            (
                "val_split = 200",
                "val_split = 200\nresize = 40",
                "data.resize: only folder data",
            ),
            (
                "dataset = \"cifar100\"",
                "dataset = \"folder\"\nmean = [0.5, 0.5, 0.5]",
                "data.mean and data.std: give both or neither",
            ),
            (
                "dataset = \"cifar100\"",
                "dataset = \"folder\"\nmean = [0.5, 0.5, nan]\nstd = [1.0, 1.0, 1.0]",
                "data.mean = [0.5, 0.5, NaN]: allowed finite values",
            ),
            (
                "max_wall_hours = 1.0",
                "max_wall_hours = -1.0",
                "limits.max_wall_hours",
            ),
            (
                "target_flops_reduction = 8.0",
                "",
                "needs target_flops_reduction",
            ),
        ];
        for (from, to, want) in cases {
            let e = error_of(&GOOD.replace(from, to));
            assert!(e.contains(want), "{from} -> {to}: {e}");
        }
        let e = Budget::load(Path::new("/nonexistent/b.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/b.toml: cannot read"), "{e}");
    }
}
