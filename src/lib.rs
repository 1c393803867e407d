//! rankprune: compress trained CNNs by choosing per-layer Tucker-2 ranks and
//! filter-pruning ratios.
//!
//! Module map, lower floors first; a module uses only those above it in this list
//! (so `search` uses `ladder` and `store`, and neither of them knows the search):
//! - [`error`]: the crate's error and exit codes (it wraps the errors of the modules
//!   below, which all return it).
//! - [`stats`]: quantiles, rank correlations (Kendall, Spearman), bootstrap intervals,
//!   the seed noise of paired runs.
//! - [`store`]: the trial store of searches (a SQLite file or a PostgreSQL database),
//!   with the leases of daemons and controllers; it knows nothing of strategies.
//! - [`outpath`]: outputs that must not be inputs, written through a temporary file.
//! - [`arch`]: VGG plans (PyTorch layer names, Tucker units, current channel counts),
//!   which build VGG graphs and check configs on plans.
//! - [`config`]: the per-layer JSON config (ranks, ratios): parse, validate, apply.
//! - [`cost`]: exact params / MACs / FLOPs / size counter.
//! - [`graph`]: a CNN as named nodes with residual adds (ResNets, and VGG from an
//!   `arch`), shape checks, its cost and its dependency groups.
//! - [`weights`]: named f32 tensors; safetensors and PyTorch state_dict files.
//! - [`data`]: CIFAR binary, IDX (Fashion-MNIST) and class-folder (PNG/JPEG) readers,
//!   augmentation, background batches.
//! - [`device`]: the one place that turns `--device` into a burn device.
//! - [`model`]: `GraphNet`, the burn model of any graph, run channel-major with our flex
//!   CPU kernels (whole-batch conv products, fused BatchNorm+ReLU, max-pooling; burn's
//!   layers on other devices); the `Vgg` module of a plan serves the least-squares repair.
//! - [`compress`]: Tucker-2 decomposition, VBMF ranks, pruning by dependency group, group
//!   SLAMP, a config applied to a graph.
//! - [`train`]: the reference training recipe, evaluation, checkpoints, BN
//!   recalibration, distillation, least-squares repair.
//! - [`deploy`]: BatchNorm folding and the ONNX graph.
//! - [`network`]: the network a user names (VGG plan, ResNet or ONNX file) as a graph,
//!   and its weights file.
//! - [`budget`]: the budget file (TOML) of a study, and the budget a store keeps.
//! - [`ladder`]: a study's context (base model, data, proxy settings, Tucker cache) and
//!   its one candidate builder; cheap candidate probes (BN recalibration, layer-wise
//!   CKA, short plain or distilled fine-tunes) and their measured fidelity to the final
//!   accuracy.
//! - [`search`]: space files, strategies, the trial runner, the controller, the daemon
//!   and worker processes, export, and the candidates of a fidelity run.
//! - [`dashboard`]: the web dashboard over a store.
//! - [`report`]: human tables for the CLI.

pub mod arch;
pub mod budget;
pub mod compress;
pub mod config;
pub mod cost;
pub mod dashboard;
pub mod data;
pub mod deploy;
pub mod device;
pub mod error;
pub mod graph;
pub mod ladder;
pub mod model;
pub mod network;
pub mod outpath;
pub mod report;
pub mod search;
pub mod stats;
pub mod store;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
