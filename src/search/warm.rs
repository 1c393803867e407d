//! Warm-start points: VBMF ranks at several calibration ratios, each with SLAMP ratios
//! for global targets at and just past the FLOPs target, snapped to the space's grids
//! and repaired to meet the target. Computed once per study from the base weights.

use super::problem::Problem;
use super::space::{KnobKind, Point};
use crate::Result;
use crate::compress::decompose::{RankRecommendation, decompose_model};
use crate::compress::slamp::{PruneTarget, recommend_ratios};
use crate::compress::vbmf::calibrated_rank;
use crate::weights::Weights;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Calibration ratios tried, in order.
const CALIBRATIONS: [f64; 3] = [0.0, 0.25, -0.25];
/// SLAMP targets as multiples of the FLOPs target (first calibration only gets all).
const TARGET_FACTORS: [f64; 3] = [1.0, 1.15, 1.3];
/// Global filter ratios used when the objective has no FLOPs target.
const PARETO_RATIOS: [f64; 3] = [0.2, 0.4, 0.6];

/// Feasible, distinct warm-start points (possibly none).
pub fn warm_start(
    problem: &Problem,
    weights: &Weights,
    vbmf: &[RankRecommendation],
) -> Result<Vec<Point>> {
    let space = &problem.space;
    let mut rng = StdRng::seed_from_u64(0);
    let mut out: Vec<Point> = Vec::new();
    let has_ranks = !space.decomposed.is_empty();
    let calibrations: &[f64] = if has_ranks { &CALIBRATIONS } else { &[0.0] };
    let max_ratio = space
        .knobs
        .iter()
        .filter(|k| k.kind == KnobKind::Ratio)
        .map(|k| k.value(k.levels - 1))
        .fold(0.0, f64::max);
    for (ci, &c) in calibrations.iter().enumerate() {
        let mut p: Point = vec![0; space.dims()];
        for (i, k) in space.knobs.iter().enumerate() {
            if k.kind == KnobKind::Ratio {
                continue;
            }
            let Some(rec) = vbmf.iter().find(|r| r.layer == k.layer) else {
                p[i] = k.levels - 1;
                continue;
            };
            let side = usize::from(k.kind == KnobKind::OutRank);
            p[i] = k.nearest_level(calibrated_rank(rec.vbmf[side], rec.full[side], c) as f64);
        }
        // The decomposed model at these ranks, unpruned.
        let ranks_only = {
            let mut cfg = problem.config(&p);
            cfg.pruning = None;
            cfg
        };
        let (arch, w, _) = decompose_model(
            &problem.base,
            weights,
            &ranks_only,
            "<warm start>",
            None,
            |_| {},
        )?;
        let targets: Vec<PruneTarget> = match problem.target.max_flops {
            Some(m) => {
                let factors: &[f64] = if ci == 0 {
                    &TARGET_FACTORS
                } else {
                    &TARGET_FACTORS[..1]
                };
                factors
                    .iter()
                    .map(|f| {
                        PruneTarget::FlopsReduction(f * problem.base_cost.flops as f64 / m as f64)
                    })
                    .collect()
            }
            None => PARETO_RATIOS
                .iter()
                .map(|&r| PruneTarget::Ratio(r))
                .collect(),
        };
        for t in targets {
            let ratios = if max_ratio > 0.0 {
                match recommend_ratios(&arch, &w, t, max_ratio, &problem.base_cost) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("warm start: SLAMP {t:?}: {e}");
                        continue;
                    }
                }
            } else {
                Default::default()
            };
            let mut q = p.clone();
            for (i, k) in space.knobs.iter().enumerate() {
                if k.kind == KnobKind::Ratio {
                    q[i] = k.nearest_level(ratios.get(&k.layer).copied().unwrap_or(0.0));
                }
            }
            if let Some(q) = problem.repair(q, &mut rng)
                && !out.contains(&q)
            {
                out.push(q);
            }
        }
    }
    Ok(out)
}
