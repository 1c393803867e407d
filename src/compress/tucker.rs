//! Tucker-2 decomposition of a conv weight W (T=out, S=in, k, k) along its two channel
//! modes: W ~= G x0 U_out x1 U_in (Kim et al., ICLR 2016, Sec. 3; De Lathauwer et al.,
//! SIAM J. Matrix Anal. Appl. 2000, HOSVD and HOOI).

use faer::{Mat, Side};

/// Stop HOOI once the relative reconstruction error changes by less than this.
pub const HOOI_TOL: f64 = 1e-5;
pub const HOOI_MAX_ITERS: usize = 100;

/// Factors of a Tucker-2 decomposition.
#[derive(Debug, Clone)]
pub struct Tucker2 {
    /// T x r_out, orthonormal columns.
    pub u_out: Mat<f64>,
    /// S x r_in, orthonormal columns.
    pub u_in: Mat<f64>,
    /// Core (r_out, r_in, k, k), row-major.
    pub core: Vec<f64>,
    pub kernel: usize,
    /// ||W - reconstruction|| / ||W||.
    pub rel_error: f64,
    /// HOOI iterations run after the HOSVD start (0 = HOSVD only).
    pub iterations: usize,
}

/// Mode-0 unfolding T x (S*kk): row t holds W[t, :, :].
pub fn unfold0(w: &[f64], t: usize, s: usize, kk: usize) -> Mat<f64> {
    Mat::from_fn(t, s * kk, |i, j| w[i * s * kk + j])
}

/// Mode-1 unfolding S x (T*kk): entry (s, t*kk + j) is W[t, s, j].
pub fn unfold1(w: &[f64], t: usize, s: usize, kk: usize) -> Mat<f64> {
    Mat::from_fn(s, t * kk, |i, c| {
        let (ti, j) = (c / kk, c % kk);
        w[ti * s * kk + i * kk + j]
    })
}

/// The `r` leading left singular vectors of `a` (as columns), via the eigenvectors of
/// `a a^T` (small: rows x rows), sign-fixed so each column's largest entry is positive.
pub fn leading_left_vectors(a: &Mat<f64>, r: usize) -> Mat<f64> {
    let gram = a * a.transpose();
    let eig = gram
        .self_adjoint_eigen(Side::Lower)
        .expect("eigendecomposition of a Gram matrix");
    let (n, u) = (a.nrows(), eig.U());
    // Eigenvalues come in nondecreasing order: the leading vectors are the last columns.
    let mut out = Mat::from_fn(n, r, |i, j| u[(i, n - 1 - j)]);
    for j in 0..r {
        let (mut big, mut sign) = (0.0f64, 1.0);
        for i in 0..n {
            if out[(i, j)].abs() > big {
                big = out[(i, j)].abs();
                sign = out[(i, j)].signum();
            }
        }
        for i in 0..n {
            out[(i, j)] *= sign;
        }
    }
    out
}

/// Core G[o, r, j] = sum_{t,s} U_out[t,o] W[t,s,j] U_in[s,r].
fn core_of(w0: &Mat<f64>, u_out: &Mat<f64>, u_in: &Mat<f64>, kk: usize) -> Vec<f64> {
    let (r_out, r_in) = (u_out.ncols(), u_in.ncols());
    // Z1 (S x r_out*kk): Z1[s, o*kk+j] = sum_t U_out[t,o] W[t,s,j].
    let z1 = project_mode0(w0, u_out, kk);
    // C = U_in^T Z1: C[r, o*kk+j] = G[o, r, j].
    let c = u_in.transpose() * &z1;
    let mut g = vec![0.0; r_out * r_in * kk];
    for o in 0..r_out {
        for r in 0..r_in {
            for j in 0..kk {
                g[(o * r_in + r) * kk + j] = c[(r, o * kk + j)];
            }
        }
    }
    g
}

/// W x0 U_out^T, mode-1 unfolded: S x (r_out*kk), from the mode-0 unfolding `w0`.
fn project_mode0(w0: &Mat<f64>, u_out: &Mat<f64>, kk: usize) -> Mat<f64> {
    let r_out = u_out.ncols();
    let s = w0.ncols() / kk;
    // Q = U_out^T W0: Q[o, s*kk+j] = sum_t U_out[t,o] W[t,s,j].
    let q = u_out.transpose() * w0;
    Mat::from_fn(s, r_out * kk, |si, c| {
        let (o, j) = (c / kk, c % kk);
        q[(o, si * kk + j)]
    })
}

/// W x1 U_in^T, mode-0 unfolded: T x (r_in*kk), from the mode-1 unfolding `w1`.
fn project_mode1(w1: &Mat<f64>, u_in: &Mat<f64>, t: usize, kk: usize) -> Mat<f64> {
    let r_in = u_in.ncols();
    // P = U_in^T W1: P[r, t*kk+j] = sum_s U_in[s,r] W[t,s,j].
    let p = u_in.transpose() * w1;
    Mat::from_fn(t, r_in * kk, |ti, c| {
        let (r, j) = (c / kk, c % kk);
        p[(r, ti * kk + j)]
    })
}

fn rel_error(norm2: f64, core: &[f64]) -> f64 {
    // Orthonormal factors: ||W - W_hat||^2 = ||W||^2 - ||G||^2.
    let g2: f64 = core.iter().map(|v| v * v).sum();
    ((norm2 - g2).max(0.0) / norm2.max(f64::MIN_POSITIVE)).sqrt()
}

/// Tucker-2 of `w` (T, S, k, k) at ranks `(r_in, r_out)`: HOSVD start, then up to
/// `max_iters` HOOI sweeps until the relative error changes by less than [`HOOI_TOL`].
pub fn tucker2(
    w: &[f32],
    shape: [usize; 4],
    r_in: usize,
    r_out: usize,
    max_iters: usize,
) -> Tucker2 {
    let [t, s, kh, kw] = shape;
    let kk = kh * kw;
    assert_eq!(w.len(), t * s * kk, "weight does not match its shape");
    assert!(
        (1..=s).contains(&r_in) && (1..=t).contains(&r_out),
        "ranks out of range"
    );
    let w: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    let norm2: f64 = w.iter().map(|v| v * v).sum();
    let w0 = unfold0(&w, t, s, kk);
    let w1 = unfold1(&w, t, s, kk);
    // HOSVD start.
    let mut u_out = leading_left_vectors(&w0, r_out);
    let mut u_in = leading_left_vectors(&w1, r_in);
    let mut core = core_of(&w0, &u_out, &u_in, kk);
    let mut err = rel_error(norm2, &core);
    let mut iterations = 0;
    // HOOI: re-solve each factor with the other one projected out.
    while iterations < max_iters && err > 0.0 {
        u_out = leading_left_vectors(&project_mode1(&w1, &u_in, t, kk), r_out);
        u_in = leading_left_vectors(&project_mode0(&w0, &u_out, kk), r_in);
        core = core_of(&w0, &u_out, &u_in, kk);
        let new_err = rel_error(norm2, &core);
        iterations += 1;
        let change = (err - new_err).abs();
        err = new_err;
        if change < HOOI_TOL {
            break;
        }
    }
    Tucker2 {
        u_out,
        u_in,
        core,
        kernel: kh,
        rel_error: err,
        iterations,
    }
}

impl Tucker2 {
    /// The three conv weights of the replacement (PyTorch layout, f32):
    /// `_tucker_0` = U_in^T (r_in, S, 1, 1), `_tucker_1` = G (r_out, r_in, k, k),
    /// `_tucker_2` = U_out (T, r_out, 1, 1).
    pub fn conv_weights(&self) -> [(Vec<usize>, Vec<f32>); 3] {
        let (s, r_in) = (self.u_in.nrows(), self.u_in.ncols());
        let (t, r_out) = (self.u_out.nrows(), self.u_out.ncols());
        let k = self.kernel;
        let first = (0..r_in)
            .flat_map(|r| (0..s).map(move |si| (r, si)))
            .map(|(r, si)| self.u_in[(si, r)] as f32);
        let last = (0..t)
            .flat_map(|ti| (0..r_out).map(move |o| (ti, o)))
            .map(|(ti, o)| self.u_out[(ti, o)] as f32);
        [
            (vec![r_in, s, 1, 1], first.collect()),
            (
                vec![r_out, r_in, k, k],
                self.core.iter().map(|&v| v as f32).collect(),
            ),
            (vec![t, r_out, 1, 1], last.collect()),
        ]
    }

    /// W_hat = G x0 U_out x1 U_in, as (T, S, k, k) row-major.
    pub fn reconstruct(&self) -> Vec<f64> {
        let (s, r_in) = (self.u_in.nrows(), self.u_in.ncols());
        let (t, r_out) = (self.u_out.nrows(), self.u_out.ncols());
        let kk = self.kernel * self.kernel;
        // H[o, s, j] = sum_r G[o,r,j] U_in[s,r]; W_hat[t, s, j] = sum_o U_out[t,o] H[o,s,j].
        let g = Mat::from_fn(r_out * kk, r_in, |row, r| {
            let (o, j) = (row / kk, row % kk);
            self.core[(o * r_in + r) * kk + j]
        });
        let h = &g * self.u_in.transpose(); // (r_out*kk) x S
        let mut out = vec![0.0; t * s * kk];
        for ti in 0..t {
            for si in 0..s {
                for j in 0..kk {
                    out[(ti * s + si) * kk + j] = (0..r_out)
                        .map(|o| self.u_out[(ti, o)] * h[(o * kk + j, si)])
                        .sum();
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
    }

    fn true_error(w: &[f32], tk: &Tucker2) -> f64 {
        let r = tk.reconstruct();
        let num: f64 = w
            .iter()
            .zip(&r)
            .map(|(&a, b)| (f64::from(a) - b).powi(2))
            .sum();
        let den: f64 = w.iter().map(|&a| f64::from(a).powi(2)).sum();
        (num / den).sqrt()
    }

    #[test]
    fn full_ranks_reconstruct_exactly() {
        let w = random(6 * 5 * 9, 1);
        let tk = tucker2(&w, [6, 5, 3, 3], 5, 6, HOOI_MAX_ITERS);
        assert!(true_error(&w, &tk) < 1e-10);
        assert!(tk.rel_error < 1e-6);
    }

    #[test]
    fn exact_multilinear_rank_is_recovered() {
        // W = G x0 A x1 B with G (3, 2, 3, 3), A (8 x 3), B (7 x 2): multilinear rank (3, 2).
        let (t, s, r_out, r_in, kk) = (8, 7, 3, 2, 9);
        let g = random(r_out * r_in * kk, 2);
        let a = random(t * r_out, 3);
        let b = random(s * r_in, 4);
        let mut w = vec![0.0f32; t * s * kk];
        for ti in 0..t {
            for si in 0..s {
                for j in 0..kk {
                    let mut v = 0.0f64;
                    for o in 0..r_out {
                        for r in 0..r_in {
                            v += f64::from(
                                a[ti * r_out + o] * g[(o * r_in + r) * kk + j] * b[si * r_in + r],
                            );
                        }
                    }
                    w[(ti * s + si) * kk + j] = v as f32;
                }
            }
        }
        let tk = tucker2(&w, [t, s, 3, 3], r_in, r_out, HOOI_MAX_ITERS);
        assert!(true_error(&w, &tk) < 1e-5, "error {}", true_error(&w, &tk));
    }

    #[test]
    fn hooi_is_no_worse_than_hosvd_and_error_formula_holds() {
        let w = random(16 * 12 * 9, 5);
        let hosvd = tucker2(&w, [16, 12, 3, 3], 4, 5, 0);
        let hooi = tucker2(&w, [16, 12, 3, 3], 4, 5, HOOI_MAX_ITERS);
        assert_eq!(hosvd.iterations, 0);
        assert!(
            hooi.rel_error <= hosvd.rel_error + 1e-12,
            "{} > {}",
            hooi.rel_error,
            hosvd.rel_error
        );
        // The cheap error (||W||^2 - ||G||^2) agrees with the reconstructed one.
        assert!((true_error(&w, &hooi) - hooi.rel_error).abs() < 1e-6);
        assert!((true_error(&w, &hosvd) - hosvd.rel_error).abs() < 1e-6);
    }

    #[test]
    fn factors_are_orthonormal() {
        let w = random(10 * 6 * 9, 6);
        let tk = tucker2(&w, [10, 6, 3, 3], 3, 4, HOOI_MAX_ITERS);
        for u in [&tk.u_out, &tk.u_in] {
            let g = u.transpose() * u;
            for i in 0..u.ncols() {
                for j in 0..u.ncols() {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((g[(i, j)] - want).abs() < 1e-9);
                }
            }
        }
    }
}
