//! Gaussian-process regression for the Bayesian strategy: Matern 5/2 kernel with one
//! length scale per dimension (Rasmussen & Williams 2006, Eq. 4.17), exact inference by
//! Cholesky with jitter (Alg. 2.1), hyperparameters by maximising the log marginal
//! likelihood (Eq. 5.8, gradient Eq. 5.9) with argmin's L-BFGS, and log expected
//! improvement computed stably in the tails.

use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

const SQRT5: f64 = 2.236_067_977_499_79;

/// Bounds of the hyperparameters (natural log of length scale, signal and noise
/// variance); outputs are standardised, inputs lie in [0, 1].
const LOG_LS: (f64, f64) = (-4.6, 3.0); // 0.01 .. 20
const LOG_SF2: (f64, f64) = (-3.0, 3.0);
const LOG_SN2: (f64, f64) = (-13.8, -0.7); // 1e-6 .. 0.5

/// Kernel hyperparameters (logs).
#[derive(Debug, Clone, PartialEq)]
pub struct Hyper {
    pub log_ls: Vec<f64>,
    pub log_sf2: f64,
    pub log_sn2: f64,
}

impl Hyper {
    /// A neutral start for `d` dimensions.
    pub fn initial(d: usize) -> Self {
        Self {
            log_ls: vec![(0.5f64).ln(); d],
            log_sf2: 0.0,
            log_sn2: (1e-3f64).ln(),
        }
    }

    fn to_vec(&self) -> Vec<f64> {
        let mut v = self.log_ls.clone();
        v.push(self.log_sf2);
        v.push(self.log_sn2);
        v
    }

    fn from_vec(v: &[f64]) -> Self {
        let d = v.len() - 2;
        Self {
            log_ls: v[..d].to_vec(),
            log_sf2: v[d],
            log_sn2: v[d + 1],
        }
    }

    fn bounds(d: usize) -> Vec<(f64, f64)> {
        let mut b = vec![LOG_LS; d];
        b.push(LOG_SF2);
        b.push(LOG_SN2);
        b
    }
}

/// Matern 5/2 correlation at scaled distance r.
pub fn matern52(r: f64) -> f64 {
    (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * (-SQRT5 * r).exp()
}

fn scaled_dist(a: &[f64], b: &[f64], inv_ls2: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .zip(inv_ls2)
        .map(|((x, y), w)| (x - y) * (x - y) * w)
        .sum::<f64>()
        .sqrt()
}

/// Lower Cholesky factor (row-major n x n) of `a` + jitter on the diagonal, raising the
/// jitter tenfold until the factorisation succeeds (at most 1e-2 times the mean diagonal).
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mean_diag = (0..n).map(|i| a[i * n + i]).sum::<f64>() / n.max(1) as f64;
    let mut jitter = 0.0;
    loop {
        if let Some(l) = cholesky_exact(a, n, jitter) {
            return Some(l);
        }
        jitter = if jitter == 0.0 {
            1e-10 * mean_diag.max(1e-12)
        } else {
            jitter * 10.0
        };
        if jitter > 1e-2 * mean_diag.max(1e-12) {
            return None;
        }
    }
}

fn cholesky_exact(a: &[f64], n: usize, jitter: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                let s = s + jitter;
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves L z = b (forward substitution).
fn solve_lower(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut z = b.to_vec();
    for i in 0..n {
        let mut s = z[i];
        for k in 0..i {
            s -= l[i * n + k] * z[k];
        }
        z[i] = s / l[i * n + i];
    }
    z
}

/// Solves L^T z = b (back substitution).
fn solve_upper_t(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut z = b.to_vec();
    for i in (0..n).rev() {
        let mut s = z[i];
        for k in i + 1..n {
            s -= l[k * n + i] * z[k];
        }
        z[i] = s / l[i * n + i];
    }
    z
}

/// A fitted GP.
#[derive(Debug, Clone)]
pub struct Gp {
    x: Vec<Vec<f64>>,
    pub hyper: Hyper,
    inv_ls2: Vec<f64>,
    l: Vec<f64>,
    alpha: Vec<f64>,
    y_mean: f64,
    y_std: f64,
}

/// Mean and standard deviation used to standardise `y`.
fn standardise(y: &[f64]) -> (f64, f64, Vec<f64>) {
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let std = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
    (mean, std, y.iter().map(|v| (v - mean) / std).collect())
}

fn gram(x: &[Vec<f64>], hyper: &Hyper) -> (Vec<f64>, Vec<f64>) {
    let n = x.len();
    let inv_ls2: Vec<f64> = hyper.log_ls.iter().map(|l| (-2.0 * l).exp()).collect();
    let sf2 = hyper.log_sf2.exp();
    let mut k = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = sf2 * matern52(scaled_dist(&x[i], &x[j], &inv_ls2));
            k[i * n + j] = v;
            k[j * n + i] = v;
        }
        k[i * n + i] += hyper.log_sn2.exp();
    }
    (k, inv_ls2)
}

impl Gp {
    /// Exact GP on (x, y) with the given hyperparameters; `None` if the Gram matrix
    /// cannot be factorised even with jitter.
    pub fn fit(x: &[Vec<f64>], y: &[f64], hyper: Hyper) -> Option<Self> {
        let n = x.len();
        let (y_mean, y_std, ys) = standardise(y);
        let (k, inv_ls2) = gram(x, &hyper);
        let l = cholesky(&k, n)?;
        let alpha = solve_upper_t(&l, n, &solve_lower(&l, n, &ys));
        Some(Self {
            x: x.to_vec(),
            hyper,
            inv_ls2,
            l,
            alpha,
            y_mean,
            y_std,
        })
    }

    /// Posterior mean and variance of the latent function at `x` (in the units of y).
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let n = self.x.len();
        let sf2 = self.hyper.log_sf2.exp();
        let k: Vec<f64> = self
            .x
            .iter()
            .map(|xi| sf2 * matern52(scaled_dist(x, xi, &self.inv_ls2)))
            .collect();
        let mean: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let v = solve_lower(&self.l, n, &k);
        let var = (sf2 - v.iter().map(|t| t * t).sum::<f64>()).max(1e-12);
        (
            self.y_mean + self.y_std * mean,
            var * self.y_std * self.y_std,
        )
    }

    /// Log marginal likelihood of standardised `ys` and its gradient in the log
    /// hyperparameters (Rasmussen & Williams Eq. 5.8, 5.9).
    pub fn lml_and_grad(x: &[Vec<f64>], ys: &[f64], hyper: &Hyper) -> Option<(f64, Vec<f64>)> {
        let n = x.len();
        let d = hyper.log_ls.len();
        let (k, inv_ls2) = gram(x, hyper);
        let l = cholesky(&k, n)?;
        let alpha = solve_upper_t(&l, n, &solve_lower(&l, n, ys));
        let lml = -0.5 * ys.iter().zip(&alpha).map(|(a, b)| a * b).sum::<f64>()
            - (0..n).map(|i| l[i * n + i].ln()).sum::<f64>()
            - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        // W = alpha alpha^T - K^-1, K^-1 from the factor column by column.
        let mut kinv = vec![0.0; n * n];
        for c in 0..n {
            let mut e = vec![0.0; n];
            e[c] = 1.0;
            let col = solve_upper_t(&l, n, &solve_lower(&l, n, &e));
            for r in 0..n {
                kinv[r * n + c] = col[r];
            }
        }
        let sf2 = hyper.log_sf2.exp();
        let mut grad = vec![0.0; d + 2];
        for i in 0..n {
            for j in 0..n {
                let w = alpha[i] * alpha[j] - kinv[i * n + j];
                if i == j {
                    grad[d] += 0.5 * w * sf2;
                    grad[d + 1] += 0.5 * w * hyper.log_sn2.exp();
                    continue;
                }
                let r = scaled_dist(&x[i], &x[j], &inv_ls2);
                grad[d] += 0.5 * w * sf2 * matern52(r);
                // dk/dlog l_k = sf2 (5/3)(1 + sqrt5 r) e^{-sqrt5 r} (x_ik - x_jk)^2 / l_k^2.
                let g = sf2 * 5.0 / 3.0 * (1.0 + SQRT5 * r) * (-SQRT5 * r).exp();
                for (kk, gk) in grad.iter_mut().take(d).enumerate() {
                    let diff = x[i][kk] - x[j][kk];
                    *gk += 0.5 * w * g * diff * diff * inv_ls2[kk];
                }
            }
        }
        Some((lml, grad))
    }

    /// Hyperparameters maximising the log marginal likelihood, from `start`, within the
    /// bounds (a logistic reparametrisation keeps L-BFGS unconstrained).
    pub fn fit_hyper(x: &[Vec<f64>], y: &[f64], start: &Hyper, max_iters: u64) -> Hyper {
        let (_, _, ys) = standardise(y);
        let bounds = Hyper::bounds(start.log_ls.len());
        let u0: Vec<f64> = start
            .to_vec()
            .iter()
            .zip(&bounds)
            .map(|(&v, &(lo, hi))| {
                let t = ((v - lo) / (hi - lo)).clamp(1e-4, 1.0 - 1e-4);
                (t / (1.0 - t)).ln()
            })
            .collect();
        let problem = NegLml {
            x,
            ys: &ys,
            bounds: &bounds,
        };
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7);
        let result = Executor::new(problem, solver)
            .configure(|s| s.param(u0).max_iters(max_iters))
            .run();
        match result {
            Ok(r) => match r.state.best_param {
                Some(u) => Hyper::from_vec(&from_unbounded(&u, &bounds)),
                None => start.clone(),
            },
            Err(e) => {
                tracing::debug!("GP hyperparameter fit stopped: {e}");
                start.clone()
            }
        }
    }
}

fn sigmoid(u: f64) -> f64 {
    1.0 / (1.0 + (-u).exp())
}

fn from_unbounded(u: &[f64], bounds: &[(f64, f64)]) -> Vec<f64> {
    u.iter()
        .zip(bounds)
        .map(|(&u, &(lo, hi))| lo + (hi - lo) * sigmoid(u))
        .collect()
}

struct NegLml<'a> {
    x: &'a [Vec<f64>],
    ys: &'a [f64],
    bounds: &'a [(f64, f64)],
}

impl NegLml<'_> {
    fn eval(&self, u: &[f64]) -> (f64, Vec<f64>) {
        let theta = from_unbounded(u, self.bounds);
        match Gp::lml_and_grad(self.x, self.ys, &Hyper::from_vec(&theta)) {
            Some((lml, g)) => {
                let grad = g
                    .iter()
                    .zip(u)
                    .zip(self.bounds)
                    .map(|((g, &u), &(lo, hi))| {
                        let s = sigmoid(u);
                        -g * (hi - lo) * s * (1.0 - s)
                    })
                    .collect();
                (-lml, grad)
            }
            None => (1e10, vec![0.0; u.len()]),
        }
    }
}

impl CostFunction for NegLml<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, u: &Self::Param) -> Result<f64, ArgminError> {
        Ok(self.eval(u).0)
    }
}

impl Gradient for NegLml<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, u: &Self::Param) -> Result<Vec<f64>, ArgminError> {
        Ok(self.eval(u).1)
    }
}

/// Complementary error function, |relative error| < 1.2e-7 (Numerical Recipes, 3rd ed.,
/// Sec. 6.2.2, Chebyshev fit `erfcc`).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Standard normal CDF.
pub fn norm_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// log of the expected improvement over `best` of a normal with `mean` and `sd`
/// (maximisation): EI = sd (z Phi(z) + phi(z)), z = (mean - best) / sd. For z < -10 the
/// asymptotic series z Phi(z) + phi(z) ~ phi(z) / z^2 (1 - 3/z^2 + 15/z^4 - 105/z^6)
/// (from the Mills-ratio expansion, Abramowitz & Stegun 26.2.12) keeps the log finite.
pub fn log_ei(mean: f64, sd: f64, best: f64) -> f64 {
    let sd = sd.max(1e-12);
    let z = (mean - best) / sd;
    let log_phi = -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln();
    let h = if z < -10.0 {
        let w = 1.0 / (z * z);
        log_phi - 2.0 * (-z).ln() + (1.0 - 3.0 * w + 15.0 * w * w - 105.0 * w * w * w).ln()
    } else {
        (z * norm_cdf(z) + log_phi.exp()).max(1e-300).ln()
    };
    sd.ln() + h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<Vec<f64>>, Vec<f64>) {
        let x: Vec<Vec<f64>> = (0..12)
            .map(|i| vec![i as f64 / 11.0, ((i * 7) % 12) as f64 / 11.0])
            .collect();
        let y = x.iter().map(|p| (6.0 * p[0]).sin() + 0.3 * p[1]).collect();
        (x, y)
    }

    #[test]
    fn cholesky_reproduces_the_matrix() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let l = cholesky(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((v - a[i * 3 + j]).abs() < 1e-12);
            }
        }
        // A singular matrix factorises with a little jitter; an indefinite one does not.
        assert!(cholesky(&[1.0, 1.0, 1.0, 1.0], 2).is_some());
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn posterior_interpolates_with_small_noise() {
        let (x, y) = toy();
        let mut h = Hyper::initial(2);
        h.log_sn2 = (1e-6f64).ln();
        let gp = Gp::fit(&x, &y, h).unwrap();
        for (xi, yi) in x.iter().zip(&y) {
            let (m, v) = gp.predict(xi);
            assert!((m - yi).abs() < 1e-3, "{m} vs {yi}");
            assert!(v < 1e-4, "variance {v} at a training point");
        }
        // Far from the data the variance returns toward the prior's.
        let (_, v) = gp.predict(&[3.0, 3.0]);
        assert!(v > 0.5 * h_prior_var(&y), "{v}");
    }

    fn h_prior_var(y: &[f64]) -> f64 {
        let (_, std, _) = standardise(y);
        std * std
    }

    #[test]
    fn lml_gradient_matches_finite_differences() {
        let (x, y) = toy();
        let (_, _, ys) = standardise(&y);
        let h = Hyper {
            log_ls: vec![-0.7, 0.3],
            log_sf2: 0.2,
            log_sn2: -3.0,
        };
        let (_, g) = Gp::lml_and_grad(&x, &ys, &h).unwrap();
        let v = h.to_vec();
        for i in 0..v.len() {
            let eps = 1e-5;
            let mut a = v.clone();
            let mut b = v.clone();
            a[i] += eps;
            b[i] -= eps;
            let fa = Gp::lml_and_grad(&x, &ys, &Hyper::from_vec(&a)).unwrap().0;
            let fb = Gp::lml_and_grad(&x, &ys, &Hyper::from_vec(&b)).unwrap().0;
            let fd = (fa - fb) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 1e-4 * (1.0 + fd.abs()),
                "param {i}: {fd} vs {}",
                g[i]
            );
        }
    }

    #[test]
    fn fitting_hyperparameters_raises_the_likelihood() {
        let (x, y) = toy();
        let (_, _, ys) = standardise(&y);
        let start = Hyper::initial(2);
        let fitted = Gp::fit_hyper(&x, &y, &start, 30);
        let before = Gp::lml_and_grad(&x, &ys, &start).unwrap().0;
        let after = Gp::lml_and_grad(&x, &ys, &fitted).unwrap().0;
        assert!(after > before, "{after} <= {before}");
    }

    #[test]
    fn log_ei_against_the_closed_form() {
        // erfc against known values.
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
        assert!((norm_cdf(1.959_963_985) - 0.975).abs() < 1e-7);
        // At the incumbent: EI = sd * phi(0).
        let ei = log_ei(1.0, 2.0, 1.0).exp();
        assert!((ei - 2.0 * 0.398_942_280).abs() < 1e-6);
        // Far above: EI ~ mean - best.
        assert!((log_ei(10.0, 0.1, 0.0).exp() - 10.0).abs() < 1e-6);
        // Far below: tiny but finite, and decreasing; continuous across z = -10.
        let far = log_ei(-40.0, 1.0, 0.0);
        assert!(far.is_finite() && far < -700.0);
        assert!(log_ei(-41.0, 1.0, 0.0) < far);
        // Across the switch the change matches the slope d/dz log EI ~ -z - 2/z = 10.2.
        let (a, b) = (log_ei(-9.9999, 1.0, 0.0), log_ei(-10.0001, 1.0, 0.0));
        assert!(((a - b) - 10.2 * 2e-4).abs() < 2e-4, "{a} {b}");
    }
}
