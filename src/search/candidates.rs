//! The candidates of a fidelity run (`rankprune fidelity`), drawn at a study's target the
//! way a search meets them: near the warm starts and at random.

use super::problem::Problem;
use super::space::Point;
use super::strategy::evolution::{Evolution, Mode};
use crate::ladder::fidelity::Candidate;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashSet;

/// Half the candidates are strategy proposals around the warm-start points (the points
/// themselves, then mutants of them in turn), the rest uniform random feasible points;
/// every one then spends the budget it leaves unused (`Problem::fill`), so all sit at
/// the target and a probe cannot rank them by size alone. All distinct, feasible, seeded.
pub fn draw_candidates(problem: &Problem, n: usize, seed: u64) -> Vec<Candidate> {
    let mut evo = Evolution::new(seed, Mode::Constrained);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut seen = HashSet::new();
    let mut points: Vec<(Point, &str)> = Vec::new();
    let mut add = |p: Point, origin, points: &mut Vec<(Point, &str)>| {
        let p = problem.fill(p, &mut rng);
        if problem.feasible(&p) && seen.insert(p.clone()) {
            points.push((p, origin));
        }
    };
    let near = if problem.warm_starts.is_empty() {
        0
    } else {
        n / 2
    };
    for p in problem.warm_starts.iter().filter(|p| problem.feasible(p)) {
        if points.len() < near {
            add(p.clone(), "warm", &mut points);
        }
    }
    let mut tries = 0;
    while points.len() < near && tries < 50 * n {
        let parent = problem.warm_starts[tries % problem.warm_starts.len()].clone();
        tries += 1;
        if let Some(c) = evo.feasible_mutant(parent, problem) {
            add(c, "mutant", &mut points);
        }
    }
    tries = 0;
    while points.len() < n && tries < 50 * n {
        tries += 1;
        if let Some(c) = evo.random_feasible(problem) {
            add(c, "random", &mut points);
        }
    }
    points
        .into_iter()
        .enumerate()
        .map(|(index, (p, origin))| {
            let cost = problem.cost(&p);
            Candidate {
                index,
                origin: origin.to_string(),
                config: serde_json::to_value(problem.config(&p)).expect("configs serialize"),
                flops: cost.flops,
                params: cost.params,
            }
        })
        .collect()
}
