//! A search problem: the space, the base architecture, and the cost target. Costs are
//! exact (the cost counter on the candidate's architecture), so constraints are checked
//! before anything trains.

use super::budget::Objective;
use super::space::{Point, Space};
use crate::arch::Arch;
use crate::config::LayerConfig;
use crate::cost::{self, Cost};

/// Upper bounds on a candidate's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target {
    pub max_flops: Option<u64>,
    pub max_params: Option<u64>,
}

impl Target {
    /// Bounds for reductions (e.g. 8.0 = at most 1/8 of the base's FLOPs).
    pub fn from_objective(base: &Cost, objective: &Objective) -> Self {
        let bound = |total: u64, r: Option<f64>| r.map(|r| (total as f64 / r).floor() as u64);
        Self {
            max_flops: bound(base.flops, objective.target_flops_reduction),
            max_params: bound(base.params, objective.target_params_reduction),
        }
    }

    pub fn admits(&self, flops: u64, params: u64) -> bool {
        self.max_flops.is_none_or(|m| flops <= m) && self.max_params.is_none_or(|m| params <= m)
    }
}

/// Everything a strategy may know: no weights, no data, no store.
#[derive(Debug, Clone)]
pub struct Problem {
    pub base: Arch,
    pub base_cost: Cost,
    pub space: Space,
    pub target: Target,
}

impl Problem {
    pub fn new(base: Arch, space: Space, target: Target) -> Self {
        let base_cost = cost::count(&base);
        Self {
            base,
            base_cost,
            space,
            target,
        }
    }

    pub fn config(&self, p: &[usize]) -> LayerConfig {
        self.space.config(&self.base, p)
    }

    /// Exact cost of a point's model.
    pub fn cost(&self, p: &[usize]) -> Cost {
        let arch = self
            .config(p)
            .apply(&self.base, "<search space>")
            .expect("every point of a resolved space is a valid config");
        cost::count(&arch)
    }

    pub fn feasible(&self, p: &[usize]) -> bool {
        let c = self.cost(p);
        self.target.admits(c.flops, c.params)
    }

    /// FLOPs reduction factor of a cost relative to the base.
    pub fn flops_reduction(&self, c: &Cost) -> f64 {
        self.base_cost.flops as f64 / c.flops.max(1) as f64
    }
}

/// A point together with its fixed figures, as strategies see results.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub point: Point,
    /// Proxy accuracy; `None` for a failed trial.
    pub acc: Option<f64>,
    pub flops: u64,
    pub params: u64,
}
