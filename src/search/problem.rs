//! A search problem: the space, the base architecture, and the cost target. Costs are
//! exact (the cost counter on the candidate's architecture), so constraints are checked
//! before anything trains.

use super::space::{Point, Space};
use crate::budget::Objective;
use crate::compress::graph_config::config_layout;
use crate::config::LayerConfig;
use crate::cost::Cost;
use crate::model::latency::LatencyTable;
use crate::network::Network;
use crate::store::CandidateCost;
use rand::{Rng, RngExt};
use std::sync::{Arc, Mutex};

/// An anchored space's point lands on its target when it costs at least this share of a
/// bound (SLAMP's threshold steps are a filter at a time: far finer on real networks).
pub const ON_TARGET: f64 = 0.95;

/// Upper bounds on a candidate's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub max_flops: Option<u64>,
    pub max_params: Option<u64>,
    /// Predicted inference latency in microseconds (the study's latency table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_us: Option<u64>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = |v: Option<u64>| v.map_or("any".to_string(), |v| format!("<= {v}"));
        write!(
            f,
            "FLOPs {}, params {}",
            bound(self.max_flops),
            bound(self.max_params)
        )?;
        match self.max_latency_us {
            Some(us) => write!(f, ", latency <= {:.3} ms", us as f64 / 1e3),
            None => Ok(()),
        }
    }
}

impl Target {
    /// Bounds for reductions (e.g. 8.0 = at most 1/8 of the base's FLOPs).
    pub fn from_objective(base: &Cost, objective: &Objective) -> Self {
        let bound = |total: u64, r: Option<f64>| r.map(|r| (total as f64 / r).floor() as u64);
        Self {
            max_flops: bound(base.flops, objective.target_flops_reduction),
            max_params: bound(base.params, objective.target_params_reduction),
            max_latency_us: None,
        }
    }

    /// Whether FLOPs and params are within their bounds.
    pub fn admits_counts(&self, flops: u64, params: u64) -> bool {
        self.max_flops.is_none_or(|m| flops <= m) && self.max_params.is_none_or(|m| params <= m)
    }

    /// Whether a candidate meets every bound (one of unknown latency misses a latency
    /// bound).
    pub fn admits(&self, c: &CandidateCost) -> bool {
        self.admits_counts(c.flops, c.params) && self.admits_latency(c.latency_us)
    }

    /// Whether a latency (None: unknown) is within the latency bound, if any.
    pub fn admits_latency(&self, latency_us: Option<u64>) -> bool {
        self.max_latency_us
            .is_none_or(|m| latency_us.is_some_and(|l| l <= m))
    }
}

/// Everything a strategy may know: no weights, no data, no store.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The base network (a VGG plan's graph, a ResNet, an imported model).
    pub base: Network,
    pub base_cost: Cost,
    pub space: Space,
    pub target: Target,
    /// Warm-start points (feasible) that model-aware strategies propose first.
    pub warm_starts: Vec<Point>,
    /// The latency table that prices candidates, in a study with a latency target.
    pub latency: Option<Latency>,
}

/// A study's latency table, shared by the problem's clones, and the file it is saved
/// in.
#[derive(Debug, Clone)]
pub struct Latency {
    pub table: Arc<Mutex<LatencyTable>>,
    pub path: std::path::PathBuf,
}

impl Latency {
    /// Predicted microseconds of `graph`'s forward pass (layers the table lacks are
    /// timed now).
    pub fn predict_us(&self, graph: &crate::graph::Graph) -> u64 {
        let ms = self.table.lock().expect("the latency table").predict(graph);
        (ms * 1e3).round() as u64
    }

    /// Writes the table to its file.
    pub fn save(&self) -> std::io::Result<()> {
        self.table
            .lock()
            .expect("the latency table")
            .save(&self.path)
    }
}

impl Problem {
    /// Appends to `out`, up to `n` points in all, the feasible warm starts not in `seen`
    /// (marking them seen): every strategy proposes these first.
    pub fn propose_warm_starts(
        &self,
        n: usize,
        seen: &mut std::collections::HashSet<Point>,
        out: &mut Vec<Point>,
    ) {
        for p in &self.warm_starts {
            if out.len() < n && !seen.contains(p) && self.feasible(p) {
                seen.insert(p.clone());
                out.push(p.clone());
            }
        }
    }

    pub fn new(base: Network, space: Space, target: Target) -> Self {
        let base_cost = crate::graph::cost::count(&base.graph);
        Self {
            base,
            base_cost,
            space,
            target,
            warm_starts: Vec::new(),
            latency: None,
        }
    }

    /// Predicted latency of `graph` in microseconds, with a latency table.
    pub fn latency_us_of(&self, graph: &crate::graph::Graph) -> Option<u64> {
        self.latency.as_ref().map(|l| l.predict_us(graph))
    }

    /// Predicted latency of a point's model in microseconds, with a latency table.
    pub fn latency_us(&self, p: &[usize]) -> Option<u64> {
        self.latency_us_of(&self.layout(p))
    }

    /// The layout (decomposed and pruned graph) of a point's model.
    fn layout(&self, p: &[usize]) -> crate::graph::Graph {
        config_layout(&self.base.graph, &self.config(p))
            .expect("every point of a resolved space is a valid config")
    }

    /// A point's cost as a trial stores it: the counts, and the predicted latency where
    /// the study has a latency table.
    pub fn candidate_cost(&self, p: &[usize]) -> CandidateCost {
        let layout = self.layout(p);
        let c = crate::graph::cost::count(&layout);
        CandidateCost {
            flops: c.flops,
            params: c.params,
            size_bytes: c.size_bytes,
            latency_us: self.latency_us_of(&layout),
        }
    }

    /// Whether point `p`, whose counts are `c`, meets the whole target: the counts
    /// first, then (only then priced) its latency.
    fn fits(&self, p: &[usize], c: &Cost) -> bool {
        self.target.admits_counts(c.flops, c.params)
            && (self.target.max_latency_us.is_none()
                || self.target.admits_latency(self.latency_us(p)))
    }

    pub fn config(&self, p: &[usize]) -> LayerConfig {
        match &self.space.anchored {
            Some(a) => a.config(p, super::heuristic::prune_target(self, 1.0)),
            None => self.space.config(&self.base.graph, p),
        }
    }

    /// The point of a config: on a per-layer space's grids, or in an anchored space the
    /// knobs its provenance records, provided that point still builds this model (the
    /// target, the grids or the control's calibration may have changed since).
    pub fn point_of(&self, config: &LayerConfig) -> Result<Point, String> {
        let Some(a) = &self.space.anchored else {
            return self.space.point_of(config);
        };
        let p = a.knobs_of(config)?;
        // The same model: the same architecture (a stored config's ratios, read back
        // from JSON, may differ from the computed ones in their last bit).
        let arch = |c: &LayerConfig| config_layout(&self.base.graph, c).ok();
        if arch(&self.config(&p)).is_none_or(|a| Some(a) != arch(config)) {
            return Err(
                "its knobs build another model now: the study's target, the space's grids or the control's calibration changed"
                    .into(),
            );
        }
        a.register(&p, config);
        Ok(p)
    }

    /// Exact cost of a point's model.
    pub fn cost(&self, p: &[usize]) -> Cost {
        crate::graph::cost::count(&self.layout(p))
    }

    /// An observation of `point` with its exact cost.
    pub fn observation(&self, point: Point, acc: Option<f64>) -> Observation {
        let c = self.cost(&point);
        Observation {
            point,
            acc,
            flops: c.flops,
            params: c.params,
        }
    }

    /// Whether any cost bound applies.
    pub fn has_target(&self) -> bool {
        self.target != Target::default()
    }

    pub fn feasible(&self, p: &[usize]) -> bool {
        self.admits(p, &self.cost(p))
    }

    /// Whether a point of this space costing `c` may be proposed: it meets the target,
    /// and in an anchored space it also lands on it (within [`ON_TARGET`] of a bound),
    /// where ranks alone can undershoot it: such a point spends a fraction of the budget
    /// (at a calibration where VBMF gives rank 1, 40x fewer FLOPs for an 8x target).
    pub fn admits(&self, p: &[usize], c: &Cost) -> bool {
        let on = |v: u64, m: Option<u64>| m.is_some_and(|m| v as f64 >= ON_TARGET * m as f64);
        self.fits(p, c)
            && (self.space.anchored.is_none()
                || on(c.flops, self.target.max_flops)
                || on(c.params, self.target.max_params))
    }

    /// The conv a knob acts on most directly: the sub-conv or plain conv a ratio prunes,
    /// or the core (`_tucker_1`) whose size a rank sets.
    fn knob_conv(&self, i: usize) -> String {
        let k = &self.space.knobs[i];
        match k.kind {
            super::space::KnobKind::Ratio => k.layer.clone(),
            _ => format!("{}_tucker_1", k.layer),
        }
    }

    /// Moves `p` toward cheaper models until it meets the target: one step at a time
    /// (a ratio up or a rank down by one level), on a knob drawn in proportion to the
    /// FLOPs (or params, when only those are over) of the conv it acts on. `None` when no
    /// cheaper step is left.
    pub fn repair(&self, mut p: Point, rng: &mut impl Rng) -> Option<Point> {
        if self.space.anchored.is_some() {
            return self.repair_anchored(p, rng);
        }
        loop {
            let c = self.cost(&p);
            if self.fits(&p, &c) {
                return Some(p);
            }
            // Latency follows FLOPs most closely: a latency bound alone moves by FLOPs.
            let by_flops = self.target.max_flops.is_some_and(|m| c.flops > m)
                || self.target.admits_counts(c.flops, c.params);
            let weight = |name: &str| {
                c.layers
                    .iter()
                    .find(|l| l.name == name)
                    .map_or(0.0, |l| if by_flops { l.flops } else { l.params } as f64)
            };
            let moves: Vec<(usize, f64)> = self
                .space
                .knobs
                .iter()
                .enumerate()
                .filter(|(i, k)| {
                    if k.cheaper_up() {
                        p[*i] + 1 < k.levels
                    } else {
                        p[*i] > 0
                    }
                })
                .map(|(i, _)| (i, weight(&self.knob_conv(i)).max(1.0)))
                .collect();
            let total: f64 = moves.iter().map(|m| m.1).sum();
            if moves.is_empty() {
                return None;
            }
            let mut u = rng.random::<f64>() * total;
            let mut pick = moves[moves.len() - 1].0;
            for &(i, w) in &moves {
                if u < w {
                    pick = i;
                    break;
                }
                u -= w;
            }
            if self.space.knobs[pick].cheaper_up() {
                p[pick] += 1;
            } else {
                p[pick] -= 1;
            }
        }
    }

    /// An anchored space's point meets the target unless SLAMP cannot reach it at these
    /// ranks, and lands on it unless the ranks alone undershoot it: a random stage's
    /// calibration goes one level down (smaller ranks) or up until it does. `None` when
    /// no such move is left, or after `4 d` moves.
    fn repair_anchored(&self, mut p: Point, rng: &mut impl Rng) -> Option<Point> {
        use super::space::KnobKind;
        for _ in 0..4 * p.len() {
            let c = self.cost(&p);
            if self.admits(&p, &c) {
                return Some(p);
            }
            let over = !self.fits(&p, &c);
            let moves: Vec<usize> = (0..p.len())
                .filter(|&i| {
                    let k = &self.space.knobs[i];
                    k.kind == KnobKind::Calibration
                        && if over { p[i] > 0 } else { p[i] + 1 < k.levels }
                })
                .collect();
            if moves.is_empty() {
                return None;
            }
            let i = moves[rng.random_range(0..moves.len())];
            if over {
                p[i] -= 1;
            } else {
                p[i] += 1;
            }
        }
        None
    }

    /// Spends unused budget: moves random knobs one level dearer (a ratio down, a rank
    /// up) while the point stays feasible, until `2 d` moves in a row fail. Accuracy
    /// grows with capacity, so the best points lie on the budget's boundary. An anchored
    /// space's points already sit on it (SLAMP solves for the target): they are kept.
    pub fn fill(&self, mut p: Point, rng: &mut impl Rng) -> Point {
        if self.space.anchored.is_some() {
            return p;
        }
        let d = self.space.dims();
        let mut misses = 0;
        while misses < 2 * d {
            let i = rng.random_range(0..d);
            let k = &self.space.knobs[i];
            let old = p[i];
            if k.cheaper_up() && p[i] > 0 {
                p[i] -= 1;
            } else if !k.cheaper_up() && p[i] + 1 < k.levels {
                p[i] += 1;
            } else {
                misses += 1;
                continue;
            }
            if self.feasible(&p) {
                misses = 0;
            } else {
                p[i] = old;
                misses += 1;
            }
        }
        p
    }

    /// The space's cheapest point: every ratio at its highest, every rank at its lowest.
    pub fn cheapest_point(&self) -> Point {
        self.space
            .knobs
            .iter()
            .map(|k| if k.cheaper_up() { k.levels - 1 } else { 0 })
            .collect()
    }

    /// An error naming the objective's key and the reduction the space's cheapest point
    /// reaches, when even that point misses the target (no point can meet it). `space`
    /// names the search space in the error.
    pub fn check_reachable(&self, objective: &Objective, space: &str) -> Result<(), String> {
        let c = self.cost(&self.cheapest_point());
        check_reach(&self.target, &c, &self.base_cost, objective, space)
    }

    /// FLOPs reduction factor of a cost relative to the base.
    pub fn flops_reduction(&self, c: &Cost) -> f64 {
        self.base_cost.flops as f64 / c.flops.max(1) as f64
    }
}

/// An error naming the objective's key and the reduction `c` (a space's most compressed
/// model) reaches, when it misses `target`: then no point of the space can meet it.
/// `space` names the search space in the error.
pub fn check_reach(
    target: &Target,
    c: &Cost,
    base: &Cost,
    objective: &Objective,
    space: &str,
) -> Result<(), String> {
    use crate::compress::slamp::PruneTarget;
    let over = [
        (
            "objective.target_flops_reduction",
            objective.target_flops_reduction,
            target.max_flops.is_some_and(|m| c.flops > m),
            PruneTarget::FlopsReduction as fn(f64) -> PruneTarget,
        ),
        (
            "objective.target_params_reduction",
            objective.target_params_reduction,
            target.max_params.is_some_and(|m| c.params > m),
            PruneTarget::ParamsReduction,
        ),
    ];
    for (key, x, missed, make) in over {
        if let (Some(x), true) = (x, missed) {
            let (want, reached) = make(x).describe(c, base);
            return Err(format!(
                "{key} = {x}: {want} is out of reach of the search space {space}, whose most compressed model reaches {reached}"
            ));
        }
    }
    Ok(())
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
