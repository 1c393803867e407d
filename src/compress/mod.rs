//! Compression maths and weight surgery.
//!
//! - [`tucker`]: Tucker-2 (HOSVD + HOOI) of one conv weight.
//! - [`vbmf`]: empirical VBMF rank estimation and the calibration ratio.
//! - [`decompose`]: whole-model decomposition and rank recommendation.
//! - [`prune`]: L2-norm filter removal through one dependency mechanism.
//! - [`slamp`]: SLAMP per-layer pruning ratios for a global target.

pub mod decompose;
pub mod prune;
pub mod slamp;
pub mod tucker;
pub mod vbmf;
