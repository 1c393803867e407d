//! Two models compared over paired training seeds on one fixed image set. The seeds'
//! paired-t interval holds the training noise only: every run is scored on the same
//! images, so the set's own sampling error (a new draw of images would move the
//! difference) is not in it. It is estimated from the per-image differences (as in
//! McNemar's paired test, averaged over seeds, the seeds' own share taken out) and added
//! in quadrature for the interval a claim rests on.

use super::noise::{Interval, f64_or_nan, mean, paired_interval, sample_sd};
use serde::{Deserialize, Serialize};

/// The normal distribution's two-sided 95% quantile.
pub const Z_975: f64 = 1.959_963_985;

/// `a - b` in accuracy (fractions), seed by seed and image by image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// The mean difference over seeds with its paired-t 95% interval (NaN bounds below
    /// two seeds: one run measures no training noise).
    pub seeds: Interval,
    /// The image set's standard error of the difference: the variance over images of
    /// each image's mean (over seeds) difference in correctness, less the part the
    /// seeds' noise puts there (the mean over images of its variance over seeds, over
    /// seeds), over images, square-rooted.
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

    /// `+0.19 points, 95% [-0.66, +1.03]` (with `seeds_alone`, the seeds' own interval
    /// after it), or the mean alone when one seed gives no interval.
    pub fn describe(&self, seeds_alone: bool) -> String {
        let pt = |v: f64| format!("{:+.2}", 100.0 * v);
        if !self.interval.lo.is_finite() {
            return format!("{} points (one seed: no interval)", pt(self.seeds.mean));
        }
        let mut out = format!(
            "{} points, 95% [{}, {}]",
            pt(self.seeds.mean),
            pt(self.interval.lo),
            pt(self.interval.hi)
        );
        if seeds_alone {
            out += &format!(
                " (seeds alone [{}, {}])",
                pt(self.seeds.lo),
                pt(self.seeds.hi)
            );
        }
        out
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
    // Per image, the difference in correctness seed by seed: its mean over seeds varies
    // over images with the image's own difference and with that image's seed noise
    // (its variance over seeds / seeds). The seeds' interval has the latter already, so
    // it is taken out (random-effects decomposition; clamped at 0). With one seed it
    // cannot be told apart and stays in (conservative).
    let k = a.len() as f64;
    let (mut means, mut noise) = (Vec::with_capacity(images), Vec::with_capacity(images));
    for i in 0..images {
        let d: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(x[i]) - f64::from(y[i]))
            .collect();
        means.push(mean(&d));
        noise.push(if d.len() > 1 {
            sample_sd(&d).powi(2)
        } else {
            0.0
        });
    }
    let set_var = sample_sd(&means).powi(2) - mean(&noise) / k;
    let set_se = (set_var.max(0.0) / images as f64).sqrt();
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
        // 0.5, 0.5, 0, 0 (variance 1 / 12) and seed variances 0.5, 0.5, 2, 0 (mean 0.75):
        // 1 / 12 - 0.75 / 2 < 0, all of it seed noise: the set adds nothing.
        let se = 0.0;
        assert_eq!(p.set_se, se);
        let half = (seeds_half.powi(2) + (1.959_963_985f64 * se).powi(2)).sqrt();
        assert!((p.interval.lo - (0.25 - half)).abs() < 1e-6);
        assert!((p.half_width() - half).abs() < 1e-6);
    }

    /// Two seeds, three images: a is right on image 1 with both seeds, b with neither;
    /// no image moves with the seed, so all the per-image spread is the set's.
    #[test]
    fn a_steady_per_image_difference_is_the_sets_error() {
        let p = paired(&[bits("110"), bits("110")], &[bits("100"), bits("100")]).unwrap();
        // Means 0, 1, 0: variance 1 / 3, none from the seeds; over 3 images: se 1 / 3.
        assert!((p.set_se - 1.0 / 3.0).abs() < 1e-12, "{}", p.set_se);
        // The seeds agree exactly (t half-width 0): the interval is 1.96 se either side.
        assert!((p.half_width() - 1.959_963_985 / 3.0).abs() < 1e-9);
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
