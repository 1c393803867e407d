//! Evolutionary search. Single objective (accuracy under the cost target): aging
//! (regularized) evolution, Real et al., AAAI 2019, Alg. 1: tournament selection from
//! the population, mutate the winner, the oldest member dies. Pareto mode (accuracy vs
//! FLOPs): NSGA-II selection, Deb et al., IEEE TEC 2002 (non-dominated sorting, crowding
//! distance, crowded-comparison tournament), steady state, with uniform crossover.
//! Mutations know the structure: move one knob by a step, or shift budget between two
//! neighbouring knobs of the same kind; every child is repaired to meet the target.

use super::Strategy;
use crate::search::problem::{Observation, Problem};
use crate::search::space::Point;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{HashSet, VecDeque};

/// Objectives to minimise of an observation: (-accuracy, FLOPs).
type Objectives = [f64; 2];

/// Fronts of non-dominated points (minimisation of both objectives), best first.
pub fn non_dominated_sort(objs: &[Objectives]) -> Vec<Vec<usize>> {
    let n = objs.len();
    let dominates = |a: &Objectives, b: &Objectives| {
        a[0] <= b[0] && a[1] <= b[1] && (a[0] < b[0] || a[1] < b[1])
    };
    let mut dominated_by_count = vec![0usize; n];
    let mut dominates_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && dominates(&objs[i], &objs[j]) {
                dominates_list[i].push(j);
            } else if i != j && dominates(&objs[j], &objs[i]) {
                dominated_by_count[i] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by_count[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by_count[j] -= 1;
                if dominated_by_count[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(std::mem::replace(&mut current, next));
    }
    fronts
}

/// Crowding distance of each member of `front` (same order): boundary points get
/// infinity, inner points the sum over objectives of the normalised gap between their
/// neighbours.
pub fn crowding_distance(front: &[usize], objs: &[Objectives]) -> Vec<f64> {
    let m = front.len();
    let mut d = vec![0.0; m];
    if m <= 2 {
        return vec![f64::INFINITY; m];
    }
    for k in [0, 1] {
        let value = |i: usize| objs[front[i]][k];
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&a, &b| value(a).total_cmp(&value(b)));
        let (lo, hi) = (value(order[0]), value(order[m - 1]));
        d[order[0]] = f64::INFINITY;
        d[order[m - 1]] = f64::INFINITY;
        if hi > lo {
            for w in order.windows(3) {
                d[w[1]] += (value(w[2]) - value(w[0])) / (hi - lo);
            }
        }
    }
    d
}

/// Which objective the evolution serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Aging evolution on accuracy (the target is a hard constraint).
    Constrained,
    /// NSGA-II on (accuracy, FLOPs).
    Pareto,
}

pub struct Evolution {
    rng: StdRng,
    mode: Mode,
    population_size: usize,
    tournament_size: usize,
    /// Aging population (constrained mode): newest at the back.
    population: VecDeque<(Point, f64)>,
    /// Every successful observation (Pareto mode).
    archive: Vec<(Point, Objectives)>,
    seen: HashSet<Point>,
    proposed: usize,
}

impl Evolution {
    /// Population 20 and tournament 5 (Real et al. use P = 100, S = 25 for 20k-trial runs;
    /// these scale to searches of a few hundred trials).
    pub fn new(seed: u64, mode: Mode) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            mode,
            population_size: 20,
            tournament_size: 5,
            population: VecDeque::new(),
            archive: Vec::new(),
            seen: HashSet::new(),
            proposed: 0,
        }
    }

    /// A uniform point of the feasible set by rejection; repaired after 200 misses.
    pub fn random_feasible(&mut self, problem: &Problem) -> Option<Point> {
        let mut p = problem.space.random_point(&mut self.rng);
        for _ in 0..200 {
            if !self.seen.contains(&p) && problem.feasible(&p) {
                return Some(p);
            }
            p = problem.space.random_point(&mut self.rng);
        }
        problem.repair(p, &mut self.rng)
    }

    /// A new feasible mutant of `parent`: mutations are redrawn (up to 30 times) rather
    /// than repaired, so the child stays next to its parent; the last is repaired.
    pub fn feasible_mutant(&mut self, parent: Point, problem: &Problem) -> Option<Point> {
        let mut child = parent.clone();
        for _ in 0..30 {
            child = self.mutate(parent.clone(), problem);
            if !self.seen.contains(&child) && problem.feasible(&child) {
                return Some(child);
            }
        }
        problem.repair(child, &mut self.rng)
    }

    /// One to four structure-aware mutations.
    fn mutate(&mut self, mut p: Point, problem: &Problem) -> Point {
        let knobs = &problem.space.knobs;
        let rounds = self.rng.random_range(1..=4);
        for _ in 0..rounds {
            let i = self.rng.random_range(0..knobs.len());
            let k = &knobs[i];
            // Step size: up to a fifth of the grid, at least one level.
            let max_step = (k.levels / 5).max(1);
            let step = self.rng.random_range(1..=max_step);
            let up = self.rng.random_bool(0.5);
            let neighbour = [i.wrapping_sub(1), i + 1]
                .into_iter()
                .filter(|&j| j < knobs.len() && knobs[j].kind == k.kind)
                .nth(self.rng.random_range(0..2));
            let shift = neighbour.is_some() && self.rng.random_bool(0.4);
            p[i] = move_level(p[i], step, up, k.levels);
            if shift && let Some(j) = neighbour {
                // Budget moves from one layer to its neighbour.
                let sj = (step * knobs[j].levels).div_ceil(k.levels).max(1);
                p[j] = move_level(p[j], sj, !up, knobs[j].levels);
            }
        }
        p
    }

    fn crossover(&mut self, a: &Point, b: &Point) -> Point {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| if self.rng.random_bool(0.5) { x } else { y })
            .collect()
    }

    /// A parent by tournament: aging population (constrained) or NSGA-II survivors.
    fn parent(&mut self, survivors: &[(usize, usize, f64)]) -> Point {
        match self.mode {
            Mode::Constrained => {
                let n = self.population.len();
                let mut best: Option<usize> = None;
                for _ in 0..self.tournament_size.min(n) {
                    let i = self.rng.random_range(0..n);
                    if best.is_none_or(|b| self.population[i].1 > self.population[b].1) {
                        best = Some(i);
                    }
                }
                self.population[best.expect("non-empty population")]
                    .0
                    .clone()
            }
            Mode::Pareto => {
                // Binary crowded-comparison tournament: lower front, then larger crowding.
                let a = survivors[self.rng.random_range(0..survivors.len())];
                let b = survivors[self.rng.random_range(0..survivors.len())];
                let better = if (a.1, -a.2) <= (b.1, -b.2) { a } else { b };
                self.archive[better.0].0.clone()
            }
        }
    }

    /// NSGA-II environmental selection over the archive: (archive index, front, crowding).
    fn survivors(&self) -> Vec<(usize, usize, f64)> {
        let objs: Vec<Objectives> = self.archive.iter().map(|a| a.1).collect();
        let mut out = Vec::new();
        for (rank, front) in non_dominated_sort(&objs).into_iter().enumerate() {
            let d = crowding_distance(&front, &objs);
            let mut members: Vec<(usize, usize, f64)> =
                front.iter().zip(d).map(|(&i, d)| (i, rank, d)).collect();
            if out.len() + members.len() > self.population_size {
                members.sort_by(|a, b| b.2.total_cmp(&a.2));
                members.truncate(self.population_size - out.len());
            }
            out.extend(members);
            if out.len() >= self.population_size {
                break;
            }
        }
        out
    }

    fn ready(&self) -> bool {
        match self.mode {
            Mode::Constrained => self.population.len() >= self.population_size.min(4),
            Mode::Pareto => self.archive.len() >= self.population_size.min(4),
        }
    }
}

fn move_level(l: usize, step: usize, up: bool, levels: usize) -> usize {
    if up {
        (l + step).min(levels - 1)
    } else {
        l.saturating_sub(step)
    }
}

impl Strategy for Evolution {
    fn propose(&mut self, n: usize, problem: &Problem) -> Vec<Point> {
        let mut out = Vec::with_capacity(n);
        problem.propose_warm_starts(n, &mut self.seen, &mut out);
        let survivors = if self.mode == Mode::Pareto && self.ready() {
            self.survivors()
        } else {
            Vec::new()
        };
        let mut tries = 0;
        while out.len() < n && tries < 200 {
            tries += 1;
            // Random feasible members first (P of them); breed once results are in.
            let child = if self.proposed < self.population_size || !self.ready() {
                self.random_feasible(problem)
            } else {
                let a = self.parent(&survivors);
                let a = if self.mode == Mode::Pareto && self.rng.random_bool(0.5) {
                    let b = self.parent(&survivors);
                    self.crossover(&a, &b)
                } else {
                    a
                };
                self.feasible_mutant(a, problem)
            };
            let Some(mut child) = child else { continue };
            // Half the children spend the budget they leave unused.
            if self.mode == Mode::Constrained && problem.has_target() && self.rng.random_bool(0.5) {
                child = problem.fill(child, &mut self.rng);
            }
            if self.seen.insert(child.clone()) {
                self.proposed += 1;
                out.push(child);
            }
        }
        out
    }

    fn exclude(&mut self, point: &Point) {
        self.seen.insert(point.clone());
    }

    fn observe(&mut self, obs: &Observation) {
        self.seen.insert(obs.point.clone());
        let Some(acc) = obs.acc else { return };
        match self.mode {
            Mode::Constrained => {
                self.population.push_back((obs.point.clone(), acc));
                if self.population.len() > self.population_size {
                    self.population.pop_front();
                }
            }
            Mode::Pareto => self
                .archive
                .push((obs.point.clone(), [-acc, obs.flops as f64])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_and_crowding_on_a_hand_made_set() {
        // (-acc, flops). Front 0: 0, 1, 2 (a trade-off); 3 is dominated by 1; 4 by 3.
        let objs = [
            [-0.9, 10.0],
            [-0.8, 5.0],
            [-0.5, 1.0],
            [-0.7, 6.0],
            [-0.6, 7.0],
        ];
        let fronts = non_dominated_sort(&objs);
        assert_eq!(fronts, vec![vec![0, 1, 2], vec![3], vec![4]]);
        let d = crowding_distance(&fronts[0], &objs);
        assert!(d[0].is_infinite() && d[2].is_infinite());
        // Middle point: (0.9 - 0.5)/0.4 on accuracy + (10 - 1)/9 on FLOPs = 2.
        assert!((d[1] - 2.0).abs() < 1e-12, "{d:?}");
        // Duplicates share a front; two-member fronts are all boundary.
        let fronts = non_dominated_sort(&[[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]);
        assert_eq!(fronts, vec![vec![0, 1, 2]]);
        assert!(
            crowding_distance(&[0, 1], &objs)
                .iter()
                .all(|d| d.is_infinite())
        );
    }

    #[test]
    fn aging_drops_the_oldest() {
        let mut e = Evolution::new(0, Mode::Constrained);
        for i in 0..25 {
            e.observe(&Observation {
                point: vec![i],
                acc: Some(i as f64),
                flops: 1,
                params: 1,
            });
        }
        assert_eq!(e.population.len(), 20);
        assert_eq!(e.population.front().unwrap().0, vec![5]);
    }
}
