//! Compression maths and weight surgery.
//!
//! - [`tucker`]: Tucker-2 (HOSVD + HOOI) of one conv weight.
//! - [`vbmf`]: empirical VBMF rank estimation and the calibration ratio.
//! - [`decompose`]: whole-model decomposition and rank recommendation.

pub mod decompose;
pub mod tucker;
pub mod vbmf;
