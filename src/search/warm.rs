//! Warm-start points: the one-shot heuristic ([`super::heuristic`]) at several
//! calibration ratios, each with SLAMP ratios for global targets at and just past the
//! FLOPs target (global filter ratios without one), snapped to the space's grids and repaired to meet the target. Computed
//! once per study from the base weights.

use super::heuristic::{prune_target, slamp_ratios, vbmf_rank};
use super::problem::Problem;
use super::space::{KnobKind, Point};
use crate::Result;
use crate::compress::decompose::RankRecommendation;
use crate::compress::slamp::PruneTarget;
use crate::config::LayerConfig;
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
    if let Some(a) = &space.anchored {
        // The heuristic's own point, then every stage one calibration level up and down
        // (the per-layer warm start's 0.25 and -0.25 on the default grid).
        let points = [
            Some(a.heuristic_point()),
            a.shifted_heuristic(1),
            a.shifted_heuristic(-1),
        ];
        return Ok(points
            .into_iter()
            .flatten()
            .filter(|p| problem.feasible(p))
            .collect());
    }
    let mut rng = StdRng::seed_from_u64(0);
    let mut out: Vec<Point> = Vec::new();
    let calibrations: &[f64] = if space.decomposed.is_empty() {
        &[0.0]
    } else {
        &CALIBRATIONS
    };
    for (ci, &c) in calibrations.iter().enumerate() {
        let mut p: Point = vec![0; space.dims()];
        for (i, k) in space.knobs.iter().enumerate() {
            if k.kind != KnobKind::Ratio {
                p[i] = k.nearest_level(vbmf_rank(k, vbmf, c));
            }
        }
        // The decomposed model at these ranks, unpruned.
        let ranks_only = {
            let mut cfg = problem.config(&p);
            cfg.pruning = None;
            cfg
        };
        let factors = if ci == 0 {
            &TARGET_FACTORS[..]
        } else {
            &TARGET_FACTORS[..1]
        };
        let targets: Vec<PruneTarget> = match problem.target.max_flops {
            Some(_) => factors
                .iter()
                .filter_map(|&f| prune_target(problem, f))
                .collect(),
            None => PARETO_RATIOS
                .iter()
                .map(|&r| PruneTarget::Ratio(r))
                .collect(),
        };
        // One map per target (empty ones when the space prunes nothing), each repaired.
        let all_ratios = slamp_ratios(problem, weights, &ranks_only, &targets)?;
        for ratios in all_ratios {
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

/// The point of a given config (another study's winner): an anchored space's knobs as
/// its provenance records them; otherwise every rank and ratio snapped to the nearest
/// level of its knob (a layer the config leaves whole at its highest rank, unpruned at
/// ratio 0), then repaired to meet the target. An error says why no point fits.
pub fn snapped(problem: &Problem, config: &LayerConfig) -> Result<Point, String> {
    if problem.space.anchored.is_some() {
        let p = problem.point_of(config)?;
        return match problem.feasible(&p) {
            true => Ok(p),
            false => Err("its point misses the study's target".into()),
        };
    }
    let ranks = config.decomposition.as_ref().map(|d| &d.ranks);
    let ratios = config.pruning.as_ref().map(|p| &p.ratios);
    let p: Point = problem
        .space
        .knobs
        .iter()
        .map(|k| {
            let side = usize::from(k.kind == KnobKind::OutRank);
            let v = match k.kind {
                KnobKind::Ratio => ratios.and_then(|r| r.get(&k.layer)).copied().unwrap_or(0.0),
                _ => ranks
                    .and_then(|r| r.get(&k.layer))
                    .map_or(k.value(k.levels - 1), |r| r[side] as f64),
            };
            k.nearest_level(v)
        })
        .collect();
    problem
        .repair(p, &mut StdRng::seed_from_u64(0))
        .ok_or_else(|| "no point of the space near it meets the study's target".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;
    use crate::search::problem::Target;
    use crate::search::space::SpaceFile;
    use rand::RngExt;

    #[test]
    fn a_given_config_snaps_to_the_nearest_levels() {
        let base = ArchSpec::parse("cfg_bn:16,M,24,24,M").unwrap().build(10);
        let space = SpaceFile::from_toml(
            "[decomposition]\nrank = \"fraction\"\nmin = 0.0\nmax = 1.0\n[pruning]\nmax = 0.5\nstep = 0.25",
            "t",
        )
        .unwrap()
        .resolve(&crate::graph::build::of_arch(&base), None, "t")
        .unwrap();
        let problem = Problem::new(base.into(), space, Target::default());
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..10 {
            // A point's own config gives the point back.
            let p = problem.space.random_point(&mut rng);
            assert_eq!(snapped(&problem, &problem.config(&p)), Ok(p.clone()));
            // Off the grid: every value goes to its nearest level.
            let mut c = problem.config(&p);
            for r in c.pruning.as_mut().unwrap().ratios.values_mut() {
                *r = (*r + rng.random_range(-0.1..0.1)).clamp(0.0, 0.5);
            }
            let q = snapped(&problem, &c).unwrap();
            for (k, (&l, want)) in problem.space.knobs.iter().zip(q.iter().zip(&p)) {
                if k.kind == KnobKind::Ratio {
                    let v = c.pruning.as_ref().unwrap().ratios[&k.layer];
                    assert_eq!(l, k.nearest_level(v), "{} {v}", k.layer);
                } else {
                    assert_eq!(l, *want);
                }
            }
        }
        // A layer the config leaves whole: its highest ranks; unpruned: ratio 0.
        let mut c = problem.config(&problem.space.random_point(&mut rng));
        c.decomposition = None;
        c.pruning = None;
        let q = snapped(&problem, &c).unwrap();
        for (k, &l) in problem.space.knobs.iter().zip(&q) {
            let want = if k.kind == KnobKind::Ratio {
                0
            } else {
                k.levels - 1
            };
            assert_eq!(l, want, "{k:?}");
        }
    }
}
