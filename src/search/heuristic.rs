//! The one-shot heuristic (the simple flow): VBMF ranks at a calibration ratio on the
//! layers the space decomposes, then SLAMP ratios for a cost target on the decomposed
//! weights, on the layers the space prunes (at most the space's largest ratio). The
//! warm starts are its points snapped to the space's grids; the final stage re-trains
//! its exact config at the study's target as the control.

use super::problem::Problem;
use super::space::{Knob, KnobKind};
use crate::Result;
use crate::compress::decompose::RankRecommendation;
use crate::compress::graph_config::{config_cost, config_layout, empty_config, ranks};
use crate::compress::graph_tucker::decompose_graph;
use crate::compress::group_prune::recommend_group_ratios;
use crate::compress::slamp::PruneTarget;
use crate::config::LayerConfig;
use crate::graph::groups::groups;
use crate::weights::Weights;
use indexmap::IndexMap;

/// A rank knob's value under VBMF at calibration `c` (its largest value for a layer VBMF
/// has no recommendation for).
pub fn vbmf_rank(k: &Knob, vbmf: &[RankRecommendation], c: f64) -> f64 {
    match vbmf.iter().find(|r| r.layer == k.layer) {
        Some(rec) => rec.at(c)[usize::from(k.kind == KnobKind::OutRank)] as f64,
        None => k.value(k.levels - 1),
    }
}

/// The largest pruning ratio the space allows (0 when it prunes nothing).
pub fn max_ratio(problem: &Problem) -> f64 {
    if let Some(a) = &problem.space.anchored {
        return a.max_ratio();
    }
    problem
        .space
        .knobs
        .iter()
        .filter(|k| k.kind == KnobKind::Ratio)
        .map(|k| k.value(k.levels - 1))
        .fold(0.0, f64::max)
}

/// SLAMP's ratios (by dependency group) for each of `targets` on the model that
/// `rank_config` (a config without pruning) decomposes the base into; a target SLAMP
/// cannot meet is left out (logged).
pub fn slamp_ratios(
    problem: &Problem,
    weights: &Weights,
    rank_config: &LayerConfig,
    targets: &[PruneTarget],
) -> Result<Vec<IndexMap<String, f64>>> {
    let max = max_ratio(problem);
    if max <= 0.0 {
        return Ok(vec![IndexMap::new(); targets.len()]);
    }
    let (graph, w) = decompose_graph(&problem.base.graph, weights, &ranks(rank_config))
        .map_err(|e| crate::Error::BadInput(format!("<heuristic>: {e}")))?;
    let mut out = Vec::new();
    for &t in targets {
        match recommend_group_ratios(&graph, &w, t, max, &problem.base_cost) {
            Ok(r) => out.push(r),
            Err(e) => tracing::debug!("heuristic: SLAMP {t:?}: {e}"),
        }
    }
    Ok(out)
}

/// The study's cost target `factor` times over, as a SLAMP target (None without one).
pub fn prune_target(problem: &Problem, factor: f64) -> Option<PruneTarget> {
    let (t, base) = (&problem.target, &problem.base_cost);
    match (t.max_flops, t.max_params) {
        (Some(m), _) => Some(PruneTarget::FlopsReduction(
            factor * base.flops as f64 / m as f64,
        )),
        (None, Some(m)) => Some(PruneTarget::ParamsReduction(
            factor * base.params as f64 / m as f64,
        )),
        // A latency bound alone: as many times fewer FLOPs (latency falls more slowly,
        // so the repair takes such a point further).
        (None, None) => problem.target.max_latency_us.map(|m| {
            let base_us = problem.latency_us_of(&problem.base.graph).unwrap_or(m);
            PruneTarget::FlopsReduction(factor * base_us as f64 / m.max(1) as f64)
        }),
    }
}

/// The heuristic's exact config at the study's target (VBMF at `calibration`, SLAMP for
/// the target itself): None when the study has no cost target, or SLAMP cannot meet it.
pub fn heuristic_config(
    problem: &Problem,
    weights: &Weights,
    vbmf: &[RankRecommendation],
    calibration: f64,
) -> Result<Option<LayerConfig>> {
    let Some(target) = prune_target(problem, 1.0) else {
        return Ok(None);
    };
    let mut config = empty_config(&problem.base.graph);
    let mut ranks: IndexMap<String, [usize; 2]> = IndexMap::new();
    for layer in &problem.space.decomposed {
        let rec = vbmf
            .iter()
            .find(|r| &r.layer == layer)
            .ok_or_else(|| crate::Error::Failure(format!("{layer}: no VBMF ranks")))?;
        ranks.insert(layer.clone(), rec.at(calibration));
    }
    config.set_ranks(ranks);
    // An anchored space prunes every conv group of the decomposed model.
    let layout = config_layout(&problem.base.graph, &config).map_err(crate::Error::BadInput)?;
    let ratio_layers: Vec<String> = match problem.space.anchored {
        Some(_) => groups(&layout).into_iter().map(|g| g.name).collect(),
        None => problem
            .space
            .knobs
            .iter()
            .filter(|k| k.kind == KnobKind::Ratio)
            .map(|k| k.layer.clone())
            .collect(),
    };
    if !ratio_layers.is_empty() {
        let Some(found) = slamp_ratios(problem, weights, &config, &[target])?.pop() else {
            return Ok(None);
        };
        config.set_ratios(
            ratio_layers
                .iter()
                .map(|l| (l.clone(), found.get(l).copied().unwrap_or(0.0)))
                .collect(),
        );
    }
    let cost = config_cost(&problem.base.graph, &config).map_err(crate::Error::BadInput)?;
    if !problem.target.admits_counts(cost.flops, cost.params) {
        tracing::warn!(
            flops = cost.flops,
            params = cost.params,
            target = %problem.target,
            "the heuristic's config misses a bound of the target (SLAMP met the FLOPs one)"
        );
    }
    Ok(Some(config))
}
