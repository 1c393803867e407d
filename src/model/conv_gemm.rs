//! A k x k convolution (stride 1, zero padding) of the flex CPU backend as one matrix
//! product over the whole batch, on channel-major activations (`[C, N, H, W]`; a 1x1
//! conv's columns are the input itself, so it is one product with no copy):
//! `cols = im2col(x)` is `[C k k, N OH OW]` and `y = W cols + b` with `W` the weight as
//! `[O, C k k]`. Backward recomputes `cols` (cheaper than keeping it) and takes two more
//! products, `dW = dy cols^T` and `dcols = W^T dy`, then `dx = col2im(dcols)`. The batch
//! goes through in blocks of images whose columns fit in cache. burn's
//! flex conv2d instead repacks and multiplies per image (per 512-pixel tile), and
//! differentiates through a per-image transposed convolution. Products run on the
//! `gemm` crate (burn-flex's own). Where there are blocks enough, they run in parallel,
//! one per thread, each block's im2col and products on that thread (in its core's
//! cache); otherwise one after the other, with im2col and col2im parallel over rows
//! and channels and the products over blocks of their result. `tests` checks the output and
//! the three gradients against burn's `conv2d`. A 3x3 conv with padding 1 takes
//! [`winograd`] for its forward pass and its input gradient where that pays, and a conv
//! with few output pixels and large weights takes [`skinny`] for its forward pass.

use super::flex::{Flat, tensor, values};
use super::profile::{Op, timed};
use super::skinny;
use super::winograd;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;

#[backend_extension(Flex, Autodiff)]
pub trait ConvBackend: Backend {
    /// `conv2d(x, weight, bias)` with stride 1 and `padding` zeros on every side: `x`
    /// channel-major `[C, N, H, W]`, `weight` `[O, C, k, k]`, `bias` `[O]`; the output is
    /// channel-major `[O, N, H + 2 padding - k + 1, W + ...]`.
    fn conv_cnhw(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: usize,
    ) -> FloatTensor<Self>;
}

/// Sizes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    c: usize,
    n: usize,
    h: usize,
    w: usize,
    out: usize,
    k: usize,
    p: usize,
}

impl Geometry {
    fn of(x: &Flat, weight: &Flat, padding: usize) -> Self {
        let [c, n, h, w] = x.layout().shape().dims::<4>();
        let [out, wc, k, kw] = weight.layout().shape().dims::<4>();
        assert_eq!(
            (wc, k),
            (c, kw),
            "weight [O, C, k, k] for input [C, N, H, W]"
        );
        Self {
            c,
            n,
            h,
            w,
            out,
            k,
            p: padding,
        }
    }

    fn oh(&self) -> usize {
        self.h + 2 * self.p + 1 - self.k
    }

    fn ow(&self) -> usize {
        self.w + 2 * self.p + 1 - self.k
    }

    /// Output pixels over the batch: the products' long dimension.
    fn pixels(&self) -> usize {
        self.n * self.oh() * self.ow()
    }

    /// The columns of row `(ch, i, j)` that read input column `ox + j - p`: `ox` from
    /// `lo` to `hi`.
    fn valid_x(&self, j: usize) -> (usize, usize) {
        let lo = self.p.saturating_sub(j);
        let hi = (self.w + self.p).saturating_sub(j).min(self.ow());
        (lo, hi.max(lo))
    }

    /// The conv's sizes for [`winograd`], where it applies (3x3, padding 1) and pays.
    fn winograd(&self) -> Option<winograd::Sizes> {
        let s = winograd::Sizes::new(self.c, self.n, self.h, self.w, self.out);
        (self.k == 3 && self.p == 1 && s.worth_it()).then_some(s)
    }

    /// A 1x1 conv without padding, whose im2col is the input itself.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.p == 0
    }

    /// The profile's ops for this conv's forward, input and weight gradient.
    fn ops(&self) -> [Op; 3] {
        if self.pointwise() {
            [
                Op::PointwiseForward,
                Op::PointwiseInputGrad,
                Op::PointwiseWeightGrad,
            ]
        } else {
            [Op::ConvForward, Op::ConvInputGrad, Op::ConvWeightGrad]
        }
    }

    /// Output pixels of one image.
    fn image_pixels(&self) -> usize {
        self.oh() * self.ow()
    }

    /// Images per block: the products run over blocks of images whose im2col columns
    /// take about [`BLOCK_FLOATS`], so that they stay in cache and no buffer grows with
    /// the batch; [`THREAD_BLOCK_FLOATS`] when the blocks run one per thread.
    fn block(&self) -> usize {
        if self.pointwise() {
            return self.n;
        }
        match self.blocks_per_thread() {
            true => self.images_per(THREAD_BLOCK_FLOATS),
            false => self.images_per(BLOCK_FLOATS),
        }
    }

    /// Images whose im2col columns take about `floats` (at least one).
    fn images_per(&self, floats: usize) -> usize {
        let per_image = (self.c * self.k * self.k * self.image_pixels()).max(1);
        (floats / per_image).clamp(1, self.n)
    }

    /// Whether the blocks run in parallel, each on one thread (its im2col and product
    /// stay in that core's cache), rather than one after the other with every thread on
    /// each block: whenever there are blocks enough to share. Measured against the
    /// serial blocks on this project's 2-core machine (`cargo bench --bench train`):
    /// inference 1.2-1.5x faster for vgg19_bn and the Tucker models.
    fn blocks_per_thread(&self) -> bool {
        let blocks = self.n.div_ceil(self.images_per(THREAD_BLOCK_FLOATS));
        !self.pointwise() && blocks >= 2 * rayon::current_num_threads()
    }
}

/// About 4 MiB of f32 im2col columns per block.
const BLOCK_FLOATS: usize = 1 << 20;

/// About 256 KiB of f32 im2col columns per block when blocks run one per thread.
const THREAD_BLOCK_FLOATS: usize = 1 << 16;

/// [`timed`] when `on`, else just `f()` (inside blocks that run one per thread, whose
/// op is timed around them all).
fn timed_if<T>(on: bool, op: Op, f: impl FnOnce() -> T) -> T {
    if on { timed(op, f) } else { f() }
}

/// Images `imgs` as `[C k k, imgs.len() OH OW]` (borrowed when the conv is pointwise:
/// then they are the whole batch, see [`Geometry::block`]).
fn columns(x: &[f32], g: Geometry, imgs: Range<usize>) -> Cow<'_, [f32]> {
    if g.pointwise() {
        debug_assert_eq!(imgs.len(), g.n, "a pointwise conv runs as one block");
        return Cow::Borrowed(x);
    }
    // Blocks one per thread: their wall time is their op's, not the threads' sum.
    Cow::Owned(timed_if(!g.blocks_per_thread(), Op::Im2col, || {
        im2col(x, g, imgs)
    }))
}

/// Values of `cols` a thread's task of [`im2col`] writes at least: a task per short row
/// (64 values at batch 1 on 8x8 maps) cost more than its copy.
const IM2COL_TASK_VALUES: usize = 1 << 13;

/// Images `imgs` as `[C k k, imgs.len() OH OW]`: row `(ch, i, j)` holds input channel
/// `ch` shifted by `(i - p, j - p)`, zero where that falls in the padding. Every value
/// is written once (no zero-fill first), and the rows' short runs are copied by plain
/// loops rather than `memcpy` calls.
fn im2col(x: &[f32], g: Geometry, imgs: Range<usize>) -> Vec<f32> {
    let (oh, ow, kk) = (g.oh(), g.ow(), g.k * g.k);
    let len = imgs.len() * g.image_pixels();
    let total = g.c * kk * len;
    let mut cols = Vec::<f32>::with_capacity(total);
    let spare = &mut cols.spare_capacity_mut()[..total];
    spare
        .par_chunks_mut(len)
        .with_min_len(min_len(g.blocks_per_thread()).max(IM2COL_TASK_VALUES.div_ceil(len)))
        .enumerate()
        .for_each(|(r, row)| {
            let (ch, i, j) = (r / kk, r % kk / g.k, r % g.k);
            let (lo, hi) = g.valid_x(j);
            for (b, img) in imgs.clone().enumerate() {
                let plane = &x[(ch * g.n + img) * g.h * g.w..][..g.h * g.w];
                for oy in 0..oh {
                    let dst = &mut row[(b * oh + oy) * ow..][..ow];
                    match (oy + i).checked_sub(g.p).filter(|&iy| iy < g.h) {
                        Some(iy) => {
                            let src = &plane[iy * g.w..][lo + j - g.p..hi + j - g.p];
                            let (head, rest) = dst.split_at_mut(lo);
                            let (mid, tail) = rest.split_at_mut(hi - lo);
                            head.iter_mut().chain(tail).for_each(|d| {
                                d.write(0.0);
                            });
                            for (d, &v) in mid.iter_mut().zip(src) {
                                d.write(v);
                            }
                        }
                        None => dst.iter_mut().for_each(|d| {
                            d.write(0.0);
                        }),
                    }
                }
            }
        });
    // SAFETY: the rows (`C k k` of `len` values) cover the first `total` values, and
    // every row wrote each of its values above: each output row's `lo` values before the
    // valid run, the `hi - lo` of the run and the rest after it, or all `ow` as zeros.
    unsafe { cols.set_len(total) };
    cols
}

/// The adjoint of [`im2col`]: adds every column value of images `imgs` back into `dx`
/// (`[C, N, H, W]`, `g.c * g.n * g.h * g.w` values) where it was read from. Parallel over
/// channels, or serial when the blocks run one per thread.
///
/// # Safety
/// `dx` must point to that many initialised values, and no other thread may touch the
/// values of images `imgs` meanwhile.
unsafe fn col2im(cols: &[f32], g: Geometry, imgs: Range<usize>, dx: Shared) {
    let (oh, ow, kk) = (g.oh(), g.ow(), g.k * g.k);
    let len = imgs.len() * g.image_pixels();
    let plane = g.h * g.w;
    (0..g.c)
        .into_par_iter()
        .with_min_len(min_len(g.blocks_per_thread()))
        .for_each(|ch| {
            // SAFETY: channel `ch`'s planes of images `imgs` are contiguous, inside `dx`
            // and touched by this call alone (the caller vouches for other threads).
            let planes = unsafe {
                let start = (ch * g.n + imgs.start) * plane;
                std::slice::from_raw_parts_mut(dx.get().add(start), imgs.len() * plane)
            };
            for s in 0..kk {
                let (i, j) = (s / g.k, s % g.k);
                let (lo, hi) = g.valid_x(j);
                let row = &cols[(ch * kk + s) * len..][..len];
                for b in 0..imgs.len() {
                    for oy in 0..oh {
                        let Some(iy) = (oy + i).checked_sub(g.p).filter(|&iy| iy < g.h) else {
                            continue;
                        };
                        let src = &row[(b * oh + oy) * ow..][..ow];
                        let dst = &mut planes[(b * g.h + iy) * g.w..][..g.w];
                        let dst = &mut dst[lo + j - g.p..hi + j - g.p];
                        for (d, s) in dst.iter_mut().zip(&src[lo..hi]) {
                            *d += s;
                        }
                    }
                }
            }
        });
}

/// The blocks of images, in order.
fn blocks(g: Geometry) -> impl Iterator<Item = Range<usize>> {
    image_runs(g.n, g.block())
}

/// `0..n` in consecutive runs of `per` (the last one shorter).
pub(super) fn image_runs(n: usize, per: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n.div_ceil(per)).map(move |i| i * per..((i + 1) * per).min(n))
}

/// Rayon's least items per task for a loop inside one block: everything on this
/// thread when the blocks themselves run one per thread.
pub(super) fn min_len(per_thread: bool) -> usize {
    if per_thread { usize::MAX } else { 1 }
}

/// A matrix over a slice: element `(i, j)` at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// Row-major `[rows, cols]`.
    pub(super) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    pub(super) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Columns `r` only.
    fn columns(self, r: Range<usize>) -> Self {
        assert!(r.end <= self.cols, "columns past the matrix");
        Self {
            data: &self.data[(r.start * self.cs).min(self.data.len())..],
            cols: r.len(),
            ..self
        }
    }

    /// Rows `r` only.
    fn rows_of(self, r: Range<usize>) -> Self {
        self.t().columns(r).t()
    }

    /// Panics unless every element lies inside the slice.
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view past its slice");
        }
    }
}

/// `dst = lhs rhs` (or `dst += lhs rhs` when `accumulate`), `dst` row-major
/// `[lhs.rows, rhs.cols]` with rows `dst_rs` apart, on all of rayon's threads or on this
/// one.
///
/// # Safety
/// `dst` must be valid for writes of those `lhs.rows * rhs.cols` values (and
/// initialised when `accumulate`), and alias neither input.
pub(super) unsafe fn gemm_raw(
    dst: *mut f32,
    dst_rs: usize,
    lhs: View,
    rhs: View,
    accumulate: bool,
    threads: bool,
) {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions");
    lhs.check();
    rhs.check();
    let s = |v: usize| v as isize;
    // SAFETY: the input views were checked to lie inside their slices; the caller vouches
    // for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            s(dst_rs),
            accumulate,
            lhs.data.as_ptr(),
            s(lhs.cs),
            s(lhs.rs),
            rhs.data.as_ptr(),
            s(rhs.cs),
            s(rhs.rs),
            1.0,
            1.0,
            false,
            false,
            false,
            match threads {
                true => gemm::Parallelism::Rayon(0),
                false => gemm::Parallelism::None,
            },
        );
    }
}

/// `dst += lhs rhs`, `dst` contiguous.
fn matmul_add(dst: &mut [f32], lhs: View, rhs: View) {
    matmul_add_on(dst, lhs, rhs, true);
}

/// [`matmul_add`] on all of rayon's threads or on this one.
pub(super) fn matmul_add_on(dst: &mut [f32], lhs: View, rhs: View, threads: bool) {
    assert_eq!(dst.len(), lhs.rows * rhs.cols, "destination size");
    check_rows(dst.len(), rhs.cols, lhs, rhs);
    // SAFETY: every written value lies in `dst`, initialised and borrowed mutably.
    unsafe { gemm_raw(dst.as_mut_ptr(), rhs.cols, lhs, rhs, true, threads) }
}

/// Panics unless the `[lhs.rows, rhs.cols]` product, its rows `dst_rs` apart, fits in
/// `len` values without its rows overlapping.
fn check_rows(len: usize, dst_rs: usize, lhs: View, rhs: View) {
    let (m, n) = (lhs.rows, rhs.cols);
    assert!(n <= dst_rs, "destination rows overlap");
    assert!(m == 0 || (m - 1) * dst_rs + n <= len, "destination size");
}

/// `dst += lhs rhs` for a small `dst` and a long inner dimension (a weight gradient sums
/// over every pixel of the batch). The `gemm` crate shares a product among threads by
/// blocks of its result, which a result of a few thousand values does not have, so the
/// inner dimension is split instead: one single-threaded product per rayon thread, then
/// their sum. Measured 1.1-3.5x faster than one threaded product for the weight
/// gradients of the Tucker units' 1x1 and 3x3 convs, and never slower for VGG's.
fn matmul_add_long(dst: &mut [f32], lhs: View, rhs: View) {
    let k = lhs.cols;
    let parts = rayon::current_num_threads().min(k / MIN_PART).max(1);
    if parts == 1 {
        return matmul_add(dst, lhs, rhs);
    }
    add_parts(dst, k, parts, |inner| {
        product_on(lhs.columns(inner.clone()), rhs.rows_of(inner), false)
    });
}

/// `dst += sum of part(run)` over `parts` consecutive runs of `0..len`, the parts
/// computed in parallel and added in order, so that the sum does not depend on which
/// thread ran what.
pub(super) fn add_parts(
    dst: &mut [f32],
    len: usize,
    parts: usize,
    part: impl Fn(Range<usize>) -> Vec<f32> + Sync,
) {
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|p| part(len * p / parts..len * (p + 1) / parts))
        .collect();
    for partial in partials {
        dst.iter_mut().zip(partial).for_each(|(d, v)| *d += v);
    }
}

/// The least inner length a thread of [`matmul_add_long`] is given.
const MIN_PART: usize = 256;

/// `lhs rhs` in a new buffer (never zero-filled: the product writes every value).
fn product(lhs: View, rhs: View) -> Vec<f32> {
    product_on(lhs, rhs, true)
}

/// [`product`] on all of rayon's threads or on this one.
fn product_on(lhs: View, rhs: View, threads: bool) -> Vec<f32> {
    let len = lhs.rows * rhs.cols;
    let mut out = Vec::<f32>::with_capacity(len);
    // SAFETY: the buffer has room for `len` values; `gemm` without `read_dst` writes every
    // one of them before `set_len` exposes them.
    unsafe {
        gemm_raw(out.as_mut_ptr(), rhs.cols, lhs, rhs, false, threads);
        out.set_len(len);
    }
    out
}

fn forward(x: &Flat, weight: &Flat, bias: &Flat, padding: usize) -> Flat {
    let g = Geometry::of(x, weight, padding);
    let y = forward_values(g, &values(x), &values(weight), &values(bias));
    tensor(y, vec![g.out, g.n, g.oh(), g.ow()])
}

/// [`forward`] on values: `x` channel-major `[C, N, H, W]` (`dims`), `weight`
/// `[O, C, k, k]`, `bias` `[O]`; the output channel-major `[O, N, OH, OW]`. The
/// inference engine's path for convs with many output pixels.
pub(super) fn conv_values(
    x: &[f32],
    dims: [usize; 4],
    weight: &[f32],
    bias: &[f32],
    k: usize,
    padding: usize,
) -> Vec<f32> {
    let [c, n, h, w] = dims;
    let out = bias.len();
    assert_eq!(weight.len(), out * c * k * k, "weight [O, C, k, k]");
    let g = Geometry {
        c,
        n,
        h,
        w,
        out,
        k,
        p: padding,
    };
    forward_values(g, x, weight, bias)
}

fn forward_values(g: Geometry, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    if let Some(s) = g.winograd() {
        return timed(Op::WinogradForward, || {
            winograd::forward(x, weight, bias, s)
        });
    }
    if skinny::applies(g.pixels(), g.out * g.c * g.k * g.k) {
        return timed(g.ops()[0], || {
            let cols_t = columns_t(x, g);
            skinny::forward(weight, &cols_t, bias, g.c * g.k * g.k, g.pixels())
        });
    }
    timed(g.ops()[0], || forward_of(g, x, weight, bias))
}

/// The batch's im2col columns pixel-major, `[P, C k k]` with `P` the pixels rounded up
/// to [`skinny::GROUP`] (the rows past them zero): for [`skinny::forward`].
fn columns_t(x: &[f32], g: Geometry) -> Vec<f32> {
    let (oh, ow, k) = (g.oh(), g.ow(), g.k);
    let ckk = g.c * k * k;
    let mut t = vec![0f32; g.pixels().next_multiple_of(skinny::GROUP) * ckk];
    for (p, dst) in t.chunks_exact_mut(ckk).take(g.pixels()).enumerate() {
        let (b, oy, ox) = (p / (oh * ow), p / ow % oh, p % ow);
        for (ch, taps) in dst.chunks_exact_mut(k * k).enumerate() {
            let plane = &x[(ch * g.n + b) * g.h * g.w..][..g.h * g.w];
            for (i, row) in taps.chunks_exact_mut(k).enumerate() {
                let Some(iy) = (oy + i).checked_sub(g.p).filter(|&v| v < g.h) else {
                    continue;
                };
                for (j, v) in row.iter_mut().enumerate() {
                    if let Some(ix) = (ox + j).checked_sub(g.p).filter(|&v| v < g.w) {
                        *v = plane[iy * g.w + ix];
                    }
                }
            }
        }
    }
    t
}

/// `y = W cols + b`, block by block (in parallel, one block per thread, when
/// [`Geometry::blocks_per_thread`]). Without a bias (all zeros: a Tucker unit's first
/// 1x1 and core), the products write `y` directly instead of adding to a filled one.
fn forward_of(g: Geometry, xs: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let ckk = g.c * g.k * g.k;
    let total = g.out * g.pixels();
    let mut y: Vec<f32> = Vec::with_capacity(total);
    let biased = bias.iter().any(|&b| b != 0.0);
    if biased {
        for &b in bias.iter() {
            y.resize(y.len() + g.pixels(), b);
        }
    }
    let dst = Shared(y.as_mut_ptr());
    let per_thread = g.blocks_per_thread();
    let block = |imgs: Range<usize>| {
        let cols = columns(xs, g, imgs.clone());
        let (start, len) = (imgs.start * g.image_pixels(), imgs.len() * g.image_pixels());
        let (lhs, rhs) = (View::rows(weight, g.out, ckk), View::rows(&cols, ckk, len));
        check_rows(total - start, g.pixels(), lhs, rhs);
        // SAFETY: the product writes (or, biased, adds to) `out` rows of `len` values,
        // `pixels` apart from `start`: inside `y`'s `total` values (checked above), and
        // the blocks' columns are disjoint, so no two blocks write the same value.
        unsafe {
            let dst = dst.get().add(start);
            gemm_raw(dst, g.pixels(), lhs, rhs, biased, !per_thread);
        }
    };
    match per_thread {
        true => blocks(g)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(block),
        false => blocks(g).for_each(block),
    }
    if !biased {
        // SAFETY: the blocks' columns `start..start + len` tile `0..pixels`, so the
        // products above wrote all `out x pixels` values.
        unsafe { y.set_len(total) };
    }
    y
}

/// A pointer that blocks running on several threads write through, each to its own
/// values.
#[derive(Clone, Copy)]
pub(super) struct Shared(pub(super) *mut f32);

// SAFETY: only used where every thread writes a disjoint set of values (see the users).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `(dx, dweight, dbias)`, each only when asked for. Long by design: its three schedules
/// (pointwise, blocks across threads, threads within a block) share the block closures.
fn backward(
    x: &Flat,
    weight: &Flat,
    padding: usize,
    dy: &Flat,
    want: [bool; 3],
) -> [Option<Flat>; 3] {
    let g = Geometry::of(x, weight, padding);
    let ckk = g.c * g.k * g.k;
    let (xs, dys, w) = (values(x), values(dy), values(weight));
    let [_, dx_op, dw_op] = g.ops();
    let winograd_dx = want[0].then(|| winograd_input_grad(g, &dys, &w)).flatten();
    let winograd_dw = want[1]
        .then(|| winograd_weight_grad(g, &xs, &dys))
        .flatten();
    let want = [
        want[0] && winograd_dx.is_none(),
        want[1] && winograd_dw.is_none(),
        want[2],
    ];
    // A pointwise conv's input gradient is its column gradient, written by the product.
    let mut dx = want[0].then(|| match g.pointwise() {
        true => Vec::new(),
        false => vec![0f32; g.c * g.n * g.h * g.w],
    });
    let per_thread = g.blocks_per_thread();
    let dx_ptr = dx.as_mut().map(|d| Shared(d.as_mut_ptr()));
    // The block's columns of `dy`, rows `pixels` apart.
    let dy_of = |imgs: &Range<usize>| {
        let (start, len) = (imgs.start * g.image_pixels(), imgs.len() * g.image_pixels());
        View {
            rs: g.pixels(),
            ..View::rows(&dys[start..], g.out, len)
        }
    };
    let dx_block = |imgs: Range<usize>, dx: Shared| {
        timed_if(!per_thread, dx_op, || {
            let dcols = product_on(View::rows(&w, g.out, ckk).t(), dy_of(&imgs), !per_thread);
            // SAFETY: `dx` holds `C N H W` zeros, and the blocks' images are disjoint.
            timed_if(!per_thread, Op::Col2im, || unsafe {
                col2im(&dcols, g, imgs, dx)
            });
        })
    };
    // `dw += dy cols^T` for the block.
    let dw_block = |dw: &mut [f32], imgs: Range<usize>| {
        timed_if(!per_thread, dw_op, || {
            let cols = columns(&xs, g, imgs.clone());
            let dcols = View::rows(&cols, ckk, imgs.len() * g.image_pixels()).t();
            match per_thread {
                true => matmul_add_on(dw, dy_of(&imgs), dcols, false),
                false => matmul_add_long(dw, dy_of(&imgs), dcols),
            }
        })
    };
    let list: Vec<_> = blocks(g).collect();
    let mut dw = want[1].then(|| vec![0f32; g.out * ckk]);
    if g.pointwise() {
        // One block, the whole batch: the input gradient is the columns' gradient.
        if let Some(dx) = dx.as_mut() {
            *dx = timed(dx_op, || {
                product(View::rows(&w, g.out, ckk).t(), dy_of(&(0..g.n)))
            });
        }
        if let Some(dw) = dw.as_mut() {
            dw_block(dw, 0..g.n);
        }
    } else if per_thread {
        if let Some(dx) = dx_ptr {
            timed(dx_op, || {
                list.par_iter().for_each(|imgs| dx_block(imgs.clone(), dx))
            });
        }
        if let Some(dw) = dw.as_mut() {
            // One partial sum per thread over a fixed run of blocks.
            let parts = rayon::current_num_threads().min(list.len());
            timed(dw_op, || {
                add_parts(dw, list.len(), parts, |run| {
                    let mut part = vec![0f32; g.out * ckk];
                    for imgs in &list[run] {
                        dw_block(&mut part, imgs.clone());
                    }
                    part
                })
            });
        }
    } else {
        for imgs in list {
            if let Some(dx) = dx_ptr {
                dx_block(imgs.clone(), dx);
            }
            if let Some(dw) = dw.as_mut() {
                dw_block(dw, imgs);
            }
        }
    }
    [
        winograd_dx.or_else(|| dx.map(|d| tensor(d, vec![g.c, g.n, g.h, g.w]))),
        winograd_dw.or_else(|| dw.map(|d| tensor(d, weight.layout().shape().to_vec()))),
        want[2].then(|| bias_grad(&dys, g)),
    ]
}

/// The input gradient by Winograd ([`winograd::input_grad`]), where the conv is 3x3 with
/// padding 1 and Winograd pays for its adjoint (`O` input channels, `C` output).
fn winograd_input_grad(g: Geometry, dys: &[f32], w: &[f32]) -> Option<Flat> {
    let s = g.winograd()?;
    let adjoint = winograd::Sizes::new(g.out, g.n, g.h, g.w, g.c);
    adjoint.worth_it().then(|| {
        timed(Op::WinogradInputGrad, || {
            tensor(winograd::input_grad(dys, w, s), vec![g.c, g.n, g.h, g.w])
        })
    })
}

/// The weight gradient by Winograd ([`winograd::weight_grad`]), where the conv is 3x3
/// with padding 1 and Winograd pays.
fn winograd_weight_grad(g: Geometry, xs: &[f32], dys: &[f32]) -> Option<Flat> {
    let s = g.winograd()?;
    Some(timed(Op::WinogradWeightGrad, || {
        tensor(winograd::weight_grad(xs, dys, s), vec![g.out, g.c, 3, 3])
    }))
}

/// The bias gradient: each output channel's row of `dy` summed (in f64).
fn bias_grad(dys: &[f32], g: Geometry) -> Flat {
    timed(Op::ConvWeightGrad, || {
        let sums = dys
            .par_chunks(g.pixels())
            .map(|row| row.iter().map(|&v| f64::from(v)).sum::<f64>() as f32)
            .collect();
        tensor(sums, vec![g.out])
    })
}

impl ConvBackend for Flex {
    fn conv_cnhw(x: Flat, weight: Flat, bias: Flat, padding: usize) -> Flat {
        forward(&x, &weight, &bias, padding)
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    /// Input and weight (shared storage, not copies) and the padding.
    type State = (Flat, Flat, usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, padding) = ops.state;
        let want = ops.parents.each_ref().map(Option::is_some);
        let results = backward(&x, &weight, padding, &dy, want);
        for (node, grad) in ops.parents.into_iter().zip(results) {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> ConvBackend for Autodiff<Flex, C> {
    fn conv_cnhw(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: usize,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        let y = forward(&x, &weight, &bias, padding);
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, weight, padding), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(c: usize, n: usize, hw: usize, k: usize) -> Geometry {
        let p = k / 2;
        Geometry {
            c,
            n,
            h: hw,
            w: hw,
            out: 4,
            k,
            p,
        }
    }

    /// The shapes `cnhw`'s tests check against burn run the paths their comments say.
    #[test]
    fn blocks_run_one_after_the_other_or_one_per_thread() {
        let two_threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        two_threads.install(|| {
            let serial = geometry(16, 3, 64, 3);
            assert!(!serial.blocks_per_thread());
            assert_eq!(blocks(serial).collect::<Vec<_>>(), [0..1, 1..2, 2..3]);
            let parallel = geometry(8, 20, 32, 3);
            assert!(parallel.blocks_per_thread());
            assert_eq!(blocks(parallel).count(), 20);
            // A pointwise conv is one block, the whole batch.
            assert!(!geometry(8, 20, 32, 1).blocks_per_thread());
            assert_eq!(blocks(geometry(8, 20, 32, 1)).count(), 1);
        });
    }
}
