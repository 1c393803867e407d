//! rankprune: compress trained CNNs by choosing per-layer Tucker-2 ranks and
//! filter-pruning ratios.
//!
//! Module map:
//! - [`arch`]: the plain architecture description every other part reads
//!   (VGG plans with PyTorch layer names, Tucker units, current channel counts).
//! - [`compress`]: Tucker-2 decomposition, VBMF ranks, whole-model weight surgery.
//! - [`config`]: the per-layer JSON config (ranks, ratios): parse, validate, apply.
//! - [`cost`]: exact params / MACs / FLOPs / size counter.
//! - [`data`]: CIFAR binary and IDX (Fashion-MNIST) readers, augmentation, background
//!   batches.
//! - [`ladder`]: cheap candidate scores (BN recalibration, layer-wise CKA, short plain or
//!   distilled fine-tunes) and their measured fidelity to the final accuracy.
//! - [`weights`]: named f32 tensors; safetensors and PyTorch state_dict files.
//! - [`outpath`]: output files: refusing one that is an input, writing through a
//!   temporary file.
//! - [`model`]: the burn `Vgg` module built from an architecture and weights, run
//!   channel-major with our flex CPU kernels (whole-batch conv products, fused
//!   BatchNorm+ReLU, max-pooling; burn's layers on other devices).
//! - [`device`]: the one place that turns `--device` into a burn device.
//! - [`report`]: human tables for the CLI.
//! - [`search`]: budget and space files, strategies, the trial runner, the controller,
//!   export.
//! - [`store`]: the SQLite trial store of searches.
//! - [`train`]: the reference training recipe, evaluation, checkpoints, BN
//!   recalibration, distillation.
//! - [`error`]: the crate's error and exit codes.

pub mod arch;
pub mod compress;
pub mod config;
pub mod cost;
pub mod dashboard;
pub mod data;
pub mod deploy;
pub mod device;
pub mod error;
pub mod ladder;
pub mod model;
pub mod outpath;
pub mod report;
pub mod search;
pub mod store;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
