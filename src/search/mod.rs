//! The search: budget files (so far). Strategies, the controller and workers follow.

pub mod budget;
