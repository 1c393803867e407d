//! Bayesian optimisation: a GP surrogate of proxy accuracy over the encoded box
//! [0, 1]^d (see `search::gp`), log expected improvement as acquisition, maximised
//! inside a trust region around the incumbent that doubles after 3 successes and halves
//! after a run of failures (TuRBO-1, Eriksson et al., NeurIPS 2019, Sec. 2).
//!
//! The acquisition is maximised the TuRBO way, over a candidate set drawn in the trust
//! region by perturbing a few coordinates of the incumbent, followed by a discrete
//! hill climb on the knob grids; every candidate's cost is exact, so infeasible ones are
//! never scored. Several proposals at once use the kriging believer: each chosen point
//! joins the data with its posterior mean before the next is chosen. In Pareto mode the
//! GP models accuracy and each proposal scalarises accuracy - w log2(FLOPs / base) with
//! a random w (ParEGO-style, Knowles 2006), the FLOPs term being exact.

use super::Strategy;
use crate::search::gp::{Gp, Hyper, log_ei};
use crate::search::pareto::dominates;
use crate::search::problem::{Observation, Problem};
use crate::search::space::Point;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::HashSet;

/// Observations the GP sees at most: the best quarter and the most recent rest.
const MAX_GP_POINTS: usize = 160;
/// Candidates drawn per proposal.
const CANDIDATES: usize = 200;
/// Hyperparameters are refitted after this many new observations.
const REFIT_EVERY: usize = 5;
/// L-BFGS iterations per refit.
const REFIT_ITERS: u64 = 10;
/// Observations used to fit hyperparameters (the best quarter and the most recent).
const REFIT_POINTS: usize = 48;

/// TuRBO trust-region state (side length in encoded units).
#[derive(Debug, Clone)]
struct TrustRegion {
    length: f64,
    successes: usize,
    failures: usize,
    fail_tol: usize,
}

impl TrustRegion {
    const INIT: f64 = 0.8;
    const MIN: f64 = 0.5f64 * 0.5 * 0.5 * 0.5 * 0.5 * 0.5 * 0.5;
    const MAX: f64 = 1.6;

    fn update(&mut self, improved: bool) {
        if improved {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        if self.successes >= 3 {
            self.length = (self.length * 2.0).min(Self::MAX);
            self.successes = 0;
        }
        if self.failures >= self.fail_tol {
            self.length /= 2.0;
            self.failures = 0;
        }
        if self.length < Self::MIN {
            // Restart the region (the data are kept).
            self.length = Self::INIT;
        }
    }
}

/// One successful observation as the surrogate sees it.
struct Observed {
    point: Point,
    /// `point` in the unit cube; empty until the next proposal (where the space is).
    encoded: Vec<f64>,
    accuracy: f64,
    flops: u64,
}

pub struct Bayes {
    rng: StdRng,
    pareto: bool,
    /// Successful observations.
    data: Vec<Observed>,
    seen: HashSet<Point>,
    hyper: Option<Hyper>,
    fitted_at: usize,
    tr: Option<TrustRegion>,
    proposed: usize,
    best: f64,
}

impl Bayes {
    pub fn new(seed: u64, pareto: bool) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            pareto,
            data: Vec::new(),
            seen: HashSet::new(),
            hyper: None,
            fitted_at: 0,
            tr: None,
            proposed: 0,
            best: f64::NEG_INFINITY,
        }
    }

    fn initial_design(problem: &Problem) -> usize {
        (problem.space.dims() / 4).clamp(6, 12)
    }

    fn random_feasible(&mut self, problem: &Problem) -> Option<Point> {
        for _ in 0..50 {
            let p: Point = problem.space.random_point(&mut self.rng);
            if let Some(p) = problem.repair(p, &mut self.rng)
                && !self.seen.contains(&p)
            {
                // Initial points use the budget fully (half of them, for spread).
                if !self.pareto && problem.has_target() && self.rng.random_bool(0.5) {
                    let q = problem.fill(p.clone(), &mut self.rng);
                    if !self.seen.contains(&q) {
                        return Some(q);
                    }
                }
                return Some(p);
            }
        }
        None
    }

    /// Indices of at most `max` observations: the best quarter and the most recent.
    fn gp_subset(&self, max: usize) -> Vec<usize> {
        let n = self.data.len();
        if n <= max {
            return (0..n).collect();
        }
        let mut by_acc: Vec<usize> = (0..n).collect();
        by_acc.sort_by(|&a, &b| self.data[b].accuracy.total_cmp(&self.data[a].accuracy));
        let mut keep: HashSet<usize> = by_acc[..max / 4].iter().copied().collect();
        for i in (0..n).rev() {
            if keep.len() >= max {
                break;
            }
            keep.insert(i);
        }
        let mut v: Vec<usize> = keep.into_iter().collect();
        v.sort_unstable();
        v
    }

    /// The exact part of the scalarised objective (0 outside Pareto mode).
    fn cost_term(&self, w: f64, flops: u64, problem: &Problem) -> f64 {
        if self.pareto {
            -w * (flops.max(1) as f64 / problem.base_cost.flops.max(1) as f64).log2()
        } else {
            0.0
        }
    }
}

/// The trust region of one round of proposals (TuRBO), and the scalarisation weight.
struct Region {
    /// The cost weight of the scalarised objective (0 outside Pareto mode).
    w: f64,
    /// The incumbent's scalarised score, which the expected improvement is measured from.
    best: f64,
    center: Vec<f64>,
    /// Per-knob shape of the region (length scales over their geometric mean, clipped).
    weights: Vec<f64>,
    length: f64,
    /// Chance that a candidate moves each knob.
    prob: f64,
}

impl Bayes {
    /// The surrogate's training data (encoded points, accuracies) and its
    /// hyperparameters, refitted every `REFIT_EVERY` new observations.
    fn surrogate_data(&mut self, d: usize) -> (Vec<Vec<f64>>, Vec<f64>, Hyper) {
        let idx = self.gp_subset(MAX_GP_POINTS);
        let xs: Vec<Vec<f64>> = idx.iter().map(|&i| self.data[i].encoded.clone()).collect();
        let ys: Vec<f64> = idx.iter().map(|&i| self.data[i].accuracy).collect();
        let hyper = match &self.hyper {
            Some(h) if self.data.len() - self.fitted_at < REFIT_EVERY => h.clone(),
            prev => {
                let start = prev.clone().unwrap_or_else(|| Hyper::initial(d));
                let fit = self.gp_subset(REFIT_POINTS);
                let fx: Vec<Vec<f64>> = fit.iter().map(|&i| self.data[i].encoded.clone()).collect();
                let fy: Vec<f64> = fit.iter().map(|&i| self.data[i].accuracy).collect();
                let h = Gp::fit_hyper(&fx, &fy, &start, REFIT_ITERS);
                self.fitted_at = self.data.len();
                self.hyper = Some(h.clone());
                h
            }
        };
        (xs, ys, hyper)
    }

    /// The region around the incumbent (the best scalarised observation).
    fn region(&mut self, hyper: &Hyper, problem: &Problem) -> Region {
        let d = problem.space.dims();
        let w = if self.pareto {
            self.rng.random_range(0.0..0.1)
        } else {
            0.0
        };
        let score =
            |s: &Self, i: usize| s.data[i].accuracy + s.cost_term(w, s.data[i].flops, problem);
        let inc = (0..self.data.len())
            .max_by(|&a, &b| score(self, a).total_cmp(&score(self, b)))
            .expect("data present");
        // Length scales shape the region (TuRBO: l_i / geometric mean, clipped).
        let ls: Vec<f64> = hyper.log_ls.iter().map(|l| l.exp()).collect();
        let gmean = (ls.iter().map(|l| l.ln()).sum::<f64>() / d as f64).exp();
        Region {
            w,
            best: score(self, inc),
            center: self.data[inc].encoded.clone(),
            weights: ls.iter().map(|l| (l / gmean).clamp(0.25, 4.0)).collect(),
            length: self.tr.as_ref().expect("set before").length,
            prob: (20.0 / d as f64).min(1.0),
        }
    }

    /// Log expected improvement of `p` (None when seen or over the target).
    fn acquisition(&self, gp: &Gp, p: &Point, region: &Region, problem: &Problem) -> Option<f64> {
        if self.seen.contains(p) {
            return None;
        }
        let c = problem.cost(p);
        if !problem.admits(p, &c) {
            return None;
        }
        let (m, v) = gp.predict(&problem.space.encode(p));
        let shift = self.cost_term(region.w, c.flops, problem);
        Some(log_ei(m + shift, v.sqrt(), region.best))
    }

    /// The best of `CANDIDATES` points drawn in the region by moving a few knobs of the
    /// incumbent, by acquisition.
    fn best_candidate(
        &mut self,
        gp: &Gp,
        region: &Region,
        problem: &Problem,
    ) -> Option<(f64, Point)> {
        let d = problem.space.dims();
        let mut best: Option<(f64, Point)> = None;
        for _ in 0..CANDIDATES {
            let mut x = region.center.clone();
            let mut moved = false;
            for (j, xj) in x.iter_mut().enumerate() {
                if self.rng.random_bool(region.prob) {
                    let half = 0.5 * region.length * region.weights[j];
                    let c = region.center[j];
                    let (lo, hi) = ((c - half).max(0.0), (c + half).min(1.0));
                    *xj = self.rng.random_range(lo..=hi);
                    moved = true;
                }
            }
            if !moved {
                let j = self.rng.random_range(0..d);
                x[j] = self.rng.random_range(0.0..=1.0);
            }
            let p = problem.space.decode(&x);
            if let Some(a) = self.acquisition(gp, &p, region, problem)
                && best.as_ref().is_none_or(|b| a > b.0)
            {
                best = Some((a, p));
            }
        }
        best
    }

    /// Discrete hill climb from `(a, p)`: one level up or down per knob while it helps
    /// (two sweeps at most).
    fn hill_climb(
        &self,
        gp: &Gp,
        region: &Region,
        problem: &Problem,
        (mut a, mut p): (f64, Point),
    ) -> (f64, Point) {
        for _ in 0..2 {
            let mut improved = false;
            for j in 0..problem.space.dims() {
                for up in [true, false] {
                    let mut q = p.clone();
                    if up && q[j] + 1 < problem.space.knobs[j].levels {
                        q[j] += 1;
                    } else if !up && q[j] > 0 {
                        q[j] -= 1;
                    } else {
                        continue;
                    }
                    if let Some(b) = self.acquisition(gp, &q, region, problem)
                        && b > a
                    {
                        (a, p) = (b, q);
                        improved = true;
                    }
                }
            }
            if !improved {
                break;
            }
        }
        (a, p)
    }

    /// Random feasible points until `out` holds `n` (or none is left).
    fn fill_random(&mut self, n: usize, problem: &Problem, out: &mut Vec<Point>) {
        while out.len() < n {
            let Some(p) = self.random_feasible(problem) else {
                break;
            };
            self.seen.insert(p.clone());
            out.push(p);
        }
    }
}

impl Strategy for Bayes {
    fn propose(&mut self, n: usize, problem: &Problem) -> Vec<Point> {
        let mut out: Vec<Point> = Vec::with_capacity(n);
        for o in self.data.iter_mut().filter(|o| o.encoded.is_empty()) {
            o.encoded = problem.space.encode(&o.point);
        }
        problem.propose_warm_starts(n, &mut self.seen, &mut out);
        let d = problem.space.dims();
        if self.tr.is_none() {
            self.tr = Some(TrustRegion {
                length: TrustRegion::INIT,
                successes: 0,
                failures: 0,
                fail_tol: (d / 8).clamp(4, 10),
            });
        }
        while out.len() < n
            && (self.data.len() < 3 || self.proposed < Self::initial_design(problem))
        {
            let Some(p) = self.random_feasible(problem) else {
                break;
            };
            self.seen.insert(p.clone());
            self.proposed += 1;
            out.push(p);
        }
        if out.len() >= n || self.data.len() < 3 {
            return out;
        }
        let (mut xs, mut ys, hyper) = self.surrogate_data(d);
        let Some(mut gp) = Gp::fit(&xs, &ys, hyper.clone()) else {
            tracing::warn!("GP fit failed; proposing random points");
            self.fill_random(n, problem, &mut out);
            return out;
        };
        let region = self.region(&hyper, problem);
        while out.len() < n {
            let best = self.best_candidate(&gp, &region, problem);
            let Some((_, p)) = best.map(|c| self.hill_climb(&gp, &region, problem, c)) else {
                // Nothing feasible and new in the region: fall back to a random point.
                match self.random_feasible(problem) {
                    Some(p) => {
                        self.seen.insert(p.clone());
                        out.push(p);
                        continue;
                    }
                    None => break,
                }
            };
            self.seen.insert(p.clone());
            self.proposed += 1;
            // Kriging believer: the point joins the data at its posterior mean.
            if out.len() + 1 < n {
                let x = problem.space.encode(&p);
                xs.push(x.clone());
                ys.push(gp.predict(&x).0);
                if let Some(g) = Gp::fit(&xs, &ys, hyper.clone()) {
                    gp = g;
                }
            }
            out.push(p);
        }
        out
    }

    fn exclude(&mut self, point: &Point) {
        self.seen.insert(point.clone());
    }

    fn observe(&mut self, obs: &Observation) {
        self.seen.insert(obs.point.clone());
        let Some(acc) = obs.acc else { return };
        let improved = if self.pareto {
            // A success adds a point no earlier observation dominates.
            !self
                .data
                .iter()
                .any(|o| dominates((o.accuracy, o.flops), (acc, obs.flops)))
        } else {
            acc > self.best + 1e-3 * self.best.abs().max(1e-3)
        };
        self.best = self.best.max(acc);
        if let Some(tr) = &mut self.tr {
            tr.update(improved);
        }
        // Encoded at the next proposal, where the space is at hand.
        self.data.push(Observed {
            point: obs.point.clone(),
            encoded: Vec::new(),
            accuracy: acc,
            flops: obs.flops,
        });
    }
}
