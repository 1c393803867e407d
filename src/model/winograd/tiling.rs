//! The two Winograd tilings of a 3x3 kernel: F(2x2, 3x3) and F(4x4, 3x3), with the
//! matrices of Lavin and Gray ("Fast Algorithms for Convolutional Neural Networks",
//! CVPR 2016, section 4): an `M x M` output tile is `A^T [(G g G^T) . (B^T d B)] A` for
//! its `(M + 2) x (M + 2)` input tile `d`. Each matrix is applied to one column at a
//! time; the tests check the 1-D identity `A^T [(G g) . (B^T d)] = correlate(d, g)`
//! against the definition.

/// The largest tile side, `A` of F(4x4, 3x3): vectors are arrays of this length, of
/// which a tiling uses the first `A`.
pub const MAX_A: usize = 6;

/// A tiling F(M x M, 3x3): `M` outputs per tile side, `A = M + 2` inputs, `A^2`
/// products per tile.
pub trait Tiling {
    const M: usize;
    const A: usize;
    /// `B^T d` for a column `d` of `A` inputs.
    fn input(d: &[f32; MAX_A]) -> [f32; MAX_A];
    /// `G g` for a column `g` of the kernel.
    fn weight(g: [f32; 3]) -> [f32; MAX_A];
    /// `A^T m` for a column `m` of `A` products: `M` outputs.
    fn output(m: &[f32; MAX_A]) -> [f32; 4];
}

/// F(2x2, 3x3): `B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`,
/// `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]`,
/// `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
pub struct F2;

impl Tiling for F2 {
    const M: usize = 2;
    const A: usize = 4;

    #[inline(always)]
    fn input(d: &[f32; MAX_A]) -> [f32; MAX_A] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3], 0.0, 0.0]
    }

    #[inline(always)]
    fn weight(g: [f32; 3]) -> [f32; MAX_A] {
        [
            g[0],
            0.5 * (g[0] + g[1] + g[2]),
            0.5 * (g[0] - g[1] + g[2]),
            g[2],
            0.0,
            0.0,
        ]
    }

    #[inline(always)]
    fn output(m: &[f32; MAX_A]) -> [f32; 4] {
        [m[0] + m[1] + m[2], m[1] - m[2] - m[3], 0.0, 0.0]
    }
}

/// F(4x4, 3x3):
/// `B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
/// [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]`,
/// `G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6],
/// [1/24, -1/12, 1/6], [0, 0, 1]]`,
/// `A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
/// [0, 1, -1, 8, -8, 1]]`.
pub struct F4;

impl Tiling for F4 {
    const M: usize = 4;
    const A: usize = 6;

    #[inline(always)]
    fn input(d: &[f32; MAX_A]) -> [f32; MAX_A] {
        // Shared parts: 4 d2 - ... written as sums of the common terms.
        let (a, b) = (d[4] - 4.0 * d[2], d[3] - 4.0 * d[1]);
        let (c, e) = (d[4] - d[2], 2.0 * (d[3] - d[1]));
        [
            4.0 * d[0] - 5.0 * d[2] + d[4],
            a + b,
            a - b,
            c + e,
            c - e,
            4.0 * d[1] - 5.0 * d[3] + d[5],
        ]
    }

    #[inline(always)]
    fn weight(g: [f32; 3]) -> [f32; MAX_A] {
        let (even, odd) = (g[0] + g[2], g[1]);
        let (even4, odd4) = (g[0] + 4.0 * g[2], 2.0 * g[1]);
        [
            0.25 * g[0],
            -(even + odd) / 6.0,
            -(even - odd) / 6.0,
            (even4 + odd4) / 24.0,
            (even4 - odd4) / 24.0,
            g[2],
        ]
    }

    #[inline(always)]
    fn output(m: &[f32; MAX_A]) -> [f32; 4] {
        let (s1, d1) = (m[1] + m[2], m[1] - m[2]);
        let (s3, d3) = (m[3] + m[4], m[3] - m[4]);
        [
            m[0] + s1 + s3,
            d1 + 2.0 * d3,
            s1 + 4.0 * s3,
            d1 + 8.0 * d3 + m[5],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `A^T [(G g) . (B^T d)]` against the definition `y[k] = sum_j d[k + j] g[j]`, and
    /// each transform against its matrix as the paper prints it (row by row).
    #[allow(clippy::needless_range_loop)] // rows of several matrices at once
    fn check<T: Tiling>(bt: &[[f32; MAX_A]], g: &[[f32; 3]], at: &[[f32; MAX_A]]) {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for _ in 0..20 {
            let d: [f32; MAX_A] = std::array::from_fn(|i| if i < T::A { next() } else { 0.0 });
            let w = [next(), next(), next()];
            let m: [f32; MAX_A] = std::array::from_fn(|i| T::input(&d)[i] * T::weight(w)[i]);
            let y = T::output(&m);
            for k in 0..T::M {
                let want: f32 = (0..3).map(|j| d[k + j] * w[j]).sum();
                assert!(
                    (y[k] - want).abs() < 1e-5,
                    "F{}: y[{k}] {} vs {want}",
                    T::M,
                    y[k]
                );
            }
            let by = |rows: &[[f32; MAX_A]], v: &[f32; MAX_A], i: usize| {
                rows[i].iter().zip(v).map(|(a, b)| a * b).sum::<f32>()
            };
            let mut w6 = [0f32; MAX_A];
            w6[..3].copy_from_slice(&w);
            for i in 0..T::A {
                assert!(
                    (T::input(&d)[i] - by(bt, &d, i)).abs() < 1e-5,
                    "B^T row {i}"
                );
                let gw: f32 = (0..3).map(|j| g[i][j] * w[j]).sum();
                assert!((T::weight(w)[i] - gw).abs() < 1e-6, "G row {i}");
            }
            for k in 0..T::M {
                assert!((y[k] - by(at, &m, k)).abs() < 1e-5, "A^T row {k}");
            }
        }
    }

    #[test]
    fn both_tilings_compute_the_correlation() {
        check::<F2>(
            &[
                [1., 0., -1., 0., 0., 0.],
                [0., 1., 1., 0., 0., 0.],
                [0., -1., 1., 0., 0., 0.],
                [0., 1., 0., -1., 0., 0.],
            ],
            &[
                [1., 0., 0.],
                [0.5, 0.5, 0.5],
                [0.5, -0.5, 0.5],
                [0., 0., 1.],
            ],
            &[[1., 1., 1., 0., 0., 0.], [0., 1., -1., -1., 0., 0.]],
        );
        let (s, t, w) = (1. / 6., 1. / 12., 1. / 24.);
        check::<F4>(
            &[
                [4., 0., -5., 0., 1., 0.],
                [0., -4., -4., 1., 1., 0.],
                [0., 4., -4., -1., 1., 0.],
                [0., -2., -1., 2., 1., 0.],
                [0., 2., -1., -2., 1., 0.],
                [0., 4., 0., -5., 0., 1.],
            ],
            &[
                [0.25, 0., 0.],
                [-s, -s, -s],
                [-s, s, -s],
                [w, t, s],
                [w, -t, s],
                [0., 0., 1.],
            ],
            &[
                [1., 1., 1., 1., 1., 0.],
                [0., 1., -1., 2., -2., 0.],
                [0., 1., 1., 4., 4., 0.],
                [0., 1., -1., 8., -8., 1.],
            ],
        );
    }
}
