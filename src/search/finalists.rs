//! Which trials the final stage re-trains: the top-k completed trials by proxy accuracy,
//! and the best warm starts by proxy. A short proxy fine-tune can rank a warm start built
//! like the simple flow (VBMF ranks, SLAMP ratios) far below where full training puts it;
//! giving the warm starts their own bracket means the search's winner is chosen, by validation,
//! from a set that holds the simple flow's candidate. Within the bracket the proxy still
//! ranks, so a degenerate warm start (VBMF rank 1 everywhere on a barely trained base) does not
//! take the place.

use super::problem::Target;
use crate::store::{Trial, TrialState};

/// Why a trial is re-trained; stored with its final result.
pub const TOP_K: &str = "top_k";
pub const WARM_START: &str = "warm_start";

/// The trials to re-train, in order, each with why: the `top_k` best by proxy accuracy
/// (completed, meeting the target; [`TOP_K`]), then the `warm_starts` best by proxy among the
/// warm-start trials of `warm_start_ids` that meet the target and were completed or stopped
/// early at a rung (the config is sound; only its proxy was short; [`WARM_START`]). A
/// trial is listed once.
pub fn finalists<'a>(
    trials: &'a [Trial],
    target: &Target,
    top_k: usize,
    warm_start_ids: &[i64],
    warm_starts: usize,
) -> Vec<(&'a Trial, &'static str)> {
    let admitted = |t: &&Trial| target.admits(&t.cost);
    let by_proxy = |a: &&Trial, b: &&Trial| {
        b.proxy_acc
            .unwrap_or(0.0)
            .total_cmp(&a.proxy_acc.unwrap_or(0.0))
    };
    let mut out: Vec<&Trial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter(admitted)
        .collect();
    out.sort_by(by_proxy);
    out.truncate(top_k);
    let mut out: Vec<(&Trial, &str)> = out.into_iter().map(|t| (t, TOP_K)).collect();
    let mut warm: Vec<&Trial> = trials
        .iter()
        .filter(|t| warm_start_ids.contains(&t.id))
        .filter(|t| matches!(t.state, TrialState::Complete | TrialState::EarlyStopped))
        .filter(admitted)
        .collect();
    warm.sort_by(by_proxy);
    for t in warm.into_iter().take(warm_starts) {
        if !out.iter().any(|o| o.0.id == t.id) {
            out.push((t, WARM_START));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[(&Trial, &str)]) -> Vec<i64> {
        v.iter().map(|t| t.0.id).collect()
    }

    #[test]
    fn top_k_by_proxy_then_the_best_sound_warm_starts_by_proxy() {
        use TrialState::*;
        let trials = vec![
            Trial::fixture(1, Complete, Some(0.12), 80), // warm start, degenerate
            Trial::fixture(2, Complete, Some(0.53), 80), // warm start
            Trial::fixture(3, EarlyStopped, Some(0.40), 80), // warm start, stopped early
            Trial::fixture(4, Failed, None, 80),         // warm start, diverged
            Trial::fixture(5, Complete, Some(0.90), 200), // warm start, over the target
            Trial::fixture(6, Complete, Some(0.75), 80),
            Trial::fixture(7, Complete, Some(0.72), 80),
            Trial::fixture(8, Complete, Some(0.99), 200), // best proxy, over the target
            Trial::fixture(9, EarlyStopped, Some(0.98), 80), // stopped early, not a warm start
            Trial::fixture(10, Complete, Some(0.67), 80), // warm start, in the top-3
        ];
        let target = Target {
            max_flops: Some(100),
            max_params: None,
            max_latency_us: None,
        };
        let warm = [1, 2, 3, 4, 5, 10];
        // Top-3 by proxy among completed trials meeting the target: 6, 7, 10.
        assert_eq!(
            ids(&finalists(&trials, &target, 3, &warm, 0)),
            vec![6, 7, 10]
        );
        // The best sound warm starts meeting the target: 10 (listed already), 2, 3; never 4 or 5.
        let four = finalists(&trials, &target, 3, &warm, 2);
        assert_eq!(ids(&four), vec![6, 7, 10, 2]);
        let why: Vec<&str> = four.iter().map(|f| f.1).collect();
        assert_eq!(why, vec![TOP_K, TOP_K, TOP_K, WARM_START]);
        assert_eq!(
            ids(&finalists(&trials, &target, 3, &warm, 9)),
            vec![6, 7, 10, 2, 3, 1]
        );
        assert_eq!(ids(&finalists(&trials, &target, 0, &warm, 2)), vec![10, 2]);
        // Ids that are no trial (a warm start never run) are ignored.
        assert_eq!(
            ids(&finalists(&trials, &target, 1, &[42, 3], 1)),
            vec![6, 3]
        );
    }
}
