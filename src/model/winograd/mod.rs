//! The forward pass of a 3x3 convolution (stride 1, one zero of padding) by Winograd's
//! minimal filtering F(2x2, 3x3) or F(4x4, 3x3) ([`tiling`]; Lavin and Gray, CVPR 2016):
//! each `M x M` output tile is `A^T [(G g G^T) . (B^T d B)] A` for its input tile `d`,
//! so the channel sums become `A^2` matrix products `M_e = U_e V_e` (`U_e`: `[O, C]`
//! transformed weights, `V_e`: `[C, tiles]` transformed inputs), 4 multiplies per output
//! pixel and channel pair with F(2x2) and 2.25 with F(4x4) instead of 9. [`Sizes::new`]
//! picks the tiling with the fewer products, counting the weights' transform. On
//! channel-major activations (`[C, N, H, W]`), the batch's tiles go through in chunks of
//! images, one chunk per thread when there are chunks enough. The input and output
//! transforms run along a whole row of tiles at a time (contiguous, so they vectorise).
//! `cnhw`'s tests check the output against burn's `conv2d`, and this module's against
//! the definition with either tiling. The input gradient is the same kind of convolution
//! (of the output's gradient, by the turned weights), so it runs here too; the weight
//! gradient is in [`weight_grad`].

mod tiling;
mod weight_grad;

pub use weight_grad::weight_grad;

use super::conv_gemm::{Shared, View, gemm_raw, image_runs, min_len};
use super::simd::vectorized;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;
use tiling::{F2, F4, MAX_A, Tiling};

/// Which tiling a convolution runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F2,
    F4,
}

impl Tile {
    /// Output pixels per tile side (`M`).
    fn m(self) -> usize {
        match self {
            Tile::F2 => F2::M,
            Tile::F4 => F4::M,
        }
    }

    /// Products per tile (`A^2`): the transformed values of a tile and of a weight pair.
    fn elems(self) -> usize {
        let a = match self {
            Tile::F2 => F2::A,
            Tile::F4 => F4::A,
        };
        a * a
    }
}

/// The tiling `RANKPRUNE_WINOGRAD=f2|f4` forces on every Winograd convolution (for
/// comparisons), read once.
fn forced_tile() -> Option<Tile> {
    static FORCED: std::sync::OnceLock<Option<Tile>> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| match std::env::var("RANKPRUNE_WINOGRAD").as_deref() {
        Ok("f2") => Some(Tile::F2),
        Ok("f4") => Some(Tile::F4),
        _ => None,
    })
}

/// Sizes of one 3x3, padding-1 convolution: `c` input channels, `n` images of `h x w`,
/// `out` output channels (the output is `h x w` too), and the tiling it runs with.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub c: usize,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub out: usize,
    pub tile: Tile,
}

impl Sizes {
    /// The sizes with the tiling of the least work: `A^2 O C` multiplies per tile, plus
    /// the weights' transform, which writes `A^2 O C` values on every call and costs
    /// about as much as [`WEIGHT_TILES`] tiles' products. F(4x4) only on maps of
    /// [`MIN_F4_SIDE`] or more: on smaller ones its transforms, one or two tiles a row,
    /// cost more than its products save (vgg19_bn's 4x4 maps at batch 128: 31 ms against
    /// 28 ms with F(2x2), 512 channels).
    pub fn new(c: usize, n: usize, h: usize, w: usize, out: usize) -> Sizes {
        let with = |tile| Sizes {
            c,
            n,
            h,
            w,
            out,
            tile,
        };
        let work = |s: Sizes| s.tile.elems() * (s.n * s.image_tiles() + WEIGHT_TILES);
        let (f2, f4) = (with(Tile::F2), with(Tile::F4));
        if let Some(forced) = forced_tile() {
            return with(forced);
        }
        let small = h.min(w) < MIN_F4_SIDE;
        if small || work(f2) <= work(f4) {
            f2
        } else {
            f4
        }
    }

    /// The same convolution with tiling `tile`.
    pub fn with_tile(self, tile: Tile) -> Sizes {
        Sizes { tile, ..self }
    }

    /// Whether Winograd pays here: enough channels on both sides that the products, not
    /// the transforms, take the time, and tiles enough to repay transforming the weights
    /// (written on every call). Judged for F(2x2, 3x3), the tiling of small maps.
    pub fn worth_it(&self) -> bool {
        let f2 = self.with_tile(Tile::F2);
        self.c >= MIN_CHANNELS && self.out >= MIN_CHANNELS && self.n * f2.image_tiles() >= MIN_TILES
    }

    fn tiles_y(&self) -> usize {
        self.h.div_ceil(self.tile.m())
    }

    fn tiles_x(&self) -> usize {
        self.w.div_ceil(self.tile.m())
    }

    fn image_tiles(&self) -> usize {
        self.tiles_y() * self.tiles_x()
    }

    /// The batch's chunks, and whether they run one per thread (each single-threaded)
    /// or one after the other (each with its products shared among the threads).
    /// A chunk is a run of images, or a band of one image's tile rows where one image's
    /// transformed data alone would overflow a core's cache.
    fn chunks(&self) -> (Vec<Chunk>, bool) {
        let e = self.tile.elems();
        let ty_n = self.tiles_y();
        let per_row = e * (self.c + self.out) * self.tiles_x();
        let per_image = per_row * ty_n;
        let weights = e * self.out * self.c;
        let threads = rayon::current_num_threads();
        // Runs of about `per` images, as even as can be.
        let images = |per: usize| -> Vec<Chunk> {
            image_runs(self.n, self.n.div_ceil(self.n.div_ceil(per)))
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

/// Fewer F(2x2) output tiles than this over the batch (one image of a small map): the
/// weight transform costs more than the multiplies saved.
const MIN_TILES: usize = 64;

/// The weights' transform costs about as much as this many tiles' products: it writes
/// `A^2` values per weight pair, and a tile's products make `A^2` multiplies per pair.
const WEIGHT_TILES: usize = 32;

/// The least map side that F(4x4, 3x3) runs on.
const MIN_F4_SIDE: usize = 8;

/// About 1 MiB of transformed inputs and products per chunk, when chunks run one per
/// thread (within a core's L2 beside the transformed weights).
const CHUNK_FLOATS: usize = 1 << 18;

/// About 16 MiB per chunk when chunks run one after the other.
const BIG_CHUNK_FLOATS: usize = 1 << 22;

/// `U = G g G^T` for every `(o, c)`, laid out `[A^2, O, C]`: blocks of weight pairs,
/// each turned tap-major first so that every step is a loop over the block's pairs.
fn transform_weights<T: Tiling>(weight: &[f32], s: Sizes) -> Vec<f32> {
    let oc = s.out * s.c;
    let mut u = Vec::<f32>::with_capacity(T::A * T::A * oc);
    let dst = Shared(u.as_mut_ptr());
    weight
        .par_chunks(9 * PAIRS)
        .enumerate()
        .for_each(|(block, pairs)| {
            vectorized(
                #[inline(always)]
                // SAFETY: the block writes values `block PAIRS ..` of each of `U`'s rows.
                || unsafe { weight_block::<T>(pairs, block * PAIRS, oc, dst) },
            )
        });
    // SAFETY: the blocks' pairs tile `0..oc`, and each wrote all `A^2` of its values.
    unsafe { u.set_len(T::A * T::A * oc) };
    u
}

/// Weight pairs per block of [`transform_weights`].
const PAIRS: usize = 128;

/// [`transform_weights`] of the weight pairs `pairs` (9 taps each), the first of them
/// pair `k0`.
///
/// # Safety
/// `u` must have room for `[A^2, O, C]`, and no other thread may write values
/// `k0 .. k0 + pairs` of its rows meanwhile.
#[inline(always)]
unsafe fn weight_block<T: Tiling>(pairs: &[f32], k0: usize, oc: usize, u: Shared) {
    let (a, len) = (T::A, pairs.len() / 9);
    let mut taps = [[0f32; PAIRS]; 9];
    for (p, g) in pairs.chunks_exact(9).enumerate() {
        for (tap, &v) in taps.iter_mut().zip(g) {
            tap[p] = v;
        }
    }
    // `G g` of each kernel column `j`: `cols[j][i]`.
    let mut cols = [[[0f32; PAIRS]; MAX_A]; 3];
    for (j, col) in cols.iter_mut().enumerate() {
        let [g0, g1, g2] = [&taps[j][..len], &taps[3 + j][..len], &taps[6 + j][..len]];
        for p in 0..len {
            let v = T::weight([g0[p], g1[p], g2[p]]);
            for (c, &v) in col.iter_mut().zip(&v).take(a) {
                c[p] = v;
            }
        }
    }
    // Row `i` of `(G g) G^T`: `G` of row `i` of the columns (`i` indexes all three).
    #[allow(clippy::needless_range_loop)]
    for i in 0..a {
        let mut out: [&mut [MaybeUninit<f32>]; MAX_A] = Default::default();
        for (j, o) in out.iter_mut().enumerate().take(a) {
            // SAFETY: values `k0 .. k0 + len` of row `i A + j`: inside `u`, and this
            // block's alone (the caller vouches).
            *o = unsafe {
                let at = u
                    .get()
                    .add((i * a + j) * oc + k0)
                    .cast::<MaybeUninit<f32>>();
                std::slice::from_raw_parts_mut(at, len)
            };
        }
        let [c0, c1, c2] = [&cols[0][i][..len], &cols[1][i][..len], &cols[2][i][..len]];
        for p in 0..len {
            let v = T::weight([c0[p], c1[p], c2[p]]);
            for (o, &v) in out.iter_mut().zip(&v).take(a) {
                o[p].write(v);
            }
        }
    }
}

/// `y = conv3x3(x, weight) + bias`, `x` channel-major `[C, N, H, W]`, `weight`
/// `[O, C, 3, 3]`, `bias` `[O]`; `y` channel-major `[O, N, H, W]`.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], s: Sizes) -> Vec<f32> {
    match s.tile {
        Tile::F2 => forward_with::<F2>(x, weight, bias, s),
        Tile::F4 => forward_with::<F4>(x, weight, bias, s),
    }
}

fn forward_with<T: Tiling>(x: &[f32], weight: &[f32], bias: &[f32], s: Sizes) -> Vec<f32> {
    forward_u::<T>(x, &transform_weights::<T>(weight, s), bias, s)
}

/// The weights `[O, C, 3, 3]` transformed for `s.tile`: [`forward_transformed`]'s `u`,
/// which the inference engine keeps rather than transforming on every call.
pub fn transform(weight: &[f32], s: Sizes) -> Vec<f32> {
    match s.tile {
        Tile::F2 => transform_weights::<F2>(weight, s),
        Tile::F4 => transform_weights::<F4>(weight, s),
    }
}

/// [`forward`] with the weights transformed already (by [`transform`], for `s.tile`).
pub fn forward_transformed(x: &[f32], u: &[f32], bias: &[f32], s: Sizes) -> Vec<f32> {
    assert_eq!(
        u.len(),
        s.tile.elems() * s.out * s.c,
        "weights transformed for s.tile"
    );
    match s.tile {
        Tile::F2 => forward_u::<F2>(x, u, bias, s),
        Tile::F4 => forward_u::<F4>(x, u, bias, s),
    }
}

fn forward_u<T: Tiling>(x: &[f32], u: &[f32], bias: &[f32], s: Sizes) -> Vec<f32> {
    let total = s.out * s.n * s.h * s.w;
    let mut y = Vec::<f32>::with_capacity(total);
    let dst = Shared(y.as_mut_ptr());
    let (chunks, per_thread) = s.chunks();
    let run = |chunk: Chunk| {
        let v = transform_inputs::<T>(x, s, &chunk, per_thread);
        let m = products(u, &v, s, chunk.tiles(s), per_thread);
        // SAFETY: `y` has room for `total` values; each chunk writes the output pixels of
        // its own tile rows of its own images only, every one of them (see
        // `transform_outputs`).
        unsafe { transform_outputs::<T>(&m, bias, s, &chunk, per_thread, dst) };
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
/// kernel and padding `3 - 1 - 1 = 1`), and no bias. `s` describes the forward
/// convolution; its adjoint runs with `s.tile`.
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

/// A `[elems, channels, tiles]` buffer whose rows of channel `ch` the call
/// `fill(ch, out)` writes (`out`: the buffer), in parallel over the channels (on this
/// thread alone when `per_thread`), each call compiled for the widest instruction set
/// the CPU has (see `simd`; `fill` should be `#[inline(always)]`).
///
/// # Safety
/// `fill(ch, out)` must write every value of channel `ch`'s `elems` rows and nothing
/// else.
unsafe fn by_channel(
    elems: usize,
    channels: usize,
    tiles: usize,
    per_thread: bool,
    fill: impl Fn(usize, Shared) + Sync,
) -> Vec<f32> {
    let mut buffer = Vec::<f32>::with_capacity(elems * channels * tiles);
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
    unsafe { buffer.set_len(elems * channels * tiles) };
    buffer
}

/// `V = B^T d B` of every tile of `chunk`, laid out `[A^2, C, tiles]` (tiles in image,
/// tile-row, tile-column order).
fn transform_inputs<T: Tiling>(x: &[f32], s: Sizes, chunk: &Chunk, per_thread: bool) -> Vec<f32> {
    // SAFETY: `input_channel` writes channel `ch`'s `A^2` rows of the chunk's tiles:
    // each image, tile row and part `(i, j)` one run of `tiles_x`, and the runs tile
    // the row.
    unsafe {
        by_channel(
            T::A * T::A,
            s.c,
            chunk.tiles(s),
            per_thread,
            #[inline(always)]
            |ch, out| input_channel::<T>(x, s, chunk, ch, out),
        )
    }
}

/// [`transform_inputs`] of input channel `ch`: its `A^2` rows of `V` (`[A^2, C, tiles]`
/// for the tiles of `chunk`, at `out`). Each input row's `d B` (its `A` parts) is
/// computed once and serves the tile rows that read it; every loop runs over a row of
/// tiles on slices of one length, so that it vectorises.
///
/// # Safety
/// `out` must have room for all of `V`, and no other thread may write channel `ch`'s
/// rows meanwhile.
#[inline(always)]
unsafe fn input_channel<T: Tiling>(x: &[f32], s: Sizes, chunk: &Chunk, ch: usize, out: Shared) {
    let (m, a) = (T::M, T::A);
    let n = s.tiles_x();
    let tiles = chunk.tiles(s);
    // One input row padded by a zero on the left (and zeros on the right), as its `M`
    // phases: `phase k [t]` is padded column `M t + k`; tile t reads `M t .. M t + A`.
    let mut phases = vec![0f32; m * (n + 1)];
    // `d B` of the `A` input rows of a tile row, row `i` part `j` at `(i A + j) n`: the
    // last two rows of one tile row are the first two of the next.
    let mut rows = vec![0f32; a * a * n];
    for (b, img) in chunk.imgs.clone().enumerate() {
        let plane = &x[(ch * s.n + img) * s.h * s.w..][..s.h * s.w];
        for ty in chunk.rows.clone() {
            let fresh = if ty == chunk.rows.start {
                0
            } else {
                rows.copy_within(m * a * n.., 0);
                a - m
            };
            for i in fresh..a {
                let iy = (m * ty + i).checked_sub(1).filter(|&iy| iy < s.h);
                split_row::<T>(iy.map(|iy| &plane[iy * s.w..][..s.w]), &mut phases, n);
                row_transform::<T>(&phases, &mut rows[i * a * n..][..a * n], n);
            }
            let first = chunk.first(s, b, ty);
            for j in 0..a {
                let src = slices(&rows, a, n, |i| (i * a + j) * n);
                // SAFETY: rows `(i A + j, ch)` of `V`, tiles `first..first + n`: inside
                // `V` and disjoint, and channel `ch` is this task's alone.
                let mut dst =
                    unsafe { raw_slices(out, a, n, |i| ((i * a + j) * s.c + ch) * tiles + first) };
                for t in 0..n {
                    let d = column(&src, a, t);
                    let v = T::input(&d);
                    for (i, row) in dst.iter_mut().enumerate().take(a) {
                        row[t].write(v[i]);
                    }
                }
            }
        }
    }
}

/// `d B` of one padded input row given as its `M` phases (`n + 1` each): the `A` parts
/// of every tile `t`, whose columns are `M t .. M t + A`, into `parts` (part `j` at
/// `j n`).
#[inline(always)]
fn row_transform<T: Tiling>(phases: &[f32], parts: &mut [f32], n: usize) {
    let (m, a) = (T::M, T::A);
    // Column `M t + k` is phase `k % M` at `t + k / M`.
    let src = slices(phases, a, n, |k| (k % m) * (n + 1) + k / m);
    let mut dst = runs::<MAX_A>(parts, n, a);
    for t in 0..n {
        let d = column(&src, a, t);
        let v = T::input(&d);
        for (j, part) in dst.iter_mut().enumerate().take(a) {
            part[t] = v[j];
        }
    }
}

/// Input row `row` (zeros when `None`: padding) with one zero before it and zeros after
/// it, as its `M` phases of `n + 1` values: padded column `p` (input column `p - 1`) is
/// phase `p % M` at `p / M`.
#[inline(always)]
fn split_row<T: Tiling>(row: Option<&[f32]>, phases: &mut [f32], n: usize) {
    phases.fill(0.0);
    let Some(row) = row else { return };
    for (x, &v) in row.iter().enumerate() {
        let p = x + 1;
        phases[(p % T::M) * (n + 1) + p / T::M] = v;
    }
}

/// `M_e = U_e V_e` for the `A^2` values `e`, laid out `[A^2, O, tiles]`.
fn products(u: &[f32], v: &[f32], s: Sizes, tiles: usize, per_thread: bool) -> Vec<f32> {
    let elems = s.tile.elems();
    let mut m = Vec::<f32>::with_capacity(elems * s.out * tiles);
    let dst = Shared(m.as_mut_ptr());
    (0..elems)
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
    // SAFETY: the products wrote all `A^2 O tiles` values.
    unsafe { m.set_len(elems * s.out * tiles) };
    m
}

/// `y = A^T M A + bias` for every tile of `chunk`, written into `y` (`[O, N, H, W]`).
/// A tile past the map's edge writes only its pixels inside the map.
///
/// # Safety
/// `y` must have room for `O N H W` values, and no other thread may write the chunk's
/// pixels meanwhile.
unsafe fn transform_outputs<T: Tiling>(
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
                || unsafe { output_channel::<T>(m, bias, s, chunk, o, y) },
            )
        });
}

/// [`transform_outputs`] of output channel `o`.
///
/// # Safety
/// As [`transform_outputs`], and no other thread may write channel `o`'s pixels of the
/// chunk meanwhile.
#[inline(always)]
unsafe fn output_channel<T: Tiling>(
    m: &[f32],
    bias: &[f32],
    s: Sizes,
    chunk: &Chunk,
    o: usize,
    y: Shared,
) {
    let (mm, a) = (T::M, T::A);
    let n = s.tiles_x();
    let tiles = chunk.tiles(s);
    // The column transform `M A` of a tile row: tile row `i`, output column `ox` at
    // `(i M + ox) n`.
    let mut half = vec![0f32; a * mm * n];
    // The tile row's `M` output rows, `M n` long each.
    let mut lines = vec![0f32; mm * mm * n];
    let bo = bias[o];
    // The chunk's output rows of each of its images' planes.
    let top = mm * chunk.rows.start;
    let bottom = (mm * chunk.rows.end).min(s.h);
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
            for i in 0..a {
                let src = slices(m, a, n, |j| ((i * a + j) * s.out + o) * tiles + first);
                let mut dst = runs::<4>(&mut half[i * mm * n..], n, mm);
                for t in 0..n {
                    let col = column(&src, a, t);
                    let v = T::output(&col);
                    for (ox, d) in dst.iter_mut().enumerate().take(mm) {
                        d[t] = v[ox];
                    }
                }
            }
            for ox in 0..mm {
                let src = slices(&half, a, n, |i| (i * mm + ox) * n);
                let mut dst = runs::<4>(&mut lines, mm * n, mm);
                for t in 0..n {
                    let col = column(&src, a, t);
                    let v = T::output(&col);
                    for (oy, line) in dst.iter_mut().enumerate().take(mm) {
                        line[mm * t + ox] = bo + v[oy];
                    }
                }
            }
            for oy in 0..mm.min(s.h - mm * ty) {
                band[(mm * ty + oy - top) * s.w..][..s.w]
                    .write_copy_of_slice(&lines[oy * mm * n..][..s.w]);
            }
        }
    }
}

/// Value `t` of each of the first `a` slices of `src` (zeros after them).
#[inline(always)]
fn column(src: &[&[f32]; MAX_A], a: usize, t: usize) -> [f32; MAX_A] {
    let mut d = [0f32; MAX_A];
    for (v, s) in d.iter_mut().zip(src).take(a) {
        *v = s[t];
    }
    d
}

/// The first `count` runs of `n` values of `buf`, and empty slices after them.
#[inline(always)]
fn runs<const K: usize>(buf: &mut [f32], n: usize, count: usize) -> [&mut [f32]; K] {
    let mut out: [&mut [f32]; K] = std::array::from_fn(|_| Default::default());
    for (o, run) in out.iter_mut().zip(buf.chunks_exact_mut(n)).take(count) {
        *o = run;
    }
    out
}

/// `count` slices of `n` values of `buf`, slice `i` at `at(i)`; empty slices after them.
#[inline(always)]
fn slices(buf: &[f32], count: usize, n: usize, at: impl Fn(usize) -> usize) -> [&[f32]; MAX_A] {
    let mut out: [&[f32]; MAX_A] = Default::default();
    for (i, o) in out.iter_mut().enumerate().take(count) {
        *o = &buf[at(i)..][..n];
    }
    out
}

/// [`slices`] of the buffer at `buf`, to be written.
///
/// # Safety
/// Each slice must lie inside the buffer, and be written by the caller alone while it
/// lives.
#[inline(always)]
unsafe fn raw_slices<'a>(
    buf: Shared,
    count: usize,
    n: usize,
    at: impl Fn(usize) -> usize,
) -> [&'a mut [MaybeUninit<f32>]; MAX_A] {
    let mut out: [&mut [MaybeUninit<f32>]; MAX_A] = Default::default();
    for (i, o) in out.iter_mut().enumerate().take(count) {
        // SAFETY: inside the buffer and the caller's alone (the caller vouches).
        *o = unsafe { std::slice::from_raw_parts_mut(buf.get().add(at(i)).cast(), n) };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(c: usize, out: usize, n: usize, hw: usize) -> Sizes {
        Sizes::new(c, n, hw, hw, out)
    }

    /// `cnhw`'s Winograd cases do take this path; small channel counts and single small
    /// maps do not. Large maps take F(4x4), maps of 2x2 or less F(2x2).
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
        assert_eq!(sizes(64, 64, 1, 32).tile, Tile::F4);
        assert_eq!(sizes(256, 256, 128, 8).tile, Tile::F4);
        assert_eq!(sizes(512, 512, 128, 4).tile, Tile::F2, "a small map");
        assert_eq!(
            sizes(64, 64, 1, 16).tile,
            Tile::F2,
            "the weights' transform"
        );
        let two_threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        two_threads.install(|| {
            // Two images a chunk, one per thread.
            let s = sizes(16, 16, 8, 32).with_tile(Tile::F2);
            let (chunks, per_thread) = s.chunks();
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
            let s = sizes(64, 64, 4, 32).with_tile(Tile::F2);
            let (chunks, per_thread) = s.chunks();
            assert!(per_thread);
            assert_eq!(chunks.len(), 8);
            assert_eq!(
                chunks[1],
                Chunk {
                    imgs: 0..1,
                    rows: 8..16
                }
            );
            assert_eq!(chunks[1].first(s, 0, 9), 16);
        });
    }

    /// The definition: `y[o, b, i, j] = bias[o] + sum x[c, b, i + di - 1, j + dj - 1]
    /// w[o, c, di, dj]` over the taps inside the map, in f64.
    fn direct(x: &[f32], w: &[f32], bias: &[f32], s: Sizes) -> Vec<f32> {
        let mut y = vec![0f32; s.out * s.n * s.h * s.w];
        for o in 0..s.out {
            for b in 0..s.n {
                for i in 0..s.h {
                    for j in 0..s.w {
                        let mut acc = f64::from(bias[o]);
                        for c in 0..s.c {
                            for di in 0..3 {
                                for dj in 0..3 {
                                    let (yi, xj) = (i + di, j + dj);
                                    if yi < 1 || xj < 1 || yi > s.h || xj > s.w {
                                        continue;
                                    }
                                    let xv = x[((c * s.n + b) * s.h + yi - 1) * s.w + xj - 1];
                                    let wv = w[((o * s.c + c) * 3 + di) * 3 + dj];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y[((o * s.n + b) * s.h + i) * s.w + j] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn noise(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The forward pass with either tiling, forced, against the definition: maps whose
    /// last tiles hang over the edge by 1 to 3 pixels, a map smaller than one F(4x4)
    /// tile, chunks one after the other and one per thread, and bands of tile rows.
    #[test]
    fn forward_with_either_tiling_matches_the_definition() {
        let two_threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let cases = [
            (16, 16, 3, 5),
            (16, 17, 2, 6),
            (17, 16, 2, 7),
            (16, 16, 64, 2),
            (16, 16, 8, 9),
            (16, 16, 16, 16),
            (64, 64, 2, 63),
        ];
        two_threads.install(|| {
            for (c, out, n, hw) in cases {
                let s = sizes(c, out, n, hw);
                let x = noise(c * n * hw * hw, 1);
                let w = noise(out * c * 9, 2);
                let bias = noise(out, 3);
                let want = direct(&x, &w, &bias, s);
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                for tile in [Tile::F2, Tile::F4] {
                    let got = forward(&x, &w, &bias, s.with_tile(tile));
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst <= 1e-5 * scale,
                        "{tile:?} {s:?}: off by {worst} (max {scale})"
                    );
                }
            }
        });
    }
}
