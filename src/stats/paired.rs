//! Two models compared over paired training seeds on one fixed image set. The seeds'
//! paired-t interval holds the training noise only: every run is scored on the same
//! images, so the set's own sampling error (a new draw of images would move the
//! difference) is not in it. It is estimated from the per-image differences (as in
//! McNemar's paired test, averaged over seeds) and added in quadrature for the interval
//! a claim rests on.

use super::noise::{Interval, f64_or_nan, mean, paired_interval, sample_sd};
use serde::{Deserialize, Serialize};

/// The normal distribution's two-sided 95% quantile.
const Z_975: f64 = 1.959_963_985;

/// `a - b` in accuracy (fractions), seed by seed and image by image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// The mean difference over seeds with its paired-t 95% interval (NaN bounds below
    /// two seeds: one run measures no training noise).
    pub seeds: Interval,
    /// The image set's standard error of the difference: the sd over images of each
    /// image's mean (over seeds) difference in correctness, over sqrt(images).
    #[serde(deserialize_with = "f64_or_nan")]
    pub set_se: f64,
    /// The seeds' half-width and 1.96 `set_se` added in quadrature around the mean.
    pub interval: Interval,
    pub images: usize,
}

impl Paired {
    /// Half the interval's width: about the smallest difference these seeds and images
    /// could have told from zero.
    pub fn half_width(&self) -> f64 {
        (self.interval.hi - self.interval.lo) / 2.0
    }
}

/// Compares `a` and `b`, where `a[s][i]` is whether image i was classified correctly
/// after training with the s-th seed (the same seeds, in the same order, for both).
/// None without a seed, or when the runs do not pair (seeds or images differ in number).
pub fn paired(a: &[Vec<bool>], b: &[Vec<bool>]) -> Option<Paired> {
    let images = a.first()?.len();
    if a.len() != b.len() || images == 0 || a.iter().chain(b).any(|r| r.len() != images) {
        return None;
    }
    let acc = |r: &Vec<bool>| r.iter().filter(|&&c| c).count() as f64 / images as f64;
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| acc(x) - acc(y)).collect();
    let seeds = paired_interval(&d);
    let per_image: Vec<f64> = (0..images)
        .map(|i| {
            let diff = |(x, y): (&Vec<bool>, &Vec<bool>)| f64::from(x[i]) - f64::from(y[i]);
            mean(&a.iter().zip(b).map(diff).collect::<Vec<f64>>())
        })
        .collect();
    let set_se = sample_sd(&per_image) / (images as f64).sqrt();
    let seeds_half = (seeds.hi - seeds.lo) / 2.0;
    let half = (seeds_half.powi(2) + (Z_975 * set_se).powi(2)).sqrt();
    Some(Paired {
        seeds,
        set_se,
        interval: Interval {
            lo: seeds.mean - half,
            hi: seeds.mean + half,
            ..seeds
        },
        images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(s: &str) -> Vec<bool> {
        s.bytes().map(|b| b == b'1').collect()
    }

    /// Two seeds, four images, by hand.
    #[test]
    fn a_paired_comparison_by_hand() {
        // Seed 0: a 3/4, b 1/4 (d 0.5); seed 1: a 2/4, b 2/4 (d 0).
        let a = [bits("1110"), bits("1100")];
        let b = [bits("1000"), bits("0110")];
        let p = paired(&a, &b).unwrap();
        assert_eq!((p.images, p.seeds.n), (4, 2));
        // Mean 0.25, sd of (0.5, 0) = sqrt(0.125): half-width t(0.975, 1) sqrt(0.125) / sqrt(2).
        let t1 = 12.706_204_736;
        let seeds_half = t1 * 0.125f64.sqrt() / 2f64.sqrt();
        assert!((p.seeds.mean - 0.25).abs() < 1e-12);
        assert!((p.seeds.hi - 0.25 - seeds_half).abs() < 1e-6);
        // Per image, seed 0 and seed 1 of a - b: (0, 1), (1, 0), (1, -1), (0, 0), so means
        // 0.5, 0.5, 0, 0; their sd sqrt(4 * 0.25^2 / 3) = sqrt(1 / 12); over sqrt(4).
        let se = (1.0f64 / 12.0).sqrt() / 2.0;
        assert!((p.set_se - se).abs() < 1e-12, "{}", p.set_se);
        let half = (seeds_half.powi(2) + (1.959_963_985f64 * se).powi(2)).sqrt();
        assert!((p.interval.lo - (0.25 - half)).abs() < 1e-6);
        assert!((p.half_width() - half).abs() < 1e-6);
    }

    #[test]
    fn one_seed_has_no_interval_and_unpaired_runs_none() {
        let p = paired(&[bits("10")], &[bits("00")]).unwrap();
        assert!((p.seeds.mean - 0.5).abs() < 1e-12 && p.interval.lo.is_nan());
        assert!(paired(&[bits("10")], &[bits("000")]).is_none());
        assert!(paired(&[bits("10")], &[bits("00"), bits("11")]).is_none());
        assert!(paired(&[], &[]).is_none());
    }

    #[test]
    fn nan_bounds_survive_a_json_round_trip() {
        let p = paired(&[bits("10")], &[bits("00")]).unwrap();
        let back: Paired = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert!(back.interval.lo.is_nan() && back.seeds.mean == 0.5);
    }
}
