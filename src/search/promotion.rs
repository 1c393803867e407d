//! The rule that stops trials at a rung: below the minimum accuracy, or outside the top
//! 1/eta of the trials scored at that rung so far (asynchronous successive halving, Li et
//! al., MLSys 2020, in its stopping form; eta = 2 is the median stopping rule).

use super::trial::Verdict;
use crate::budget::{Proxy, Rung0Score};
use crate::stats::{kendall_tau, quantile};
use crate::store::RungFidelity;

/// Scores needed at a rung before trials are compared there.
pub const MIN_COMPARED: usize = 3;

/// The verdict for a trial scoring `acc` at `step`, where `others` are the scores of the
/// other trials at that step.
pub fn verdict(proxy: &Proxy, step: usize, acc: f64, others: &[f64]) -> Verdict {
    if !proxy.rungs.contains(&step) {
        return Verdict::Continue;
    }
    let is_accuracy = step > 0 || proxy.rung0_score == Rung0Score::Accuracy;
    if is_accuracy && acc < proxy.early_stop_min_acc {
        return Verdict::Stop;
    }
    if proxy.early_stop_median
        && others.len() >= MIN_COMPARED
        && acc < quantile(others, 1.0 - 1.0 / proxy.eta)
    {
        return Verdict::Stop;
    }
    Verdict::Continue
}

/// One re-trained trial's scores: its reports `(step, accuracy)`, its proxy accuracy and
/// its validation accuracy after re-training.
pub struct Retrained {
    pub reports: Vec<(i64, f64)>,
    pub proxy_acc: Option<f64>,
    pub val: f64,
}

/// Kendall's tau of every rung's scores, and of the proxy accuracy (recorded at step
/// `proxy.steps`), against validation accuracy after re-training.
pub fn rung_fidelity(proxy: &Proxy, trials: &[Retrained]) -> Vec<RungFidelity> {
    let mut steps: Vec<i64> = proxy.rungs.iter().map(|&s| s as i64).collect();
    steps.push(proxy.steps as i64);
    steps.dedup();
    steps
        .into_iter()
        .map(|step| {
            let pairs: Vec<(f64, f64)> = trials
                .iter()
                .filter_map(|t| {
                    let at = t.reports.iter().find(|r| r.0 == step).map(|r| r.1);
                    let score = if step == proxy.steps as i64 {
                        t.proxy_acc.or(at)
                    } else {
                        at
                    };
                    Some((score?, t.val))
                })
                .collect();
            let (x, y): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
            let tau = kendall_tau(&x, &y);
            RungFidelity {
                step,
                n: x.len() as i64,
                kendall_tau: tau.is_finite().then_some(tau),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rung_fidelity_pairs_each_rung_with_the_retrained_accuracy() {
        let p = Proxy {
            rungs: vec![0, 50],
            steps: 100,
            ..Proxy::default()
        };
        let t = |reports: &[(i64, f64)], proxy: Option<f64>, val| Retrained {
            reports: reports.to_vec(),
            proxy_acc: proxy,
            val,
        };
        let trials = [
            t(&[(0, 0.1), (50, 0.5)], Some(0.7), 0.90),
            t(&[(0, 0.3), (50, 0.4)], Some(0.6), 0.92),
            t(&[(0, 0.2), (50, 0.6)], Some(0.8), 0.94),
            t(&[(0, 0.4)], None, 0.91), // stopped at step 0, re-trained as a warm start
        ];
        let rows = rung_fidelity(&p, &trials);
        assert_eq!(
            rows.iter().map(|r| (r.step, r.n)).collect::<Vec<_>>(),
            vec![(0, 4), (50, 3), (100, 3)]
        );
        // Step 0: pairs (0.1, .90) (0.3, .92) (0.2, .94) (0.4, .91): 3 concordant, 3 discordant.
        assert_eq!(rows[0].kendall_tau, Some(0.0));
        // Step 50: (0.5, .90) (0.4, .92) (0.6, .94): 2 concordant, 1 discordant: 1/3.
        assert!((rows[1].kendall_tau.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        // The proxy accuracy orders the three like their re-training: tau 1/3 too
        // ((0.7, .90) (0.6, .92) (0.8, .94)).
        assert!((rows[2].kendall_tau.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        let one = rung_fidelity(&p, &trials[..1]);
        assert_eq!(one[0].kendall_tau, None, "undefined with one trial");
    }

    fn proxy(rungs: &[usize], eta: f64, min_acc: f64) -> Proxy {
        Proxy {
            rungs: rungs.to_vec(),
            eta,
            early_stop_min_acc: min_acc,
            ..Proxy::default()
        }
    }

    #[test]
    fn only_rungs_judge() {
        let p = proxy(&[0, 50], 2.0, 0.5);
        assert_eq!(verdict(&p, 10, 0.0, &[0.9; 5]), Verdict::Continue);
        assert_eq!(verdict(&p, 0, 0.4, &[]), Verdict::Stop, "below the minimum");
        assert_eq!(verdict(&p, 50, 0.6, &[]), Verdict::Continue);
    }

    #[test]
    fn median_rule_is_eta_two_and_waits_for_three_scores() {
        let p = proxy(&[20], 2.0, 0.0);
        assert_eq!(
            verdict(&p, 20, 0.1, &[0.8, 0.9]),
            Verdict::Continue,
            "too few to compare"
        );
        let others = [0.2, 0.4, 0.6, 0.8];
        // Median 0.5: below stops, at or above continues.
        assert_eq!(verdict(&p, 20, 0.49, &others), Verdict::Stop);
        assert_eq!(verdict(&p, 20, 0.5, &others), Verdict::Continue);
        let off = Proxy {
            early_stop_median: false,
            ..p
        };
        assert_eq!(verdict(&off, 20, 0.0, &others), Verdict::Continue);
    }

    #[test]
    fn a_kl_score_at_step_zero_is_not_held_to_the_minimum_accuracy() {
        let p = Proxy {
            rung0_score: Rung0Score::Kl,
            ..proxy(&[0, 10], 2.0, 0.5)
        };
        assert_eq!(verdict(&p, 0, -2.3, &[]), Verdict::Continue);
        assert_eq!(verdict(&p, 0, -2.3, &[-2.0, -2.1, -2.2]), Verdict::Stop);
        assert_eq!(verdict(&p, 10, 0.4, &[]), Verdict::Stop);
    }

    #[test]
    fn eta_three_keeps_the_top_third() {
        let p = proxy(&[0], 3.0, 0.0);
        let others = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
        // The 2/3 quantile of the others is 0.5.
        assert_eq!(verdict(&p, 0, 0.45, &others), Verdict::Stop);
        assert_eq!(verdict(&p, 0, 0.55, &others), Verdict::Continue);
    }
}
