//! Proposal strategies. The interface is three calls, `propose`, `observe` and `exclude`, over plain
//! points of a [`Problem`]; strategies know nothing of SQLite or burn.

pub mod bayes;
pub mod evolution;
pub mod random;

use super::problem::{Observation, Problem};
use super::space::Point;
use crate::budget::StrategyName;

pub trait Strategy: Send {
    /// Up to `n` new points, each feasible and never proposed or observed before. Fewer
    /// (or none) when the strategy cannot find more.
    fn propose(&mut self, n: usize, problem: &Problem) -> Vec<Point>;
    /// A finished trial (also replayed from the store on restart, in trial order).
    fn observe(&mut self, obs: &Observation);
    /// A point the store already holds unfinished (queued or running when a study
    /// resumes): never to be proposed again, though nothing is known of it yet.
    fn exclude(&mut self, point: &Point);
}

/// The strategy a budget file names; `pareto` selects the accuracy-vs-FLOPs variant.
pub fn make(name: StrategyName, seed: u64, pareto: bool) -> Box<dyn Strategy> {
    use evolution::{Evolution, Mode};
    match name {
        StrategyName::Random => Box::new(random::RandomSearch::new(seed)),
        StrategyName::Evolution => Box::new(Evolution::new(
            seed,
            if pareto {
                Mode::Pareto
            } else {
                Mode::Constrained
            },
        )),
        StrategyName::Bayes => Box::new(bayes::Bayes::new(seed, pareto)),
    }
}
