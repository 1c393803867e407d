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
//! convolution (of the output's gradient, by the turned weights), so it runs here too.
//! So does the weight gradient: the forward pass is bilinear in `U` and `V`, so
//! `dU_e = dM_e V_e^T` summed over the tiles, with `dM = A dY A^T` per tile, and
//! `dg = G^T dU G`: 16 products of `[O, tiles] x [tiles, C]`, 4 multiplies per output
//! pixel and channel pair instead of im2col's 9.

use super::conv_gemm::{Shared, View, add_parts, gemm_raw, image_runs, matmul_add_on, min_len};
use super::simd::vectorized;
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

    /// The batch's chunks, and whether they run one per thread (each single-threaded)
    /// or one after the other (each with its 16 products shared among the threads).
    /// A chunk is a run of images, or a band of one image's tile rows where one image's
    /// transformed data alone would overflow a core's cache.
    fn chunks(&self) -> (Vec<Chunk>, bool) {
        let ty_n = self.tiles_y();
        let per_row = 16 * (self.c + self.out) * self.tiles_x();
        let per_image = per_row * ty_n;
        let weights = 16 * self.out * self.c;
        let threads = rayon::current_num_threads();
        let images = |per: usize| -> Vec<Chunk> {
            image_runs(self.n, per)
                .map(|imgs| Chunk {
                    imgs,
                    rows: 0..ty_n,
                })
                .collect()
        };
        if per_image <= CHUNK_FLOATS {
            let small = (CHUNK_FLOATS / per_image).clamp(1, self.n);
            // Per thread, each chunk streams all of `U`: only where that is small next
            // to the chunk's own data.
            if self.n.div_ceil(small) >= 2 * threads && weights <= small * per_image {
                return (images(small), true);
            }
        } else {
            let rows = (CHUNK_FLOATS / per_row).clamp(1, ty_n);
            if self.n * ty_n.div_ceil(rows) >= 2 * threads && weights <= rows * per_row {
                let bands = (0..self.n)
                    .flat_map(|img| {
                        image_runs(ty_n, rows).map(move |rows| Chunk {
                            imgs: img..img + 1,
                            rows,
                        })
                    })
                    .collect();
                return (bands, true);
            }
        }
        (
            images((BIG_CHUNK_FLOATS / per_image).clamp(1, self.n)),
            false,
        )
    }
}

/// Part of a batch that the transforms and products take at once: tile rows `rows` of
/// images `imgs` (all of them, `0..tiles_y`, unless it is a band of one image). Its
/// tiles are numbered by image, tile row within `rows`, tile column.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Chunk {
    imgs: Range<usize>,
    rows: Range<usize>,
}

impl Chunk {
    fn tiles(&self, s: Sizes) -> usize {
        self.imgs.len() * self.rows.len() * s.tiles_x()
    }

    /// Tile `(b, ty, 0)`'s number: image `b` of the chunk, tile row `ty` of the map.
    fn first(&self, s: Sizes, b: usize, ty: usize) -> usize {
        (b * self.rows.len() + ty - self.rows.start) * s.tiles_x()
    }
}

/// Fewer channels than this on either side: im2col's product is as quick.
const MIN_CHANNELS: usize = 16;

/// Fewer output tiles than this over the batch (one image of a small map): the weight
/// transform costs more than the multiplies saved.
const MIN_TILES: usize = 64;

/// About 1 MiB of transformed inputs and products per chunk, when chunks run one per
/// thread (within a core's L2 beside the transformed weights).
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
    let (chunks, per_thread) = s.chunks();
    let run = |chunk: Chunk| {
        let v = transform_inputs(x, s, &chunk, per_thread);
        let m = products(&u, &v, s, chunk.tiles(s), per_thread);
        // SAFETY: `y` has room for `total` values; each chunk writes the output pixels of
        // its own tile rows of its own images only, every one of them (see
        // `transform_outputs`).
        unsafe { transform_outputs(&m, bias, s, &chunk, per_thread, dst) };
    };
    match per_thread {
        true => chunks.into_par_iter().for_each(run),
        false => chunks.into_iter().for_each(run),
    }
    // SAFETY: the chunks tile the batch's tile rows, and each wrote all its pixels.
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

/// The weight gradient of that convolution for the output's gradient `dy`
/// (`[O, N, H, W]` channel-major): `dW` as `[O, C, 3, 3]`. Chunks of images as in
/// [`forward`]; chunks that run one per thread each add to their thread's own `dU`, and
/// those are summed in a fixed order.
pub fn weight_grad(x: &[f32], dy: &[f32], s: Sizes) -> Vec<f32> {
    let oc = s.out * s.c;
    let (chunks, per_thread) = s.chunks();
    // `dU_e += dM_e V_e^T` for the chunk's tiles.
    let add_chunk = |du: &mut [f32], chunk: &Chunk| {
        let tiles = chunk.tiles(s);
        let v = transform_inputs(x, s, chunk, per_thread);
        let dm = transform_output_grads(dy, s, chunk, per_thread);
        du.par_chunks_mut(oc)
            .with_min_len(min_len(per_thread))
            .enumerate()
            .for_each(|(e, du_e)| {
                let lhs = View::rows(&dm[e * s.out * tiles..][..s.out * tiles], s.out, tiles);
                let rhs = View::rows(&v[e * s.c * tiles..][..s.c * tiles], s.c, tiles);
                matmul_add_on(du_e, lhs, rhs.t(), false);
            });
    };
    let mut du = vec![0f32; 16 * oc];
    if per_thread {
        let parts = rayon::current_num_threads().min(chunks.len());
        add_parts(&mut du, chunks.len(), parts, |run| {
            let mut part = vec![0f32; 16 * oc];
            for chunk in &chunks[run] {
                add_chunk(&mut part, chunk);
            }
            part
        });
    } else {
        for chunk in &chunks {
            add_chunk(&mut du, chunk);
        }
    }
    untransform_weights(&du, s)
}

/// `dg = G^T dU G` for every `(o, c)`: the adjoint of [`transform_weights`], from
/// `[16, O, C]` to `[O, C, 3, 3]`.
fn untransform_weights(du: &[f32], s: Sizes) -> Vec<f32> {
    let oc = s.out * s.c;
    // `G^T v` for a 4-vector `v` (the rows of `G^T` are `G`'s columns).
    let gt = |v: [f32; 4]| {
        [
            v[0] + 0.5 * (v[1] + v[2]),
            0.5 * (v[1] - v[2]),
            0.5 * (v[1] + v[2]) + v[3],
        ]
    };
    let mut dw = vec![0f32; 9 * oc];
    dw.par_chunks_mut(9 * 256)
        .enumerate()
        .for_each(|(block, pairs)| {
            for (p, out) in pairs.chunks_exact_mut(9).enumerate() {
                let k = block * 256 + p;
                let at = |i: usize, j: usize| du[(i * 4 + j) * oc + k];
                // dU G: each row `i` of dU combined over its columns; then G^T of that.
                let rows: [[f32; 3]; 4] =
                    std::array::from_fn(|i| gt([at(i, 0), at(i, 1), at(i, 2), at(i, 3)]));
                for q in 0..3 {
                    let col = gt([rows[0][q], rows[1][q], rows[2][q], rows[3][q]]);
                    for (p, v) in col.into_iter().enumerate() {
                        out[p * 3 + q] = v;
                    }
                }
            }
        });
    dw
}

/// `dM = A dY A^T` of every 2x2 output tile of `chunk` (zeros past the map's
/// edge), laid out `[16, O, tiles]`: the adjoint of [`transform_outputs`]'s `A^T M A`,
/// with `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
fn transform_output_grads(dy: &[f32], s: Sizes, chunk: &Chunk, per_thread: bool) -> Vec<f32> {
    // SAFETY: `output_grad_channel` writes channel `o`'s 16 rows of the chunk's tiles:
    // each image and tile row one run of `tx_n`, and the runs tile the row.
    unsafe {
        by_channel(
            s.out,
            chunk.tiles(s),
            per_thread,
            #[inline(always)]
            |o, out| output_grad_channel(dy, s, chunk, o, out),
        )
    }
}

/// A `[16, channels, tiles]` buffer whose rows of channel `ch` the call `fill(ch, out)`
/// writes (`out`: the buffer), in parallel over the channels (on this thread alone
/// when `per_thread`), each call compiled for the widest instruction set the CPU has
/// (see `simd`; `fill` should be `#[inline(always)]`).
///
/// # Safety
/// `fill(ch, out)` must write every value of channel `ch`'s 16 rows and nothing else.
unsafe fn by_channel(
    channels: usize,
    tiles: usize,
    per_thread: bool,
    fill: impl Fn(usize, Shared) + Sync,
) -> Vec<f32> {
    let mut buffer = Vec::<f32>::with_capacity(16 * channels * tiles);
    let out = Shared(buffer.as_mut_ptr());
    (0..channels)
        .into_par_iter()
        .with_min_len(min_len(per_thread))
        .for_each(|ch| {
            vectorized(
                #[inline(always)]
                || fill(ch, out),
            )
        });
    // SAFETY: every channel wrote all its values (the caller vouches), and the
    // channels' rows tile the buffer.
    unsafe { buffer.set_len(16 * channels * tiles) };
    buffer
}

/// [`transform_output_grads`] of output channel `o`.
///
/// # Safety
/// `out` must have room for all of `dM`, and no other thread may write channel `o`'s
/// rows meanwhile.
#[inline(always)]
unsafe fn output_grad_channel(dy: &[f32], s: Sizes, chunk: &Chunk, o: usize, out: Shared) {
    let n = s.tiles_x();
    let tiles = chunk.tiles(s);
    // A tile row's two rows of `dY`, each as its even and odd columns (zeros past the
    // edge): `[row][even, odd][t]`.
    let mut halves: [[Vec<f32>; 2]; 2] =
        std::array::from_fn(|_| std::array::from_fn(|_| vec![0f32; n]));
    // One row of `A dY` as its even and odd columns.
    let (mut re, mut ro) = (vec![0f32; n], vec![0f32; n]);
    for (b, img) in chunk.imgs.clone().enumerate() {
        let plane = &dy[(o * s.n + img) * s.h * s.w..][..s.h * s.w];
        for ty in chunk.rows.clone() {
            for (oy, [even, odd]) in halves.iter_mut().enumerate() {
                even.fill(0.0);
                odd.fill(0.0);
                if 2 * ty + oy < s.h {
                    let row = &plane[(2 * ty + oy) * s.w..][..s.w];
                    let pairs = row.chunks_exact(2);
                    if let [last] = pairs.remainder() {
                        even[s.w / 2] = *last;
                    }
                    for ((pair, e), d) in pairs.zip(even.iter_mut()).zip(odd.iter_mut()) {
                        *e = pair[0];
                        *d = pair[1];
                    }
                }
            }
            let [[e0, o0], [e1, o1]] = &halves;
            let (e0, o0, e1, o1) = (&e0[..n], &o0[..n], &e1[..n], &o1[..n]);
            let first = chunk.first(s, b, ty);
            for i in 0..4 {
                let (re, ro) = (&mut re[..n], &mut ro[..n]);
                for t in 0..n {
                    (re[t], ro[t]) = match i {
                        0 => (e0[t], o0[t]),
                        1 => (e0[t] + e1[t], o0[t] + o1[t]),
                        2 => (e0[t] - e1[t], o0[t] - o1[t]),
                        _ => (-e1[t], -o1[t]),
                    };
                }
                // SAFETY: rows `(i 4 + j, o)` of `dM`, tiles `first..first + n`: inside
                // `dM` and disjoint, and channel `o` is this task's alone.
                let [d0, d1, d2, d3] = std::array::from_fn(|j| unsafe {
                    let at = ((i * 4 + j) * s.out + o) * tiles + first;
                    let at = out.get().add(at).cast::<MaybeUninit<f32>>();
                    std::slice::from_raw_parts_mut(at, n)
                });
                for t in 0..n {
                    d0[t].write(re[t]);
                    d1[t].write(re[t] + ro[t]);
                    d2[t].write(re[t] - ro[t]);
                    d3[t].write(-ro[t]);
                }
            }
        }
    }
}

/// `V = B^T d B` of every tile of `chunk`, laid out `[16, C, tiles]` (tiles in
/// image, tile-row, tile-column order), with
/// `B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
fn transform_inputs(x: &[f32], s: Sizes, chunk: &Chunk, per_thread: bool) -> Vec<f32> {
    // SAFETY: `input_channel` writes channel `ch`'s 16 rows of the chunk's tiles: each
    // image, tile row and part `(i, j)` one run of `tx_n`, and the runs tile the row.
    unsafe {
        by_channel(
            s.c,
            chunk.tiles(s),
            per_thread,
            #[inline(always)]
            |ch, out| input_channel(x, s, chunk, ch, out),
        )
    }
}

/// [`transform_inputs`] of input channel `ch`: its 16 rows of `V` (`[16, C, tiles]`
/// for the tiles of `chunk`, at `out`). Each input row's `d B` (its four parts) is
/// computed once and serves the two tile rows that read it; every loop runs over a row
/// of tiles on slices of one length, so that it vectorises.
///
/// # Safety
/// `out` must have room for all of `V`, and no other thread may write channel `ch`'s
/// rows meanwhile.
#[inline(always)]
unsafe fn input_channel(x: &[f32], s: Sizes, chunk: &Chunk, ch: usize, out: Shared) {
    let n = s.tiles_x();
    let tiles = chunk.tiles(s);
    // One input row padded by a zero on the left (and right, to even length), split
    // into its even and odd columns: tile t reads padded columns 2t..2t+4.
    let mut even = vec![0f32; n + 1];
    let mut odd = vec![0f32; n + 1];
    // `d B` of the four input rows of a tile row, `[row][part]`, each `n` long: rows 2
    // and 3 of one tile row are rows 0 and 1 of the next.
    let mut r4: [[Vec<f32>; 4]; 4] =
        std::array::from_fn(|_| std::array::from_fn(|_| vec![0f32; n]));
    for (b, img) in chunk.imgs.clone().enumerate() {
        let plane = &x[(ch * s.n + img) * s.h * s.w..][..s.h * s.w];
        for ty in chunk.rows.clone() {
            let fresh = if ty == chunk.rows.start {
                0
            } else {
                r4.swap(0, 2);
                r4.swap(1, 3);
                2
            };
            for (i, parts) in r4.iter_mut().enumerate().skip(fresh) {
                let iy = (2 * ty + i).checked_sub(1).filter(|&iy| iy < s.h);
                split_row(iy.map(|iy| &plane[iy * s.w..][..s.w]), &mut even, &mut odd);
                row_transform(&even, &odd, parts, n);
            }
            let first = chunk.first(s, b, ty);
            // `j` picks a part of each row and places the rows it writes.
            #[allow(clippy::needless_range_loop)]
            for j in 0..4 {
                let [r0, r1, r2, r3] = std::array::from_fn(|i| &r4[i][j][..n]);
                // SAFETY: rows `(i 4 + j, ch)` of `V`, tiles `first..first + n`: inside
                // `V` and disjoint, and channel `ch` is this task's alone.
                let [d0, d1, d2, d3] = std::array::from_fn(|i| unsafe {
                    let at = ((i * 4 + j) * s.c + ch) * tiles + first;
                    let at = out.get().add(at).cast::<MaybeUninit<f32>>();
                    std::slice::from_raw_parts_mut(at, n)
                });
                for t in 0..n {
                    d0[t].write(r0[t] - r2[t]);
                    d1[t].write(r1[t] + r2[t]);
                    d2[t].write(r2[t] - r1[t]);
                    d3[t].write(r1[t] - r3[t]);
                }
            }
        }
    }
}

/// `d B` of one padded input row given as its even and odd columns (`n + 1` each): the
/// four parts of every tile `t`, whose columns are `(e[t], o[t], e[t + 1], o[t + 1])`.
#[inline(always)]
fn row_transform(even: &[f32], odd: &[f32], parts: &mut [Vec<f32>; 4], n: usize) {
    let (e0, e1) = (&even[..n], &even[1..n + 1]);
    let (o0, o1) = (&odd[..n], &odd[1..n + 1]);
    let [p0, p1, p2, p3] = parts;
    let (p0, p1, p2, p3) = (&mut p0[..n], &mut p1[..n], &mut p2[..n], &mut p3[..n]);
    for t in 0..n {
        p0[t] = e0[t] - e1[t];
        p1[t] = o0[t] + e1[t];
        p2[t] = e1[t] - o0[t];
        p3[t] = o0[t] - o1[t];
    }
}

/// Input row `row` (zeros when `None`: padding) with one zero before it, as its even
/// and odd columns (`even[t]` is padded column `2t`, `odd[t]` column `2t + 1`).
#[inline(always)]
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

/// `y = A^T M A + bias` for every tile of `chunk`, written into `y`
/// (`[O, N, H, W]`), with `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`. A tile past an odd
/// map's edge writes only its pixels inside the map.
///
/// # Safety
/// `y` must have room for `O N H W` values, and no other thread may write the chunk's
/// pixels meanwhile.
unsafe fn transform_outputs(
    m: &[f32],
    bias: &[f32],
    s: Sizes,
    chunk: &Chunk,
    per_thread: bool,
    y: Shared,
) {
    (0..s.out)
        .into_par_iter()
        .with_min_len(min_len(per_thread))
        // SAFETY: each task writes output channel `o`'s rows of the chunk alone
        // (the caller vouches for other threads).
        .for_each(|o| {
            vectorized(
                #[inline(always)]
                || unsafe { output_channel(m, bias, s, chunk, o, y) },
            )
        });
}

/// [`transform_outputs`] of output channel `o`.
///
/// # Safety
/// As [`transform_outputs`], and no other thread may write channel `o`'s pixels of the
/// chunk meanwhile.
#[inline(always)]
unsafe fn output_channel(m: &[f32], bias: &[f32], s: Sizes, chunk: &Chunk, o: usize, y: Shared) {
    let n = s.tiles_x();
    let tiles = chunk.tiles(s);
    // The column transform `M A` of a tile row: [tile row i][output column][t].
    let mut half: [[Vec<f32>; 2]; 4] =
        std::array::from_fn(|_| std::array::from_fn(|_| vec![0f32; n]));
    // One output row's even and odd columns, then the row itself.
    let mut cols: [Vec<f32>; 2] = std::array::from_fn(|_| vec![0f32; n]);
    let mut line = vec![0f32; 2 * n];
    let bo = bias[o];
    // The chunk's output rows of each of its images' planes.
    let top = 2 * chunk.rows.start;
    let bottom = (2 * chunk.rows.end).min(s.h);
    for (b, img) in chunk.imgs.clone().enumerate() {
        // SAFETY: rows `top..bottom` of output channel `o`'s plane of image `img`:
        // inside `y`, and written by this task alone (the caller vouches for other
        // threads; another band of the image has other rows).
        let band = unsafe {
            let at = y.get().add(((o * s.n + img) * s.h + top) * s.w);
            std::slice::from_raw_parts_mut(at.cast::<MaybeUninit<f32>>(), (bottom - top) * s.w)
        };
        for ty in chunk.rows.clone() {
            let first = chunk.first(s, b, ty);
            for (i, [h0, h1]) in half.iter_mut().enumerate() {
                let [m0, m1, m2, m3] =
                    std::array::from_fn(|j| &m[((i * 4 + j) * s.out + o) * tiles + first..][..n]);
                let (h0, h1) = (&mut h0[..n], &mut h1[..n]);
                for t in 0..n {
                    h0[t] = m0[t] + m1[t] + m2[t];
                    h1[t] = m1[t] - m2[t] - m3[t];
                }
            }
            for oy in 0..2.min(s.h - 2 * ty) {
                for (ox, col) in cols.iter_mut().enumerate() {
                    let [h0, h1, h2, h3] = std::array::from_fn(|i| &half[i][ox][..n]);
                    let col = &mut col[..n];
                    if oy == 0 {
                        for t in 0..n {
                            col[t] = bo + h0[t] + h1[t] + h2[t];
                        }
                    } else {
                        for t in 0..n {
                            col[t] = bo + h1[t] - h2[t] - h3[t];
                        }
                    }
                }
                for ((pair, &c0), &c1) in line.chunks_exact_mut(2).zip(&cols[0]).zip(&cols[1]) {
                    pair[0] = c0;
                    pair[1] = c1;
                }
                band[(2 * ty + oy - top) * s.w..][..s.w].write_copy_of_slice(&line[..s.w]);
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
            // Two images a chunk, one per thread.
            let (chunks, per_thread) = sizes(16, 16, 8, 32).chunks();
            assert!(per_thread);
            assert_eq!(chunks.len(), 4);
            assert_eq!(
                chunks[1],
                Chunk {
                    imgs: 2..4,
                    rows: 0..16
                }
            );
            assert!(!sizes(16, 16, 8, 5).chunks().1);
            // One image's data overflows a chunk: bands of 8 of its 16 tile rows.
            let (chunks, per_thread) = sizes(64, 64, 4, 32).chunks();
            assert!(per_thread);
            assert_eq!(chunks.len(), 8);
            assert_eq!(
                chunks[1],
                Chunk {
                    imgs: 0..1,
                    rows: 8..16
                }
            );
            assert_eq!(chunks[1].first(sizes(64, 64, 4, 32), 0, 9), 16);
        });
    }
}
