//! A study's context: what every candidate of a study is built from and scored against
//! (the base architecture and weights, the training and validation images, the proxy
//! settings and a Tucker cache shared by the candidates), made from a budget in one
//! place, and the one candidate builder: compress, then repair. The controller, worker
//! processes, the final stage, `fidelity` and `score` all build their candidates here.

use crate::arch::Arch;
use crate::budget::{Budget, Proxy};
use crate::compress::decompose::TuckerCache;
use crate::compress::{Compressed, compress_model};
use crate::config::LayerConfig;
use crate::data::ImageSet;
use crate::data::batches::Batch;
use crate::graph::build::of_arch;
use crate::model::{GraphNet, Vgg};
use crate::train::distill::{Distill, Teacher};
use crate::train::recalibrate::calibration_batches;
use crate::train::repair::repair_compressed;
use crate::train::{LrSchedule, TrainConfig};
use crate::weights::Weights;
use crate::{Error, Result};
use burn::tensor::Device;
use std::sync::Arc;

/// What every candidate of a study is built from and scored against.
#[derive(Clone)]
pub struct Context {
    pub base: Arch,
    pub weights: Arc<Weights>,
    pub train: Arc<ImageSet>,
    /// The held-out validation images every score is read on (never the test set).
    pub val: Arc<ImageSet>,
    /// Batch size, learning rate, validation images, rungs, schedule and distillation of
    /// every short fine-tune.
    pub proxy: Proxy,
    pub seed: u64,
    /// Calibration batches of the least-squares repair of every build (0 = none).
    pub repair: usize,
    /// The learning-rate schedule of the final recipe.
    pub final_schedule: LrSchedule,
    /// Tucker factors of `weights`, shared by the candidates.
    pub cache: Arc<TuckerCache>,
}

/// The budget's base architecture and its training and validation images.
pub fn study_inputs(budget: &Budget) -> Result<(Arch, Arc<ImageSet>, Arc<ImageSet>)> {
    let base = budget.base_arch()?;
    let (train, val) = budget.train_val()?;
    Ok((base, Arc::new(train), Arc::new(val)))
}

/// The budget's base weights, checked against `base`.
pub fn load_base_weights(budget: &Budget, base: &Arch) -> Result<Weights> {
    let path = &budget.model.weights;
    if !path.exists() {
        return Err(Error::BadInput(format!(
            "model.weights = {}: no such file (train the base model first, e.g. with `rankprune search`; \
             worker processes read the files the budget names, so the same paths must reach them, \
             e.g. on a shared filesystem)",
            path.display()
        )));
    }
    Ok(Weights::load(path)?.matched_to(base, &path.display().to_string())?)
}

impl Context {
    /// The context of `budget` with its inputs already at hand (the controller trains
    /// the base weights first when the budget asks for it).
    pub fn new(
        budget: &Budget,
        base: Arch,
        weights: Arc<Weights>,
        train: Arc<ImageSet>,
        val: Arc<ImageSet>,
    ) -> Self {
        Self {
            base,
            weights,
            train,
            val,
            proxy: budget.proxy.clone(),
            seed: budget.search.seed,
            repair: budget.search.repair,
            final_schedule: budget.final_stage.schedule,
            cache: Arc::new(TuckerCache::new(budget.workers.tucker_cache_mib << 20)),
        }
    }

    /// The context of `budget`, its base weights read from `model.weights`.
    pub fn load(budget: &Budget) -> Result<Self> {
        let (base, train, val) = study_inputs(budget)?;
        let weights = load_base_weights(budget, &base)?;
        Ok(Self::new(budget, base, Arc::new(weights), train, val))
    }

    /// The candidate `config` describes (`file` names it in errors): compressed from the
    /// base weights (Tucker factors from the shared cache), then repaired on the first
    /// `repair` calibration batches (see [`crate::train::repair`]).
    pub fn build(&self, config: &LayerConfig, file: &str, device: &Device) -> Result<Compressed> {
        let c = compress_model(&self.base, &self.weights, config, file, Some(&self.cache))?;
        let calibration = self.calibration(self.repair);
        repair_compressed(
            &self.base,
            &self.weights,
            c,
            &calibration,
            self.seed,
            device,
        )
    }

    /// The first `batches` calibration batches (BN recalibration, repair, the KL and CKA
    /// of the reconstruction probe): the same images for every candidate.
    pub fn calibration(&self, batches: usize) -> Vec<Batch> {
        calibration_batches(&self.train, batches, self.proxy.batch_size, self.seed)
    }

    /// The distillation teacher: the uncompressed base model on `device`.
    pub fn teacher(&self, distill: Distill, device: &Device) -> Result<Teacher> {
        let model = GraphNet::from_weights(
            &of_arch(&self.base),
            (*self.weights).clone(),
            "<base>",
            device,
        )?;
        Ok(Teacher { model, distill })
    }

    /// The uncompressed base model on `device`: the reference of the KL and CKA scores.
    pub fn base_model(&self, device: &Device) -> Result<Vgg> {
        Ok(Vgg::from_weights(
            &self.base,
            (*self.weights).clone(),
            "<base>",
            device,
        )?)
    }

    /// The proxy fine-tune of a trial (see [`Proxy::train_config`]).
    pub fn proxy_config(&self) -> TrainConfig {
        self.proxy.train_config(self.seed)
    }

    /// `epochs` epochs of the final recipe on its schedule.
    pub fn final_config(&self, epochs: usize) -> TrainConfig {
        TrainConfig {
            epochs,
            seed: self.seed,
            schedule: self.final_schedule,
            ..TrainConfig::default()
        }
    }
}
