//! The forward pass of a 3x3 convolution (stride 1, one zero of padding) by Winograd's
//! minimal filtering F(2x2, 3x3) ("Fast Algorithms for Convolutional Neural Networks",
//! Lavin and Gray, CVPR 2016): each 2x2 output tile is `A^T [(G g G^T) . (B^T d B)] A`
//! for its 4x4 input tile `d`, so the channel sums become 16 matrix products
//! `M_e = U_e V_e` (`U_e`: `[O, C]` transformed weights, `V_e`: `[C, tiles]` transformed
//! inputs) with 16 multiplies per tile and channel pair instead of 36. On channel-major
//! activations (`[C, N, H, W]`), the batch's tiles go through in chunks of images, one
//! chunk per thread when there are chunks enough. The input and output transforms run
//! along a whole row of tiles at a time (contiguous, so they vectorise). `cnhw`'s tests
//! check the output against burn's `conv2d`. The input gradient is the same kind of
//! convolution (of the output's gradient, by the turned weights), so it runs here too;
//! the weight gradient stays the im2col kernel's.

use super::conv_gemm::{Shared, View, gemm_raw, image_runs, min_len};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Sizes of one 3x3, padding-1 convolution: `c` input channels, `n` images of `h x w`,
/// `out` output channels (the output is `h x w` too).
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub c: usize,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub out: usize,
}

impl Sizes {
    /// Whether Winograd pays here: enough channels on both sides that the products, not
    /// the transforms, take the time, and tiles enough to repay transforming the weights
    /// (16 values per weight pair, written on every call).
    pub fn worth_it(&self) -> bool {
        self.c >= MIN_CHANNELS
            && self.out >= MIN_CHANNELS
            && self.n * self.image_tiles() >= MIN_TILES
    }

    fn tiles_y(&self) -> usize {
        self.h.div_ceil(2)
    }

    fn tiles_x(&self) -> usize {
        self.w.div_ceil(2)
    }

    fn image_tiles(&self) -> usize {
        self.tiles_y() * self.tiles_x()
    }

    /// Images per chunk, and whether chunks run one per thread (each single-threaded)
    /// or one after the other (each with its 16 products shared among the threads).
    fn chunking(&self) -> (usize, bool) {
        let per_image = 16 * (self.c + self.out) * self.image_tiles();
        let small = (CHUNK_FLOATS / per_image).clamp(1, self.n);
        let weights = 16 * self.out * self.c;
        // Per thread, each chunk streams all of `U`: only where that is small next to
        // the chunk's own data.
        if self.n.div_ceil(small) >= 2 * rayon::current_num_threads()
            && weights <= small * per_image
        {
            (small, true)
        } else {
            ((BIG_CHUNK_FLOATS / per_image).clamp(1, self.n), false)
        }
    }
}

/// Fewer channels than this on either side: im2col's product is as quick.
const MIN_CHANNELS: usize = 16;

/// Fewer output tiles than this over the batch (one image of a small map): the weight
/// transform costs more than the multiplies saved.
const MIN_TILES: usize = 64;

/// About 1 MiB of transformed inputs and products per chunk, when chunks run one per
/// thread.
const CHUNK_FLOATS: usize = 1 << 18;

/// About 16 MiB per chunk when chunks run one after the other.
const BIG_CHUNK_FLOATS: usize = 1 << 22;

/// `U = G g G^T` for every `(o, c)`, laid out `[16, O, C]`, with
/// `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]`.
fn transform_weights(weight: &[f32], s: Sizes) -> Vec<f32> {
    let oc = s.out * s.c;
    let mut u = Vec::<f32>::with_capacity(16 * oc);
    let dst = Shared(u.as_mut_ptr());
    let gg = |v: [f32; 3]| {
        [
            v[0],
            0.5 * (v[0] + v[1] + v[2]),
            0.5 * (v[0] - v[1] + v[2]),
            v[2],
        ]
    };
    // Blocks of weight pairs per task: one closure call per pair was a tenth of an
    // inference batch of vgg19_bn.
    const PAIRS: usize = 256;
    weight
        .par_chunks(9 * PAIRS)
        .enumerate()
        .for_each(|(block, pairs)| {
            for (p, g) in pairs.chunks_exact(9).enumerate() {
                let k = block * PAIRS + p;
                // G g: rows of the 3x3 kernel combined; then (G g) G^T: columns.
                let cols: [[f32; 4]; 3] = std::array::from_fn(|j| gg([g[j], g[3 + j], g[6 + j]]));
                let [c0, c1, c2] = cols;
                for (i, ((&a, &b), &c)) in c0.iter().zip(&c1).zip(&c2).enumerate() {
                    let row = gg([a, b, c]);
                    for (j, v) in row.into_iter().enumerate() {
                        // SAFETY: `(i 4 + j) oc + k` is inside `u`'s capacity (k < oc) and
                        // only weight pair `k` writes it.
                        unsafe { dst.get().add((i * 4 + j) * oc + k).write(v) };
                    }
                }
            }
        });
    // SAFETY: the `oc` weight pairs wrote all 16 of their values each.
    unsafe { u.set_len(16 * oc) };
    u
}

/// `y = conv3x3(x, weight) + bias`, `x` channel-major `[C, N, H, W]`, `weight`
/// `[O, C, 3, 3]`, `bias` `[O]`; `y` channel-major `[O, N, H, W]`.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], s: Sizes) -> Vec<f32> {
    let u = transform_weights(weight, s);
    let total = s.out * s.n * s.h * s.w;
    let mut y = Vec::<f32>::with_capacity(total);
    let dst = Shared(y.as_mut_ptr());
    let (per_chunk, per_thread) = s.chunking();
    let chunks: Vec<Range<usize>> = image_runs(s.n, per_chunk).collect();
    let run = |imgs: Range<usize>| {
        let v = transform_inputs(x, s, imgs.clone(), per_thread);
        let m = products(&u, &v, s, imgs.len() * s.image_tiles(), per_thread);
        // SAFETY: `y` has room for `total` values; each chunk writes the output pixels of
        // its own images only, every one of them (see `transform_outputs`).
        unsafe { transform_outputs(&m, bias, s, imgs, per_thread, dst) };
    };
    match per_thread {
        true => chunks.into_par_iter().for_each(run),
        false => chunks.into_iter().for_each(run),
    }
    // SAFETY: the chunks' images tile `0..n`, and each wrote all its output pixels.
    unsafe { y.set_len(total) };
    y
}

/// The input gradient of that convolution for the output's gradient `dy` (`[O, N, H, W]`
/// channel-major): `dx` (`[C, N, H, W]`) is the same convolution of `dy` with the weights
/// transposed and turned by 180 degrees, `W'[c, o, i, j] = W[o, c, 2 - i, 2 - j]` (the
/// adjoint of a stride-1 correlation with padding 1 is a correlation with the flipped
/// kernel and padding `3 - 1 - 1 = 1`), and no bias.
pub fn input_grad(dy: &[f32], weight: &[f32], s: Sizes) -> Vec<f32> {
    let mut turned = vec![0f32; weight.len()];
    for (o, per_out) in weight.chunks_exact(s.c * 9).enumerate() {
        for (c, kernel) in per_out.chunks_exact(9).enumerate() {
            let dst = &mut turned[(c * s.out + o) * 9..][..9];
            for (d, &v) in dst.iter_mut().zip(kernel.iter().rev()) {
                *d = v;
            }
        }
    }
    let adjoint = Sizes {
        c: s.out,
        out: s.c,
        ..s
    };
    forward(dy, &turned, &vec![0.0; s.c], adjoint)
}

/// `V = B^T d B` of every tile of images `imgs`, laid out `[16, C, tiles]` (tiles in
/// image, tile-row, tile-column order), with
/// `B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
fn transform_inputs(x: &[f32], s: Sizes, imgs: Range<usize>, per_thread: bool) -> Vec<f32> {
    let tiles = imgs.len() * s.image_tiles();
    let mut v = Vec::<f32>::with_capacity(16 * s.c * tiles);
    let out = Shared(v.as_mut_ptr());
    (0..s.c)
        .into_par_iter()
        .with_min_len(min_len(per_thread))
        // SAFETY: `v` has room for `[16, C, tiles]`; channel `ch`'s rows are this task's.
        .for_each(|ch| unsafe { input_channel(x, s, imgs.clone(), ch, out) });
    // SAFETY: every channel wrote its 16 rows of `tiles` values: each image, tile row and
    // part `(i, j)` one run of `tx_n`, and the runs tile the row.
    unsafe { v.set_len(16 * s.c * tiles) };
    v
}

/// [`transform_inputs`] of input channel `ch`: its 16 rows of `V` (`[16, C, tiles]`
/// for the tiles of images `imgs`, at `out`).
///
/// # Safety
/// `out` must have room for all of `V`, and no other thread may write channel `ch`'s
/// rows meanwhile.
unsafe fn input_channel(x: &[f32], s: Sizes, imgs: Range<usize>, ch: usize, out: Shared) {
    let (ty_n, tx_n) = (s.tiles_y(), s.tiles_x());
    let tiles = imgs.len() * s.image_tiles();
    // One input row padded by a zero on the left (and right, to even length), split
    // into its even and odd columns: tile t reads padded columns 2t..2t+4.
    let mut even = vec![0f32; tx_n + 1];
    let mut odd = vec![0f32; tx_n + 1];
    // The row transform `d B` of the tile row's four input rows: [row][part][t].
    let mut r4: [[Vec<f32>; 4]; 4] =
        std::array::from_fn(|_| std::array::from_fn(|_| vec![0f32; tx_n]));
    for (b, img) in imgs.clone().enumerate() {
        let plane = &x[(ch * s.n + img) * s.h * s.w..][..s.h * s.w];
        for ty in 0..ty_n {
            for (i, r) in r4.iter_mut().enumerate() {
                let iy = (2 * ty + i).checked_sub(1).filter(|&iy| iy < s.h);
                split_row(iy.map(|iy| &plane[iy * s.w..][..s.w]), &mut even, &mut odd);
                let [r0, r1, r2, r3] = r;
                let (e0, e1) = (&even[..tx_n], &even[1..]);
                let (o0, o1) = (&odd[..tx_n], &odd[1..]);
                for t in 0..tx_n {
                    let (a, bb, c, d) = (e0[t], o0[t], e1[t], o1[t]);
                    r0[t] = a - c;
                    r1[t] = bb + c;
                    r2[t] = c - bb;
                    r3[t] = bb - d;
                }
            }
            let first = (b * ty_n + ty) * tx_n;
            let [p0, p1, p2, p3] = &r4;
            for j in 0..4 {
                let (r0, r1, r2, r3) = (&p0[j], &p1[j], &p2[j], &p3[j]);
                // SAFETY: rows `(i 4 + j, ch)` of `V`, tiles `first..first + tx_n`:
                // inside `V` and disjoint, and channel `ch` is this task's alone.
                let [d0, d1, d2, d3] = std::array::from_fn(|i| unsafe {
                    let at = ((i * 4 + j) * s.c + ch) * tiles + first;
                    let at = out.get().add(at).cast::<MaybeUninit<f32>>();
                    std::slice::from_raw_parts_mut(at, tx_n)
                });
                for t in 0..tx_n {
                    d0[t].write(r0[t] - r2[t]);
                    d1[t].write(r1[t] + r2[t]);
                    d2[t].write(r2[t] - r1[t]);
                    d3[t].write(r1[t] - r3[t]);
                }
            }
        }
    }
}

/// Input row `row` (zeros when `None`: padding) with one zero before it, as its even
/// and odd columns (`even[t]` is padded column `2t`, `odd[t]` column `2t + 1`).
fn split_row(row: Option<&[f32]>, even: &mut [f32], odd: &mut [f32]) {
    even.fill(0.0);
    odd.fill(0.0);
    let Some(row) = row else { return };
    // Input column x is padded column x + 1: `row[2t]` is `odd[t]`, `row[2t + 1]` is
    // `even[t + 1]`.
    let pairs = row.chunks_exact(2);
    if let [last] = pairs.remainder() {
        odd[row.len() / 2] = *last;
    }
    for ((pair, o), e) in pairs.zip(odd.iter_mut()).zip(&mut even[1..]) {
        *o = pair[0];
        *e = pair[1];
    }
}

/// `M_e = U_e V_e` for the 16 `e`, laid out `[16, O, tiles]`.
fn products(u: &[f32], v: &[f32], s: Sizes, tiles: usize, per_thread: bool) -> Vec<f32> {
    let mut m = Vec::<f32>::with_capacity(16 * s.out * tiles);
    let dst = Shared(m.as_mut_ptr());
    (0..16)
        .into_par_iter()
        .with_min_len(min_len(per_thread))
        .for_each(|e| {
            let lhs = View::rows(&u[e * s.out * s.c..][..s.out * s.c], s.out, s.c);
            let rhs = View::rows(&v[e * s.c * tiles..][..s.c * tiles], s.c, tiles);
            // SAFETY: product `e` writes (never reads) its own `[O, tiles]` block of `m`.
            unsafe {
                gemm_raw(
                    dst.get().add(e * s.out * tiles),
                    tiles,
                    lhs,
                    rhs,
                    false,
                    false,
                )
            };
        });
    // SAFETY: the 16 products wrote all `16 O tiles` values.
    unsafe { m.set_len(16 * s.out * tiles) };
    m
}

/// `y = A^T M A + bias` for every tile of images `imgs`, written into `y`
/// (`[O, N, H, W]`), with `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`. A tile past an odd
/// map's edge writes only its pixels inside the map.
///
/// # Safety
/// `y` must have room for `O N H W` values, and no other thread may write the pixels
/// of images `imgs` meanwhile.
unsafe fn transform_outputs(
    m: &[f32],
    bias: &[f32],
    s: Sizes,
    imgs: Range<usize>,
    per_thread: bool,
    y: Shared,
) {
    (0..s.out)
        .into_par_iter()
        .with_min_len(min_len(per_thread))
        // SAFETY: each task writes output channel `o`'s planes of images `imgs` alone
        // (the caller vouches for other threads).
        .for_each(|o| unsafe { output_channel(m, bias, s, imgs.clone(), o, y) });
}

/// [`transform_outputs`] of output channel `o`.
///
/// # Safety
/// As [`transform_outputs`], and no other thread may write channel `o`'s planes of
/// images `imgs` meanwhile.
unsafe fn output_channel(
    m: &[f32],
    bias: &[f32],
    s: Sizes,
    imgs: Range<usize>,
    o: usize,
    y: Shared,
) {
    let (ty_n, tx_n) = (s.tiles_y(), s.tiles_x());
    let tiles = imgs.len() * s.image_tiles();
    // The column transform `M A` of a tile row: [tile row i][output column][t].
    let mut half: [[Vec<f32>; 2]; 4] =
        std::array::from_fn(|_| std::array::from_fn(|_| vec![0f32; tx_n]));
    let mut line = vec![0f32; 2 * tx_n];
    let bo = bias[o];
    for (b, img) in imgs.clone().enumerate() {
        // SAFETY: the planes of output channel `o`, image `img`: inside `y`, and
        // written by this task alone (the caller vouches for other threads).
        let plane = unsafe {
            let at = y.get().add((o * s.n + img) * s.h * s.w);
            std::slice::from_raw_parts_mut(at.cast::<MaybeUninit<f32>>(), s.h * s.w)
        };
        for ty in 0..ty_n {
            let first = (b * ty_n + ty) * tx_n;
            let row = |e: usize| &m[(e * s.out + o) * tiles + first..][..tx_n];
            for (i, [h0, h1]) in half.iter_mut().enumerate() {
                let (m0, m1, m2, m3) = (row(i * 4), row(i * 4 + 1), row(i * 4 + 2), row(i * 4 + 3));
                for t in 0..tx_n {
                    h0[t] = m0[t] + m1[t] + m2[t];
                    h1[t] = m1[t] - m2[t] - m3[t];
                }
            }
            let [h0, h1, h2, h3] = &half;
            for oy in 0..2.min(s.h - 2 * ty) {
                for (t, pair) in line.chunks_exact_mut(2).enumerate() {
                    for (ox, v) in pair.iter_mut().enumerate() {
                        *v = bo
                            + match oy {
                                0 => h0[ox][t] + h1[ox][t] + h2[ox][t],
                                _ => h1[ox][t] - h2[ox][t] - h3[ox][t],
                            };
                    }
                }
                plane[(2 * ty + oy) * s.w..][..s.w].write_copy_of_slice(&line[..s.w]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(c: usize, out: usize, n: usize, hw: usize) -> Sizes {
        Sizes {
            c,
            n,
            h: hw,
            w: hw,
            out,
        }
    }

    /// `cnhw`'s Winograd cases do take this path; small channel counts and single small
    /// maps do not.
    #[test]
    fn winograd_applies_where_it_pays() {
        for s in [
            sizes(16, 16, 8, 5),
            sizes(17, 20, 64, 2),
            sizes(16, 16, 64, 1),
            sizes(24, 16, 4, 7),
        ] {
            assert!(s.worth_it(), "{s:?}");
        }
        for s in [
            sizes(15, 64, 128, 32),
            sizes(64, 8, 128, 32),
            sizes(512, 512, 1, 2),
        ] {
            assert!(!s.worth_it(), "{s:?}");
        }
        let two_threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        two_threads.install(|| {
            assert_eq!(sizes(16, 16, 8, 32).chunking(), (2, true));
            assert!(!sizes(16, 16, 8, 5).chunking().1);
        });
    }
}
