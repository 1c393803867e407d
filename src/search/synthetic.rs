//! Cheap synthetic objectives for testing and benchmarking strategies without training:
//! an accuracy model shaped like compression, Ackley's function on a knob grid, and the
//! 2-D hypervolume of an accuracy-vs-FLOPs front.

use super::space::{KnobKind, Space};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Accuracy of a compressed model as a sum of per-knob losses: a ratio r costs
/// s (r)^2, a rank at fraction f of its range costs s (1 - f)^3, with sensitivities s
/// log-uniform over three orders of magnitude, plus an interaction between neighbouring
/// knobs (two damaged neighbours hurt more than each alone), plus optional noise.
#[derive(Debug, Clone)]
pub struct CompressionModel {
    sensitivity: Vec<f64>,
    interaction: Vec<f64>,
    /// Standard deviation of the evaluation noise (proxy fine-tunes are noisy).
    pub noise: f64,
    pub top: f64,
}

impl CompressionModel {
    pub fn new(space: &Space, seed: u64, noise: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let d = space.dims();
        let sensitivity = (0..d)
            .map(|_| 10f64.powf(rng.random_range(-3.0..0.0)) * 0.1)
            .collect();
        let interaction = (0..d).map(|_| rng.random_range(0.0..3.0)).collect();
        Self {
            sensitivity,
            interaction,
            noise,
            top: 0.75,
        }
    }

    fn damage(space: &Space, p: &[usize], i: usize) -> f64 {
        let k = &space.knobs[i];
        match k.kind {
            KnobKind::Ratio => k.value(p[i]).powi(2),
            _ => {
                let f = if k.levels > 1 {
                    p[i] as f64 / (k.levels - 1) as f64
                } else {
                    1.0
                };
                (1.0 - f).powi(3)
            }
        }
    }

    /// Noise-free accuracy.
    pub fn mean(&self, space: &Space, p: &[usize]) -> f64 {
        let dmg: Vec<f64> = (0..space.dims())
            .map(|i| Self::damage(space, p, i))
            .collect();
        let mut loss = 0.0;
        for i in 0..dmg.len() {
            loss += self.sensitivity[i] * dmg[i];
            if i + 1 < dmg.len() {
                let s = (self.sensitivity[i] * self.sensitivity[i + 1]).sqrt();
                loss += self.interaction[i] * s * dmg[i] * dmg[i + 1];
            }
        }
        (self.top - loss).max(0.01)
    }

    /// One noisy evaluation (seeded by `eval`).
    pub fn sample(&self, space: &Space, p: &[usize], eval: u64) -> f64 {
        let mut rng = StdRng::seed_from_u64(eval ^ 0x9e37_79b9_7f4a_7c15);
        // Sum of 12 uniforms - 6: a standard normal to within a percent.
        let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
        self.mean(space, p) + self.noise * z
    }
}

/// Minus Ackley's function (Ackley 1987; a = 20, b = 0.2, c = 2 pi) with each knob's
/// grid mapped onto [-32.768, 32.768]; the maximum 0 lies at the grid's middle level
/// when the level count is odd.
pub fn neg_ackley(space: &Space, p: &[usize]) -> f64 {
    let z: Vec<f64> = space
        .knobs
        .iter()
        .zip(p)
        .map(|(k, &l)| -32.768 + 65.536 * l as f64 / (k.levels.max(2) - 1) as f64)
        .collect();
    let d = z.len() as f64;
    let s1 = z.iter().map(|v| v * v).sum::<f64>() / d;
    let s2 = z
        .iter()
        .map(|v| (2.0 * std::f64::consts::PI * v).cos())
        .sum::<f64>()
        / d;
    -(-20.0 * (-0.2 * s1.sqrt()).exp() - s2.exp() + 20.0 + std::f64::consts::E)
}

/// Area dominated by (accuracy up, FLOPs fraction down) points, bounded by accuracy 0
/// and FLOPs fraction 1.
pub fn hypervolume(points: &[(f64, f64)]) -> f64 {
    let mut pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|&(a, f)| a > 0.0 && f < 1.0)
        .collect();
    pts.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut hv = 0.0;
    let mut best_acc = 0.0;
    // Sweep from the cheapest point: each strip up to the next FLOPs value is as tall as
    // the best accuracy reached so far.
    for (i, &(a, f)) in pts.iter().enumerate() {
        best_acc = f64::max(best_acc, a);
        let next = pts.get(i + 1).map_or(1.0, |p| p.1);
        hv += best_acc * (next - f);
    }
    hv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypervolume_by_hand() {
        // One point (0.5, 0.2): 0.5 x 0.8. Adding (0.8, 0.6): 0.5 x 0.4 + 0.8 x 0.4.
        assert!((hypervolume(&[(0.5, 0.2)]) - 0.4).abs() < 1e-12);
        assert!((hypervolume(&[(0.8, 0.6), (0.5, 0.2)]) - 0.52).abs() < 1e-12);
        // A dominated point adds nothing.
        assert!((hypervolume(&[(0.8, 0.6), (0.5, 0.2), (0.4, 0.5)]) - 0.52).abs() < 1e-12);
    }
}
