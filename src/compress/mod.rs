//! Compression maths and weight surgery.
//!
//! - [`tucker`]: Tucker-2 (HOSVD + HOOI) of one conv weight.
//! - [`vbmf`]: empirical VBMF rank estimation and the calibration ratio.
//! - [`decompose`]: whole-model decomposition and rank recommendation.
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

/// The compressed model a config describes: Tucker-2 at its ranks, then L2-norm pruning
/// at its ratios, applied to `weights` of the undecomposed `base` (Tucker factors come
/// from `cache` when it has them; see [`decompose::decompose_model`]).
pub fn compress_model(
    base: &Arch,
    weights: &Weights,
    config: &LayerConfig,
    file: &str,
    cache: Option<&decompose::TuckerCache>,
) -> Result<Compressed> {
    let (arch, w, _) = decompose::decompose_model(base, weights, config, file, cache, |_| {})?;
    let (arch, weights, kept) = prune::prune_model(base, &arch, &w, config, file)?;
    Ok(Compressed {
        arch,
        weights,
        kept,
    })
}
