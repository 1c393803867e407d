//! Linear centred kernel alignment (CKA; Kornblith et al., "Similarity of Neural Network
//! Representations Revisited", ICML 2019) between two layers' outputs on the same images.
//! It compares representations of different widths (a pruned layer against the original)
//! and is invariant to orthogonal transforms and isotropic scaling: 1 = same geometry.

use burn::tensor::Tensor;

/// The Gram matrix `X X^T` (`n x n`, f64, row-major) of activations `[n, ...]`.
pub fn gram(x: Tensor<4>) -> (usize, Vec<f64>) {
    let [n, c, h, w] = x.dims();
    let flat = x.reshape([n, c * h * w]);
    let g = flat.clone().matmul(flat.transpose());
    let values = g
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data");
    (n, values.into_iter().map(f64::from).collect())
}

/// `H K H` with `H = I - 11^T / n`: the Gram matrix of column-centred features.
fn centre(n: usize, k: &[f64]) -> Vec<f64> {
    let row: Vec<f64> = (0..n)
        .map(|i| k[i * n..(i + 1) * n].iter().sum::<f64>() / n as f64)
        .collect();
    let all = row.iter().sum::<f64>() / n as f64;
    (0..n * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            // K is symmetric: column means equal row means.
            k[ij] - row[i] - row[j] + all
        })
        .collect()
}

/// Linear CKA from the two Gram matrices of the same `n` images (NaN when either layer's
/// output is constant over the images).
pub fn linear_cka(n: usize, k: &[f64], l: &[f64]) -> f64 {
    let (kc, lc) = (centre(n, k), centre(n, l));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let denom = (dot(&kc, &kc) * dot(&lc, &lc)).sqrt();
    if denom == 0.0 {
        return f64::NAN;
    }
    dot(&kc, &lc) / denom
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn features(n: usize, p: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n * p)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f64 / (1u64 << 24) as f64 - 0.5
            })
            .collect()
    }

    /// The feature-space definition: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F).
    fn cka_by_definition(n: usize, x: &[f64], p: usize, y: &[f64], q: usize) -> f64 {
        let centred = |m: &[f64], d: usize| {
            let mut out = m.to_vec();
            for j in 0..d {
                let mean = (0..n).map(|i| m[i * d + j]).sum::<f64>() / n as f64;
                (0..n).for_each(|i| out[i * d + j] -= mean);
            }
            out
        };
        let (xc, yc) = (centred(x, p), centred(y, q));
        let cross = |a: &[f64], da: usize, b: &[f64], db: usize| {
            let mut s = 0.0;
            for i in 0..da {
                for j in 0..db {
                    let v: f64 = (0..n).map(|r| a[r * da + i] * b[r * db + j]).sum();
                    s += v * v;
                }
            }
            s
        };
        cross(&yc, q, &xc, p) / (cross(&xc, p, &xc, p).sqrt() * cross(&yc, q, &yc, q).sqrt())
    }

    fn tensor(v: &[f64], n: usize, c: usize) -> Tensor<4> {
        let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::from_data(TensorData::new(data, [n, c, 2, 1]), &Device::flex())
    }

    #[test]
    fn gram_form_equals_the_feature_space_definition() {
        // 7 images; 3x2x1 features against 5x2x1 (different widths).
        let (n, x, y) = (7, features(7, 6, 1), features(7, 10, 2));
        let (_, k) = gram(tensor(&x, n, 3));
        let (_, l) = gram(tensor(&y, n, 5));
        let got = linear_cka(n, &k, &l);
        let want = cka_by_definition(n, &x, 6, &y, 10);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!(got > 0.0 && got < 1.0);
    }

    #[test]
    fn invariant_to_scaling_and_orthogonal_maps() {
        let (n, x) = (6, features(6, 4, 3));
        let (_, k) = gram(tensor(&x, n, 2));
        // Scale by 3 and swap/negate features (an orthogonal map), shift by a constant.
        let y: Vec<f64> = (0..n * 4)
            .map(|i| {
                let (r, c) = (i / 4, i % 4);
                -3.0 * x[r * 4 + (3 - c)] + 1.5
            })
            .collect();
        let (_, l) = gram(tensor(&y, n, 2));
        assert!((linear_cka(n, &k, &l) - 1.0).abs() < 1e-5);
        assert!(linear_cka(n, &k, &vec![1.0; n * n]).is_nan());
    }
}
