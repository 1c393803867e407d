//! The forward pass of a convolution with few output pixels over the batch (the deep
//! layers of a CNN at batch 1: 2x2 maps) and large weights, where `y = W cols` is a matrix of
//! `O x few` and the time is reading `W` (9.4 MB for a 512-channel 3x3 conv). A general
//! product packs `W` on every call, which reads and writes it again. Here each
//! row of `W` is read once and dotted with every pixel's column of `cols`. The columns
//! are laid out pixel-major (`cols^T`, small enough to stay in cache), four pixels at a
//! time, in 16-lane accumulators. `cnhw`'s tests check it against burn's `conv2d`.

use super::simd::vectorized;
use rayon::prelude::*;

/// The most output pixels over the batch that take this path. Measured on vgg19_bn at
/// batch 1 (AVX-512 Xeon, 2 cores): its 512-channel convs on 2x2 maps (4 pixels) took
/// 0.75 ms here against 1.1-1.5 ms through `gemm`, but on 4x4 maps (16 pixels) 1.6-1.8 ms
/// against 1.2-1.4 ms: with four groups of pixels the products, not `W`, take the time.
const MAX_PIXELS: usize = 8;

/// The fewest weights (floats) that take this path: where `W` comes from memory rather
/// than cache, so that reading it once is what counts (the reference config's small
/// Tucker cores at batch 1 were no faster here).
const MIN_WEIGHTS: usize = 1 << 18;

/// Whether a conv with `pixels` output pixels over the batch and `weights` weights
/// takes this path.
pub fn applies(pixels: usize, weights: usize) -> bool {
    pixels <= MAX_PIXELS && weights >= MIN_WEIGHTS
}

/// Pixels dotted at once with a row of `W` ([`dots`] is written for four).
pub const GROUP: usize = 4;
const _: () = assert!(GROUP == 4);

/// Lanes of each accumulator.
const LANES: usize = 16;

/// Rows of `W` per task.
const ROWS: usize = 8;

/// `y = W cols + bias`, `W` as `[O, K]` (`weight`), `cols_t` as `[P, K]` with `P` a
/// multiple of [`GROUP`] (rows past the real pixels zero), `y` as `[O, pixels]`.
pub fn forward(weight: &[f32], cols_t: &[f32], bias: &[f32], k: usize, pixels: usize) -> Vec<f32> {
    let out = bias.len();
    assert_eq!(weight.len(), out * k, "weight [O, K]");
    assert!(
        cols_t.len() >= pixels.next_multiple_of(GROUP) * k,
        "columns [P, K]"
    );
    let mut y = vec![0f32; out * pixels];
    y.par_chunks_mut(ROWS * pixels)
        .enumerate()
        .for_each(|(block, ys)| {
            vectorized(
                #[inline(always)]
                || rows(weight, cols_t, bias, k, pixels, block * ROWS, ys),
            )
        });
    y
}

/// Rows `first..` of `y` (`ys`, `pixels` values each).
#[inline(always)]
fn rows(
    weight: &[f32],
    cols_t: &[f32],
    bias: &[f32],
    k: usize,
    pixels: usize,
    first: usize,
    ys: &mut [f32],
) {
    for (r, yrow) in ys.chunks_exact_mut(pixels).enumerate() {
        let o = first + r;
        let w = &weight[o * k..][..k];
        for (g, yg) in yrow.chunks_mut(GROUP).enumerate() {
            let sums = dots(w, &cols_t[g * GROUP * k..][..GROUP * k], k);
            for (v, s) in yg.iter_mut().zip(sums) {
                *v = bias[o] + s;
            }
        }
    }
}

/// `w . c_q` for the [`GROUP`] columns `c_q` of `cols` (`[GROUP, k]`).
#[inline(always)]
fn dots(w: &[f32], cols: &[f32], k: usize) -> [f32; GROUP] {
    let (c0, c1, c2, c3) = (
        &cols[..k],
        &cols[k..2 * k],
        &cols[2 * k..3 * k],
        &cols[3 * k..4 * k],
    );
    // Four accumulators of fixed length, so that each step is one vector multiply-add.
    let (mut a0, mut a1, mut a2, mut a3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let lane = |s: &[f32], at: usize| -> [f32; LANES] {
        s[at..at + LANES].try_into().expect("LANES values")
    };
    let whole = k / LANES * LANES;
    for at in (0..whole).step_by(LANES) {
        let (wv, x0, x1, x2, x3) = (
            lane(w, at),
            lane(c0, at),
            lane(c1, at),
            lane(c2, at),
            lane(c3, at),
        );
        for l in 0..LANES {
            a0[l] += wv[l] * x0[l];
            a1[l] += wv[l] * x1[l];
            a2[l] += wv[l] * x2[l];
            a3[l] += wv[l] * x3[l];
        }
    }
    let tail = |c: &[f32]| -> f32 { w[whole..].iter().zip(&c[whole..]).map(|(x, y)| x * y).sum() };
    [
        a0.iter().sum::<f32>() + tail(c0),
        a1.iter().sum::<f32>() + tail(c1),
        a2.iter().sum::<f32>() + tail(c2),
        a3.iter().sum::<f32>() + tail(c3),
    ]
}
