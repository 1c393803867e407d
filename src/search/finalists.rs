//! Which trials the final stage re-trains: the top-k completed trials by proxy accuracy,
//! then the first warm-start seeds. A short proxy fine-tune can rank a seed built like the
//! simple flow (VBMF ranks, SLAMP ratios) far below where full training puts it; re-training
//! it too means the search's winner is chosen, by validation, from a set that holds the
//! simple flow's candidate.

use super::problem::Target;
use crate::store::{Trial, TrialState};

/// The trials to re-train, in order: top-k by proxy accuracy (completed, meeting the
/// target), then each trial of `seed_ids` not already listed that meets the target and was
/// completed or stopped early by the median rule (its config is sound; only its proxy was
/// short). `seed_ids` are trial ids in seed order.
pub fn finalists<'a>(
    trials: &'a [Trial],
    target: &Target,
    top_k: usize,
    seed_ids: &[i64],
) -> Vec<&'a Trial> {
    let admitted = |t: &Trial| target.admits(t.cost.flops, t.cost.params);
    let mut out: Vec<&Trial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && admitted(t))
        .collect();
    out.sort_by(|a, b| {
        b.proxy_acc
            .unwrap_or(0.0)
            .total_cmp(&a.proxy_acc.unwrap_or(0.0))
    });
    out.truncate(top_k);
    for id in seed_ids {
        let Some(t) = trials.iter().find(|t| t.id == *id) else {
            continue;
        };
        let sound = matches!(t.state, TrialState::Complete | TrialState::Pruned);
        if sound && admitted(t) && !out.iter().any(|o| o.id == t.id) {
            out.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CandidateCost;

    fn trial(id: i64, state: TrialState, proxy: Option<f64>, flops: u64) -> Trial {
        Trial {
            id,
            study_id: 1,
            number: id - 1,
            state,
            config: String::new(),
            cost: CandidateCost {
                flops,
                params: 10,
                size_bytes: 40,
            },
            proxy_acc: proxy,
            proxy_loss: None,
            worker: None,
            error: None,
            queued_at: 0.0,
            started_at: None,
            finished_at: None,
        }
    }

    fn ids(v: &[&Trial]) -> Vec<i64> {
        v.iter().map(|t| t.id).collect()
    }

    #[test]
    fn top_k_by_proxy_then_sound_seeds_in_seed_order() {
        use TrialState::*;
        let trials = vec![
            trial(1, Complete, Some(0.53), 80),  // seed 0, low proxy
            trial(2, Complete, Some(0.67), 80),  // seed 1, also in the top-k
            trial(3, Pruned, Some(0.09), 80),    // seed 2, stopped early
            trial(4, Failed, None, 80),          // seed 3, diverged
            trial(5, Complete, Some(0.30), 200), // seed 4, over the target
            trial(6, Complete, Some(0.75), 80),
            trial(7, Complete, Some(0.72), 80),
            trial(8, Complete, Some(0.99), 200), // best proxy, over the target
            trial(9, Pruned, Some(0.98), 80),    // pruned, not a seed
        ];
        let target = Target {
            max_flops: Some(100),
            max_params: None,
        };
        // Top-3 by proxy among completed trials meeting the target: 6, 7, 2.
        assert_eq!(ids(&finalists(&trials, &target, 3, &[])), vec![6, 7, 2]);
        // Seeds follow, in seed order, once each; failed and over-target ones never.
        assert_eq!(
            ids(&finalists(&trials, &target, 3, &[1, 2, 3, 4, 5])),
            vec![6, 7, 2, 1, 3]
        );
        assert_eq!(ids(&finalists(&trials, &target, 0, &[3, 1])), vec![3, 1]);
        // An id that is not a trial (a seed never run) is skipped.
        assert_eq!(ids(&finalists(&trials, &target, 1, &[42, 1])), vec![6, 1]);
    }
}
