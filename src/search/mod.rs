//! The search: search spaces, strategies, the trial runner, the controller that drives
//! them, the daemon and worker processes, export, and the candidates of a fidelity run.

pub mod anchored;
pub mod candidates;
pub mod controller;
pub mod daemon;
pub mod export;
pub mod finalists;
pub mod gate;
pub mod gp;
pub mod heuristic;
pub mod identity;
pub mod lease;
pub mod pareto;
pub mod precheck;
pub mod problem;
pub mod promotion;
pub mod space;
pub mod strategy;
pub mod summary;
pub mod synthetic;
pub mod trial;
pub mod verdict;
pub mod warm;
pub mod worker;

/// How long a trial may go on after SIGINT/SIGTERM before its worker (a `worker`
/// process, or `search`'s own threads) gives up waiting for it: a trial sees its stop
/// flag between training steps only, and one step on a slow device (a wgpu kernel being
/// compiled or autotuned) can take minutes. The trial is then handed back, or marked
/// interrupted, and the process exits without it.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
