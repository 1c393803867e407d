//! Empirical variational Bayesian matrix factorisation (EVBMF) rank estimation:
//! the global analytic solution of Nakajima, Sugiyama, Babacan and Tomioka,
//! "Global analytic solution of fully-observed variational Bayesian matrix
//! factorization", JMLR 14, 2013 (EVB threshold of Theorem 13, noise variance by
//! minimising the free energy over its analytic bounds).

use argmin::core::{CostFunction, Error as ArgminError, Executor};
use argmin::solver::brent::BrentOpt;
use faer::Mat;

/// What EVBMF says about one matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct VbmfEstimate {
    /// Number of singular components above the EVB threshold.
    pub rank: usize,
    /// Estimated noise variance sigma^2 (per entry).
    pub sigma2: f64,
    /// The EVB threshold on singular values: sqrt(M sigma^2 (1 + tau)(1 + alpha/tau)).
    pub threshold: f64,
}

/// Phi(z) = log(z + 1)/z - 1/2 (JMLR 2013, the function defining tau-bar).
fn phi(z: f64) -> f64 {
    if z < 1e-8 {
        0.5 - z / 2.0
    } else {
        (z + 1.0).ln() / z - 0.5
    }
}

/// tau-bar(alpha): the unique zero of Xi(tau) = Phi(tau) + Phi(tau/alpha), decreasing in tau
/// (Nakajima et al. 2013; about 2.5129 sqrt(alpha)). Found by bisection.
pub fn tau_bar(alpha: f64) -> f64 {
    let xi = |t: f64| phi(t) + phi(t / alpha);
    let (mut lo, mut hi) = (1e-12, 1e6);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if xi(mid) > 0.0 { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

/// tau(x) = (x - (1 + alpha) + sqrt((x - (1 + alpha))^2 - 4 alpha)) / 2, for x > x-bar.
fn tau(x: f64, alpha: f64) -> f64 {
    let b = x - (1.0 + alpha);
    0.5 * (b + (b * b - 4.0 * alpha).max(0.0).sqrt())
}

/// 2 x free energy as a function of sigma^2, up to constants (L <= M, all L singular values).
struct FreeEnergy<'a> {
    s2: &'a [f64],
    l: f64,
    m: f64,
    x_bar: f64,
}

impl CostFunction for FreeEnergy<'_> {
    type Param = f64;
    type Output = f64;

    fn cost(&self, sigma2: &f64) -> Result<f64, ArgminError> {
        let alpha = self.l / self.m;
        let mut f = 0.0;
        for &s2 in self.s2 {
            let x = s2 / (self.m * sigma2);
            if x > self.x_bar {
                let t = tau(x, alpha);
                f += x - t + ((t + 1.0) / x).ln() + alpha * (t / alpha + 1.0).ln();
            } else {
                f += x - x.ln();
            }
        }
        Ok(f)
    }
}

/// EVBMF on `y` (any shape; transposed internally so that L = rows <= M = columns).
pub fn evbmf(y: &Mat<f64>) -> VbmfEstimate {
    let (l, m) = if y.nrows() <= y.ncols() {
        (y.nrows(), y.ncols())
    } else {
        (y.ncols(), y.nrows())
    };
    // Singular values as square roots of the eigenvalues of the L x L Gram matrix: one
    // GEMM and a small symmetric eigensolve, much cheaper than an SVD of L x M.
    let gram = if y.nrows() <= y.ncols() {
        y * y.transpose()
    } else {
        y.transpose() * y
    };
    let eig = gram
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .expect("eigenvalues of a Gram matrix");
    let mut s: Vec<f64> = eig.iter().map(|&v| v.max(0.0).sqrt()).collect();
    s.sort_by(|a, b| b.total_cmp(a));
    evbmf_from_singular_values(&s, l, m)
}

/// EVBMF from the singular values (descending) of an L x M matrix, L <= M.
pub fn evbmf_from_singular_values(s: &[f64], l: usize, m: usize) -> VbmfEstimate {
    assert!(
        l <= m && s.len() == l,
        "need all L singular values of an L x M matrix, L <= M"
    );
    let (lf, mf) = (l as f64, m as f64);
    let alpha = lf / mf;
    let tb = tau_bar(alpha);
    let x_bar = (1.0 + tb) * (1.0 + alpha / tb);
    let s2: Vec<f64> = s.iter().map(|v| v * v).collect();
    let total: f64 = s2.iter().sum();
    if total <= 0.0 {
        return VbmfEstimate {
            rank: 0,
            sigma2: 0.0,
            threshold: 0.0,
        };
    }
    // Analytic bounds on sigma^2 (Nakajima et al. 2013, Sec. 4): at most
    // H_ub = ceil(L/(1+alpha)) - 1 components can be signal.
    let h_ub = (((lf / (1.0 + alpha)).ceil() as usize).saturating_sub(1)).min(l - 1);
    let upper = total / (lf * mf);
    let tail = &s2[h_ub..];
    let lower = (s2[h_ub] / (mf * x_bar)).max(tail.iter().sum::<f64>() / tail.len() as f64 / mf);
    let sigma2 = if lower >= upper || lower <= 0.0 {
        upper
    } else {
        let problem = FreeEnergy {
            s2: &s2,
            l: lf,
            m: mf,
            x_bar,
        };
        let solver = BrentOpt::new(lower, upper).set_tolerance(1e-10, upper * 1e-12);
        let best = Executor::new(problem, solver)
            .configure(|st| st.max_iters(500))
            .run()
            .ok()
            .and_then(|r| r.state().best_param);
        best.unwrap_or(upper)
    };
    let threshold = (mf * sigma2 * x_bar).sqrt();
    let rank = s.iter().filter(|&&v| v > threshold).count();
    VbmfEstimate {
        rank,
        sigma2,
        threshold,
    }
}

/// Calibration ratio c in [-1, 1]: c >= 0 adds back round(c x removed rank)
/// (c = 1 gives the full rank); c < 0 removes round(|c| x vbmf rank), keeping at least 1.
pub fn calibrated_rank(vbmf_rank: usize, full_rank: usize, c: f64) -> usize {
    assert!(
        (-1.0..=1.0).contains(&c),
        "calibration ratio must lie in [-1, 1]"
    );
    let v = vbmf_rank.min(full_rank) as f64;
    let r = if c >= 0.0 {
        v + (c * (full_rank as f64 - v)).round()
    } else {
        v + (c * v).round()
    };
    (r as usize).clamp(1, full_rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Normal};

    fn gaussian(rows: usize, cols: usize, std: f64, rng: &mut StdRng) -> Mat<f64> {
        let d = Normal::new(0.0, std).unwrap();
        Mat::from_fn(rows, cols, |_, _| d.sample(rng))
    }

    #[test]
    fn tau_bar_known_value() {
        // For alpha = 1: log(1 + tau)/tau = 1/2, tau = 2.5129...
        assert!((tau_bar(1.0) - 2.5129).abs() < 1e-4);
        let t = tau_bar(0.1);
        assert!(phi(t) + phi(t / 0.1) < 1e-9);
    }

    #[test]
    fn recovers_a_planted_rank_and_the_noise_variance() {
        let mut rng = StdRng::seed_from_u64(0);
        let (l, m, h, noise) = (64, 576, 10, 0.1);
        let a = gaussian(l, h, 1.0, &mut rng);
        let b = gaussian(m, h, 1.0, &mut rng);
        let y = &a * b.transpose() + gaussian(l, m, noise, &mut rng);
        let est = evbmf(&y);
        assert_eq!(est.rank, 10);
        let rel = (est.sigma2 - noise * noise).abs() / (noise * noise);
        assert!(rel < 0.1, "sigma2 {} vs {}", est.sigma2, noise * noise);
        // Transposed input gives the same answer.
        assert_eq!(evbmf(&y.transpose().to_owned()).rank, 10);
    }

    #[test]
    fn pure_noise_has_no_rank() {
        let mut rng = StdRng::seed_from_u64(1);
        let y = gaussian(64, 576, 0.5, &mut rng);
        let est = evbmf(&y);
        assert!(est.rank <= 1, "rank {}", est.rank);
        assert!(
            (est.sigma2 - 0.25).abs() / 0.25 < 0.1,
            "sigma2 {}",
            est.sigma2
        );
    }

    #[test]
    fn calibration_endpoints() {
        assert_eq!(calibrated_rank(10, 64, 0.0), 10);
        assert_eq!(calibrated_rank(10, 64, 1.0), 64);
        assert_eq!(calibrated_rank(10, 64, -1.0), 1);
        assert_eq!(calibrated_rank(10, 64, 0.5), 37);
        assert_eq!(calibrated_rank(10, 64, -0.5), 5);
        assert_eq!(calibrated_rank(0, 64, 0.0), 1);
    }
}
