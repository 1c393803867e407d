//! A study's context: what every candidate of a study is built from and scored against
//! (the base network and weights, the training and validation images, the proxy
//! settings and a Tucker cache shared by the candidates), made from a budget in one
//! place, and the one candidate builder: compress, then repair. The controller, worker
//! processes, the final stage, `fidelity` and `score` all build their candidates here.

use crate::arch::Arch;
use crate::budget::{Budget, Proxy};
use crate::compress::Compressed;
use crate::compress::decompose::TuckerCache;
use crate::compress::graph_config::apply_config_cached;
use crate::compress::prune::Kept;
use crate::config::LayerConfig;
use crate::data::ImageSet;
use crate::data::batches::Batch;
use crate::graph::Graph;
use crate::model::GraphNet;
use crate::network::{Network, graph_weights};
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
    /// The base network: its graph, and its VGG plan if it is one (the least-squares
    /// repair works on plans).
    pub base: Network,
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

/// A candidate built from the base: its graph and weights, and for a VGG plan its
/// plan and the channels its pruned convs kept (what the least-squares repair reads).
#[derive(Debug, Clone)]
pub struct Built {
    pub graph: Graph,
    pub weights: Weights,
    pub plan: Option<(Arch, Kept)>,
}

/// The budget's base network and its training and validation images.
pub fn study_inputs(budget: &Budget) -> Result<(Network, Arc<ImageSet>, Arc<ImageSet>)> {
    let base = budget.base_network()?;
    let (train, val) = budget.train_val()?;
    Ok((base, Arc::new(train), Arc::new(val)))
}

/// The budget's base weights, checked against `base`.
pub fn load_base_weights(budget: &Budget, base: &Network) -> Result<Weights> {
    let path = &budget.model.weights;
    if !path.exists() {
        return Err(Error::BadInput(format!(
            "model.weights = {}: no such file (train the base model first, e.g. with `rankprune search`; \
             worker processes read the files the budget names, so the same paths must reach them, \
             e.g. on a shared filesystem)",
            path.display()
        )));
    }
    graph_weights(&base.graph, path)
}

impl Context {
    /// The context of `budget` with its inputs already at hand (the controller trains
    /// the base weights first when the budget asks for it).
    pub fn new(
        budget: &Budget,
        base: Network,
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
    /// base weights (Tucker factors from the shared cache), then, for a VGG plan,
    /// repaired on the first `repair` calibration batches (see [`crate::train::repair`]).
    pub fn build(&self, config: &LayerConfig, file: &str, device: &Device) -> Result<Built> {
        let cache = Some(self.cache.as_ref());
        let (graph, weights, kept) =
            apply_config_cached(&self.base.graph, &self.weights, config, cache)
                .map_err(|e| Error::BadInput(format!("{file}: {e}")))?;
        let Some(plan) = &self.base.plan else {
            if self.repair > 0 {
                return Err(Error::BadInput(format!(
                    "search.repair = {}: the least-squares repair works on VGG plans only; set it to 0 for {}",
                    self.repair, self.base.graph.model
                )));
            }
            return Ok(Built {
                graph,
                weights,
                plan: None,
            });
        };
        let c = Compressed {
            arch: config.apply(plan, file)?,
            weights,
            kept,
        };
        let calibration = self.calibration(self.repair);
        let c = repair_compressed(plan, &self.weights, c, &calibration, self.seed, device)?;
        Ok(Built {
            graph,
            weights: c.weights,
            plan: Some((c.arch, c.kept)),
        })
    }

    /// The first `batches` calibration batches (BN recalibration, repair, the KL and CKA
    /// of the reconstruction probe): the same images for every candidate.
    pub fn calibration(&self, batches: usize) -> Vec<Batch> {
        calibration_batches(&self.train, batches, self.proxy.batch_size, self.seed)
    }

    /// The distillation teacher: the uncompressed base model on `device`.
    pub fn teacher(&self, distill: Distill, device: &Device) -> Result<Teacher> {
        let model = self.base_model(device)?;
        Ok(Teacher { model, distill })
    }

    /// The uncompressed base model on `device`: the reference of the KL and CKA scores.
    pub fn base_model(&self, device: &Device) -> Result<GraphNet> {
        Ok(GraphNet::from_weights(
            &self.base.graph,
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
