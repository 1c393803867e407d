//! SLAMP: a structured LAMP score per filter (Lee et al., ICLR 2021, "Layer-adaptive
//! sparsity for the magnitude-based pruning", Eq. 2, with filters in place of weights),
//! and a global threshold chosen so that the pruned model meets a target (its groups'
//! scores and costs come from [`super::group_prune`]).

use crate::cost;
use crate::{Error, Result};
use indexmap::IndexMap;

/// What the pruned model must reach. Reductions are always relative to the original,
/// uncompressed model, whatever was decomposed before pruning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PruneTarget {
    /// Remove at least this fraction of all filters (the reference's "pruning_ratio").
    Ratio(f64),
    /// FLOPs at most original / X.
    FlopsReduction(f64),
    /// Params at most original / X.
    ParamsReduction(f64),
}

impl PruneTarget {
    /// Whether a model costing `c` meets a reduction target against `original` (a ratio
    /// target is about filters, never met by a cost alone).
    pub fn met_by(&self, c: &cost::Cost, original: &cost::Cost) -> bool {
        match *self {
            PruneTarget::FlopsReduction(x) => {
                c.flops as f64 * x <= original.flops as f64 * (1.0 + 1e-12)
            }
            PruneTarget::ParamsReduction(x) => {
                c.params as f64 * x <= original.params as f64 * (1.0 + 1e-12)
            }
            PruneTarget::Ratio(_) => false,
        }
    }

    /// "8.00x fewer FLOPs" style description, and the reduction `c` reaches.
    pub fn describe(&self, c: &cost::Cost, original: &cost::Cost) -> (String, String) {
        match *self {
            PruneTarget::FlopsReduction(x) => (
                format!("{x:.2}x fewer FLOPs than the original"),
                format!(
                    "{:.2}x ({:.2} MFLOPs)",
                    original.flops as f64 / c.flops.max(1) as f64,
                    c.flops as f64 / 1e6
                ),
            ),
            PruneTarget::ParamsReduction(x) => (
                format!("{x:.2}x fewer params than the original"),
                format!(
                    "{:.2}x ({:.3}M params)",
                    original.params as f64 / c.params.max(1) as f64,
                    c.params as f64 / 1e6
                ),
            ),
            PruneTarget::Ratio(r) => (format!("a filter ratio of {r}"), String::new()),
        }
    }
}

/// s_j = ||F_j||^2 / sum over filters k with ||F_k|| >= ||F_j|| of ||F_k||^2.
pub fn slamp_scores(norms: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..norms.len()).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]));
    let mut scores = vec![0.0; norms.len()];
    let mut i = 0;
    let mut sum = 0.0;
    while i < order.len() {
        // Filters with equal norms share one denominator (all of them are ">=").
        let mut j = i;
        while j < order.len() && norms[order[j]] == norms[order[i]] {
            sum += norms[order[j]].powi(2);
            j += 1;
        }
        for &k in &order[i..j] {
            scores[k] = if sum > 0.0 {
                norms[k].powi(2) / sum
            } else {
                0.0
            };
        }
        i = j;
    }
    scores
}

/// Refuses a ratio cap or a target out of range.
pub fn check_target(target: PruneTarget, max_ratio: f64) -> Result<()> {
    if !(0.0..1.0).contains(&max_ratio) {
        return Err(Error::BadInput(format!(
            "--max-ratio {max_ratio}: allowed [0, 1)"
        )));
    }
    match target {
        PruneTarget::Ratio(r) if !(0.0..1.0).contains(&r) => {
            Err(Error::BadInput(format!("--ratio {r}: allowed [0, 1)")))
        }
        PruneTarget::FlopsReduction(x) | PruneTarget::ParamsReduction(x)
            if !(x >= 1.0 && x.is_finite()) =>
        {
            Err(Error::BadInput(format!("reduction {x}: allowed >= 1")))
        }
        _ => Ok(()),
    }
}

/// The global threshold's ratios for `layers` (each a name and one score per filter, or
/// per channel of a group): `pruned_cost` gives the model's cost with `removed[i]`
/// filters gone from `layers[i]`.
pub fn threshold_ratios(
    layers: &[(String, Vec<f64>)],
    target: PruneTarget,
    max_ratio: f64,
    original: &cost::Cost,
    pruned_cost: impl Fn(&[usize]) -> cost::Cost,
) -> Result<IndexMap<String, f64>> {
    let total_filters: usize = layers.iter().map(|(_, s)| s.len()).sum();
    // Filters removed from each layer when every score <= t goes (clamped).
    let removed_at = |t: f64| -> Vec<usize> {
        layers
            .iter()
            .map(|(_, s)| {
                let n = s.len();
                let cap = ((n as f64 * max_ratio + 1e-9).floor() as usize).min(n - 1);
                s.iter().filter(|&&v| v <= t).count().min(cap)
            })
            .collect()
    };
    let meets = |removed: &[usize]| -> bool {
        match target {
            PruneTarget::Ratio(r) => {
                removed.iter().sum::<usize>() as f64 >= r * total_filters as f64 - 1e-9
            }
            _ => target.met_by(&pruned_cost(removed), original),
        }
    };
    let mut candidates: Vec<f64> = layers.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    candidates.push(-1.0); // prune nothing
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    let last = *candidates.last().expect("at least one candidate");
    let most = removed_at(last);
    if !meets(&most) {
        let (want, mut reached) = target.describe(&pruned_cost(&most), original);
        if reached.is_empty() {
            let removed: usize = most.iter().sum();
            reached = format!(
                "{:.3} of all filters",
                removed as f64 / total_filters as f64
            );
        }
        return Err(Error::BadInput(format!(
            "target {want} is out of reach with at most {max_ratio} of each layer's filters removed (--max-ratio): the closest is {reached}"
        )));
    }
    // Smallest candidate threshold that meets the target (monotone: more removed, cheaper).
    let (mut lo, mut hi) = (0, candidates.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if meets(&removed_at(candidates[mid])) {
            hi = mid
        } else {
            lo = mid + 1
        }
    }
    let removed = removed_at(candidates[lo]);
    Ok(layers
        .iter()
        .zip(removed)
        .map(|((name, s), k)| (name.clone(), k as f64 / s.len() as f64))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_by_hand() {
        // Norms 1, 2, 3: squares 1, 4, 9. Largest scores 1; 2 scores 4/13; 1 scores 1/14.
        let s = slamp_scores(&[1.0, 3.0, 2.0]);
        assert!((s[1] - 1.0).abs() < 1e-12);
        assert!((s[2] - 4.0 / 13.0).abs() < 1e-12);
        assert!((s[0] - 1.0 / 14.0).abs() < 1e-12);
        // Ties share the denominator.
        let s = slamp_scores(&[2.0, 2.0]);
        assert!((s[0] - 0.5).abs() < 1e-12 && (s[1] - 0.5).abs() < 1e-12);
    }
}
