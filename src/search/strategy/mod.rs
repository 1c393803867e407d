//! Proposal strategies. The interface is two calls, `propose` and `observe`, over plain
//! points of a [`Problem`]; strategies know nothing of SQLite or burn.

pub mod random;

use super::budget::StrategyName;
use super::problem::{Observation, Problem};
use super::space::Point;

pub trait Strategy: Send {
    /// Up to `n` new points, each feasible and never proposed or observed before. Fewer
    /// (or none) when the strategy cannot find more.
    fn propose(&mut self, n: usize, problem: &Problem) -> Vec<Point>;
    /// A finished trial (also replayed from the store on restart, in trial order).
    fn observe(&mut self, obs: &Observation);
}

/// The strategy a budget file names.
pub fn make(name: StrategyName, seed: u64) -> Result<Box<dyn Strategy>, String> {
    match name {
        StrategyName::Random => Ok(Box::new(random::RandomSearch::new(seed))),
        other => Err(format!(
            "search.strategy = {other:?}: not built yet; allowed now: \"random\""
        )),
    }
}
