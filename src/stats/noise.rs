//! Seed noise: how far one training run's score moves with its seed, and what that lets a
//! ranking or a comparison claim. `runs[c][s]` is candidate c's score after training with
//! seed s; every candidate is trained with the same seeds (the same data orders and
//! augmentations), so the runs are paired by seed.

use super::{kendall_tau, spearman_rho};
use serde::{Deserialize, Deserializer, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The sample standard deviation (n - 1 in the denominator; NaN below two values).
pub fn sample_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::NAN;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom.
pub fn t_975(df: usize) -> f64 {
    StudentsT::new(0.0, 1.0, df as f64)
        .map(|t| t.inverse_cdf(0.975))
        .unwrap_or(f64::NAN)
}

/// A mean with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub lo: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub hi: f64,
    pub n: usize,
}

/// Reads a number that JSON wrote as null (serde_json writes NaN so).
pub fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The mean of paired differences `d` and its 95% paired-t interval (NaN bounds below two
/// pairs).
pub fn paired_interval(d: &[f64]) -> Interval {
    let n = d.len();
    let half = t_975(n.saturating_sub(1)) * sample_sd(d) / (n as f64).sqrt();
    let m = mean(d);
    Interval {
        mean: m,
        lo: m - half,
        hi: m + half,
        n,
    }
}

/// Spearman-Brown: the reliability of the mean of `k` parallel measurements, each of
/// reliability `r` (NaN unless 0 <= r <= 1: a negative correlation between runs is no
/// reliability to project).
pub fn spearman_brown(r: f64, k: usize) -> f64 {
    if !(0.0..=1.0).contains(&r) {
        return f64::NAN;
    }
    let k = k as f64;
    k * r / (1.0 + (k - 1.0) * r)
}

/// The fewest paired seeds whose 95% interval on a mean difference is at most `margin`
/// either side: the smallest n >= 2 with t(0.975, n - 1) sd / sqrt(n) <= margin, where
/// `pair_sd` is one seed's sd of the paired difference. None when it takes more than
/// `cap` (or `pair_sd` is not a number).
pub fn seeds_for_margin(pair_sd: f64, margin: f64, cap: usize) -> Option<usize> {
    if !(pair_sd.is_finite() && margin > 0.0) {
        return None;
    }
    (2..=cap).find(|&n| t_975(n - 1) * pair_sd / (n as f64).sqrt() <= margin)
}

/// What a table of paired runs says about their noise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Noise {
    pub candidates: usize,
    pub seeds: usize,
    /// The ceiling: the mean Kendall tau between the candidates' rankings under each pair
    /// of seeds (how well one run ranks like another).
    pub ceiling: f64,
    /// The mean Spearman rho between seeds (one run's reliability on the rank scale) and
    /// the Spearman-Brown reliability of the mean over `seeds` runs.
    pub run_reliability: f64,
    pub mean_reliability: f64,
    /// One run's seed-to-seed sd, pooled over the candidates.
    pub run_sd: f64,
    /// The sd between the candidates' seed means. Seed noise alone puts it near
    /// `run_sd / sqrt(seeds)`; `between_over_noise` is its ratio to that level (about 1:
    /// these candidates cannot be told apart with this many seeds), and `candidate_sd`
    /// the sd of the candidates' own differences, the noise's share taken out
    /// (sqrt(max(0, between_sd^2 - run_sd^2 / seeds))).
    pub between_sd: f64,
    pub between_over_noise: f64,
    pub candidate_sd: f64,
    /// One seed's sd of the difference between two candidates, pooled over every pair.
    pub pair_sd: f64,
}

/// The noise of `runs` (every candidate with the same number of seeds, at least two).
pub fn noise(runs: &[Vec<f64>]) -> Noise {
    let seeds = runs.first().map_or(0, Vec::len);
    assert!(runs.iter().all(|r| r.len() == seeds), "unpaired runs");
    let column = |s: usize| runs.iter().map(|r| r[s]).collect::<Vec<f64>>();
    // Seed pairs where either seed ranks nothing (all candidates tied) are left out.
    let (mut taus, mut rhos) = (Vec::new(), Vec::new());
    for a in 0..seeds {
        for b in a + 1..seeds {
            taus.extend(Some(kendall_tau(&column(a), &column(b))).filter(|t| t.is_finite()));
            rhos.extend(Some(spearman_rho(&column(a), &column(b))).filter(|r| r.is_finite()));
        }
    }
    let pooled = |vars: Vec<f64>| mean(&vars).sqrt();
    let run_sd = pooled(runs.iter().map(|r| sample_sd(r).powi(2)).collect());
    let mut pair_vars = Vec::new();
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
            pair_vars.push(sample_sd(&d).powi(2));
        }
    }
    let between_sd = sample_sd(&runs.iter().map(|r| mean(r)).collect::<Vec<f64>>());
    let noise_level = run_sd / (seeds as f64).sqrt();
    let run_reliability = mean(&rhos);
    Noise {
        candidates: runs.len(),
        seeds,
        ceiling: mean(&taus),
        run_reliability,
        mean_reliability: spearman_brown(run_reliability, seeds),
        run_sd,
        between_sd,
        between_over_noise: between_sd / noise_level,
        candidate_sd: (between_sd.powi(2) - noise_level.powi(2)).max(0.0).sqrt(),
        pair_sd: pooled(pair_vars),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// t quantiles from any table (e.g. scipy.stats.t.ppf(0.975, df)).
    #[test]
    fn t_quantiles_match_the_tables() {
        assert!((t_975(1) - 12.706_204_736).abs() < 1e-6);
        assert!((t_975(2) - 4.302_652_730).abs() < 1e-6);
        assert!((t_975(9) - 2.262_157_163).abs() < 1e-6);
    }

    /// Differences 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3).
    #[test]
    fn the_paired_interval_is_a_t_interval() {
        let i = paired_interval(&[1.0, 2.0, 3.0]);
        let half = 4.302_652_730 / 3f64.sqrt();
        assert!(close(i.mean, 2.0) && (i.lo - (2.0 - half)).abs() < 1e-6);
        assert!((i.hi - (2.0 + half)).abs() < 1e-6 && i.n == 3);
        assert!(paired_interval(&[1.0]).lo.is_nan());
    }

    #[test]
    fn spearman_brown_by_hand() {
        // r = 0.5, k = 3: 1.5 / 2 = 0.75; one measurement stays as it is.
        assert!(close(spearman_brown(0.5, 3), 0.75));
        assert!(close(spearman_brown(0.3, 1), 0.3));
        assert!(spearman_brown(-0.2, 2).is_nan());
    }

    /// sd 1 per seed, margin 1: n = 7 is the first with t(0.975, n - 1) / sqrt(n) <= 1
    /// (t(0.975, 5) / sqrt(6) = 1.049, t(0.975, 6) / sqrt(7) = 0.925).
    #[test]
    fn seeds_for_a_margin_by_hand() {
        assert_eq!(seeds_for_margin(1.0, 1.0, 100), Some(7));
        // Twice the noise: t(0.975, 17) / sqrt(18) = 0.497 <= 0.5, t(0.975, 16) / sqrt(17) = 0.514.
        assert_eq!(seeds_for_margin(2.0, 1.0, 100), Some(18));
        assert_eq!(seeds_for_margin(2.0, 1.0, 10), None);
        assert_eq!(seeds_for_margin(f64::NAN, 1.0, 10), None);
    }

    /// Three candidates, two seeds, by hand.
    #[test]
    fn noise_of_a_small_table_by_hand() {
        // Seed 0 ranks a < b < c, seed 1 ranks a < c < b: tau = 1/3, rho = 0.5.
        let runs = vec![vec![1.0, 2.0], vec![3.0, 6.0], vec![4.0, 5.0]];
        let n = noise(&runs);
        assert_eq!((n.candidates, n.seeds), (3, 2));
        assert!(close(n.ceiling, 1.0 / 3.0), "{}", n.ceiling);
        assert!(close(n.run_reliability, 0.5));
        // Two seeds: 2 * 0.5 / 1.5.
        assert!(close(n.mean_reliability, 2.0 / 3.0));
        // Per-candidate variances 0.5, 4.5, 0.5: pooled sqrt(5.5 / 3).
        assert!(close(n.run_sd, (5.5f64 / 3.0).sqrt()));
        // Means 1.5, 4.5, 4.5: sd sqrt(3).
        assert!(close(n.between_sd, 3f64.sqrt()));
        // Noise alone would give sqrt(5.5 / 3 / 2); the rest is the candidates' own.
        assert!(close(
            n.between_over_noise,
            3f64.sqrt() / (5.5f64 / 6.0).sqrt()
        ));
        assert!(close(n.candidate_sd, (3.0f64 - 5.5 / 6.0).sqrt()));
        // Paired differences a-b (-2, -4), a-c (-3, -3), b-c (-1, 1): variances 2, 0, 2.
        assert!(close(n.pair_sd, (4.0f64 / 3.0).sqrt()));
    }
}
