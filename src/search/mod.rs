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
