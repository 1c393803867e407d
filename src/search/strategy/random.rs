//! Random search: uniform levels per knob, rejected until feasible and new.

use super::Strategy;
use crate::search::problem::{Observation, Problem};
use crate::search::space::Point;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashSet;

/// Tries per proposal before giving up (the target is then out of reach of sampling).
const MAX_TRIES: usize = 20_000;

pub struct RandomSearch {
    rng: StdRng,
    seen: HashSet<Point>,
}

impl RandomSearch {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            seen: HashSet::new(),
        }
    }
}

impl Strategy for RandomSearch {
    fn propose(&mut self, n: usize, problem: &Problem) -> Vec<Point> {
        let mut out = Vec::with_capacity(n);
        'points: for _ in 0..n {
            for _ in 0..MAX_TRIES {
                let p: Point = problem.space.random_point(&mut self.rng);
                if !self.seen.contains(&p) && problem.feasible(&p) {
                    self.seen.insert(p.clone());
                    out.push(p);
                    continue 'points;
                }
            }
            tracing::warn!(
                tries = MAX_TRIES,
                "random search found no new feasible point"
            );
            break;
        }
        out
    }

    fn exclude(&mut self, point: &Point) {
        self.seen.insert(point.clone());
    }

    fn observe(&mut self, obs: &Observation) {
        self.seen.insert(obs.point.clone());
    }
}
