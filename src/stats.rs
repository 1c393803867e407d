//! Statistics of scores: quantiles (numpy's default interpolation), rank correlations
//! between a cheap score and the final accuracy (Kendall's tau-b, ties counted as in
//! Kendall 1945, scipy.stats.kendalltau's default; Spearman's rho, the Pearson
//! correlation of average ranks), percentile bootstrap intervals, and the seed noise of
//! paired training runs ([`noise`]), and two models compared over paired seeds on one
//! image set ([`paired`]).

pub mod noise;
pub mod paired;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The `q` quantile of `v` with linear interpolation between order statistics (numpy's
/// default); `v` non-empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (pos - lo as f64) * (s[hi] - s[lo])
}

/// Kendall's tau-b of `x` and `y` (NaN when either is constant or shorter than 2).
pub fn kendall_tau(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    let (mut concordant, mut discordant) = (0i64, 0i64);
    let (mut tied_x, mut tied_y) = (0i64, 0i64);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
            match (dx == 0.0, dy == 0.0) {
                (true, true) => {}
                (true, false) => tied_x += 1,
                (false, true) => tied_y += 1,
                (false, false) if (dx > 0.0) == (dy > 0.0) => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    let n0 = concordant + discordant;
    let denom = (((n0 + tied_x) * (n0 + tied_y)) as f64).sqrt();
    if denom == 0.0 {
        return f64::NAN;
    }
    (concordant - discordant) as f64 / denom
}

/// Average ranks (1-based; ties share the mean of their positions).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Spearman's rho of `x` and `y` (NaN when either is constant).
pub fn spearman_rho(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// The 95% percentile bootstrap interval of `stat` over pairs resampled with
/// replacement (`resamples` draws, seeded); resamples where `stat` is NaN are skipped.
pub fn bootstrap_95(
    x: &[f64],
    y: &[f64],
    stat: fn(&[f64], &[f64]) -> f64,
    resamples: usize,
    seed: u64,
) -> (f64, f64) {
    let (mut bx, mut by) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    bootstrap_95_by(x.len(), resamples, seed, |idx| {
        for (k, &i) in idx.iter().enumerate() {
            bx[k] = x[i];
            by[k] = y[i];
        }
        stat(&bx, &by)
    })
}

/// The 95% percentile bootstrap interval of `stat` of `n` items (it gets each
/// resample's item indices, drawn with replacement); resamples where it is NaN are
/// skipped.
pub fn bootstrap_95_by(
    n: usize,
    resamples: usize,
    seed: u64,
    mut stat: impl FnMut(&[usize]) -> f64,
) -> (f64, f64) {
    if n < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(resamples);
    let mut idx = vec![0; n];
    for _ in 0..resamples {
        for i in idx.iter_mut() {
            *i = rng.random_range(0..n);
        }
        let v = stat(&idx);
        if v.is_finite() {
            values.push(v);
        }
    }
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[5.0], 0.9), 5.0);
        // numpy.quantile([1, 2, 3, 4, 10], 2/3) = 3.6666...
        assert!((quantile(&[10.0, 1.0, 2.0, 3.0, 4.0], 2.0 / 3.0) - 11.0 / 3.0).abs() < 1e-12);
    }

    /// scipy.stats.kendalltau's documented example (tau-b with ties).
    #[test]
    fn kendall_tau_b_matches_scipys_example() {
        let t = kendall_tau(&[12., 2., 1., 12., 2.], &[1., 4., 7., 1., 0.]);
        assert!((t - -0.471_404_520_791_031_7).abs() < 1e-12, "{t}");
        assert_eq!(kendall_tau(&[1., 2., 3.], &[10., 20., 30.]), 1.0);
        assert_eq!(kendall_tau(&[1., 2., 3.], &[3., 2., 1.]), -1.0);
        assert!(kendall_tau(&[1., 1., 1.], &[1., 2., 3.]).is_nan());
    }

    /// scipy.stats.spearmanr's documented example.
    #[test]
    fn spearman_rho_matches_scipys_example() {
        let r = spearman_rho(&[1., 2., 3., 4., 5.], &[5., 6., 7., 8., 7.]);
        assert!((r - 0.820_782_681_668_123_3).abs() < 1e-12, "{r}");
        assert_eq!(ranks(&[3., 1., 3., 2.]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn bootstrap_interval_brackets_the_estimate_and_is_seeded() {
        let x: Vec<f64> = (0..20).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| v + 6.0 * (v * 1.7).sin()).collect();
        let tau = kendall_tau(&x, &y);
        let (lo, hi) = bootstrap_95(&x, &y, kendall_tau, 500, 1);
        assert!(
            lo < tau && tau < hi && hi <= 1.0 && lo >= -1.0,
            "{lo} {tau} {hi}"
        );
        assert_eq!((lo, hi), bootstrap_95(&x, &y, kendall_tau, 500, 1));
        let perfect = bootstrap_95(&x, &x, kendall_tau, 100, 1);
        assert_eq!(perfect, (1.0, 1.0));
    }
}
