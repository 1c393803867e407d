//! Compression maths and weight surgery.
//!
//! - [`tucker`]: Tucker-2 (HOSVD + HOOI) of one conv weight.
//! - [`vbmf`]: empirical VBMF rank estimation and the calibration ratio.
//! - [`decompose`]: VBMF rank recommendation and the Tucker factors of one conv.
//! - [`graph_tucker`]: Tucker-2 of a network's convs (its chains and weights).
//! - [`group_prune`]: pruning by dependency group, group SLAMP.
//! - [`graph_config`]: a layer config applied to a network.
//! - [`prune`]: L2-norm filter removal through one dependency mechanism.
//! - [`slamp`]: SLAMP per-layer pruning ratios for a global target.

pub mod decompose;
pub mod graph_config;
pub mod graph_tucker;
pub mod group_prune;
pub mod prune;
pub mod slamp;
pub mod tucker;
pub mod vbmf;

use crate::Result;
use crate::arch::Arch;
use crate::config::LayerConfig;
use crate::weights::Weights;

/// A compressed model: its layout, its weights, and which channels its pruned convs kept.
#[derive(Debug, Clone)]
pub struct Compressed {
    pub arch: Arch,
    pub weights: Weights,
    pub kept: prune::Kept,
}

/// The compressed model a config describes on the VGG plan `base`, with the plan it
/// compresses to (the least-squares repair reads it): Tucker-2 at its ranks, then
/// L2-norm pruning at its ratios, applied to `weights` through the plan's graph
/// ([`graph_config::apply_config_cached`]; Tucker factors from `cache` when it has them).
pub fn compress_model(
    base: &Arch,
    weights: &Weights,
    config: &LayerConfig,
    file: &str,
    cache: Option<&decompose::TuckerCache>,
) -> Result<Compressed> {
    let arch = config.apply(base, file)?;
    let graph = crate::graph::build::of_arch(base);
    let (_, weights, kept) = graph_config::apply_config_cached(&graph, weights, config, cache)
        .map_err(|e| crate::Error::BadInput(format!("{file}: {e}")))?;
    Ok(Compressed {
        arch,
        weights,
        kept,
    })
}
