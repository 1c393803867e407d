//! The inference engine's matrix product `y = act(W x + b)`, with `W` packed once
//! rather than on every call (a general product, `gemm`'s, packs
//! `W` each time, which at batch 1 costs as much as the product). `W` (`[rows, depth]`)
//! is stored in panels of [`LANES`] rows, each depth-major (`[depth][LANES]`), so that
//! one step of the inner loop loads one vector of `W` and multiplies it with
//! [`GROUP`] broadcast values of `x`, into `LANES x GROUP` accumulators that stay in
//! registers for the whole depth (the register-blocked micro-kernel of Goto and van de
//! Geijn, "Anatomy of high-performance matrix multiplication", TOMS 2008). The tests
//! check it against a plain triple loop at every SIMD level.

use super::super::conv_gemm::Shared;
use super::super::simd::{Level, level, vectorized};
use super::maps::{Dims, Side};
use rayon::prelude::*;

/// Rows of `W` per panel: one AVX-512 vector of f32 (two AVX2 ones).
pub const LANES: usize = 16;

/// Columns of `x` per micro-kernel call: with [`LANES`] rows, 12 AVX2 accumulators,
/// which leaves AVX2's 16 registers room for `W`'s two and a broadcast.
pub const GROUP: usize = 6;

/// Groups of columns per tile: a tile is one panel of `W` against this many groups of
/// `x`, so that the panel is read from memory once and then from cache.
const BLOCK_GROUPS: usize = 16;

/// Depth per pass over a tile's groups: two panels' chunk is 32 KiB.
const DEPTH_CHUNK: usize = 256;

/// Multiply-adds below which a product runs on the calling thread: rayon's hand-off
/// (some microseconds) would cost more than it saves.
const PARALLEL_MACS: usize = 1 << 19;

/// How a product's result is finished, value by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Relu,
}

/// `W` and `b` of `y = act(W x + b)`, packed.
#[derive(Debug, Clone)]
pub struct Packed {
    rows: usize,
    depth: usize,
    /// `[rows / LANES rounded up][depth][LANES]`, zero past the last row.
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl Packed {
    /// Packs `w` (`[rows, depth]`, row-major) and `bias` (`rows` values).
    pub fn new(w: &[f32], bias: &[f32], rows: usize, depth: usize) -> Self {
        assert_eq!(w.len(), rows * depth, "W is [rows, depth]");
        assert_eq!(bias.len(), rows, "one bias per row");
        let mut panels = vec![0f32; rows.div_ceil(LANES) * depth * LANES];
        for (o, row) in w.chunks_exact(depth).enumerate() {
            let panel = &mut panels[o / LANES * depth * LANES..][..depth * LANES];
            for (k, &v) in row.iter().enumerate() {
                panel[k * LANES + o % LANES] = v;
            }
        }
        Self {
            rows,
            depth,
            panels,
            bias: bias.to_vec(),
        }
    }

    /// `act(W x + b)` as `[rows, cols]`, for `x` as `[depth, cols]` (row-major).
    pub fn apply(&self, x: &[f32], cols: usize, act: Act) -> Vec<f32> {
        assert_eq!(x.len(), self.depth * cols, "x is [depth, cols]");
        self.apply_packed(&pack_columns(x, self.depth, cols), cols, act)
    }

    /// [`Self::apply`] on `x` packed already (by [`pack_columns`] or [`pack_windows`]).
    pub fn apply_packed(&self, xp: &[f32], cols: usize, act: Act) -> Vec<f32> {
        assert_eq!(
            xp.len(),
            cols.div_ceil(GROUP) * self.depth * GROUP,
            "x packed in groups"
        );
        if cols == 0 {
            return Vec::new();
        }
        let lv = level();
        // Panels per micro-kernel call: two on AVX-512 (12 accumulators of its 32
        // registers, enough to hide the multiply-adds' latency), one below (AVX2's 16
        // registers hold 12 accumulators of 8 lanes).
        let per_call = if lv >= Level::Avx512 { 2 } else { 1 };
        let units = self.rows.div_ceil(LANES).div_ceil(per_call);
        // Blocks of at most BLOCK_GROUPS groups, and enough tiles to keep every
        // thread busy (four each) where there are groups enough.
        let groups = cols.div_ceil(GROUP);
        let blocks = groups
            .div_ceil(BLOCK_GROUPS)
            .max((4 * rayon::current_num_threads()).div_ceil(units))
            .min(groups);
        let per_block = groups.div_ceil(blocks);
        let blocks = groups.div_ceil(per_block);
        let mut y = vec![0f32; self.rows * cols];
        let out = Shared(y.as_mut_ptr());
        let tile = |t: usize| {
            let (unit, block) = (t / blocks, t % blocks);
            let groups = block * per_block..((block + 1) * per_block).min(groups);
            let panels = unit * per_call..((unit + 1) * per_call).min(self.rows.div_ceil(LANES));
            // SAFETY: tile `t` writes only the rows of `panels` (below `rows`) at the
            // columns of `groups` (below `cols`) of `y`, `[rows, cols]`; no two tiles
            // share a unit of panels and a block, so their writes are disjoint, and `y`
            // outlives them (the loop below joins every task).
            vectorized(
                #[inline(always)]
                || unsafe { self.tile(panels, xp, cols, groups, act, lv, out) },
            )
        };
        let tiles = units * blocks;
        if self.rows * self.depth * cols < PARALLEL_MACS {
            (0..tiles).for_each(tile);
        } else {
            (0..tiles).into_par_iter().for_each(tile);
        }
        y
    }

    /// Panels `panels` of `W` against column groups `groups` of `xp` (packed by
    /// [`pack_columns`] or [`pack_windows`]), written into `y`.
    ///
    /// # Safety
    /// `y` points at `[rows, cols]` values, and no other thread writes these panels'
    /// rows at these groups' columns meanwhile.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile(
        &self,
        panels: std::ops::Range<usize>,
        xp: &[f32],
        cols: usize,
        groups: std::ops::Range<usize>,
        act: Act,
        lv: Level,
        y: Shared,
    ) {
        let (depth, size) = (self.depth, self.depth * LANES);
        // The depth in chunks of DEPTH_CHUNK, each chunk's panels (32 KiB) staying in
        // L1 while every group of the tile goes through it; the groups' sums so far
        // wait in `accs`.
        let mut accs = vec![[[[0f32; LANES]; GROUP]; 2]; groups.len()];
        for k0 in (0..depth).step_by(DEPTH_CHUNK) {
            let k1 = (k0 + DEPTH_CHUNK).min(depth);
            let w = |q: usize| &self.panels[q * size + k0 * LANES..q * size + k1 * LANES];
            for (g, acc) in groups.clone().zip(&mut accs) {
                let xg = &xp[(g * depth + k0) * GROUP..(g * depth + k1) * GROUP];
                match (panels.len(), lv) {
                    (2, _) => group::<2, true>([w(panels.start), w(panels.start + 1)], xg, acc),
                    (_, Level::Scalar) => group::<1, false>([w(panels.start)], xg, acc),
                    _ => group::<1, true>([w(panels.start)], xg, acc),
                }
            }
        }
        for (g, acc) in groups.zip(&accs) {
            let live_cols = (cols - g * GROUP).min(GROUP);
            for (q, acc) in panels.clone().zip(acc) {
                let row0 = q * LANES;
                let live = (self.rows - row0).min(LANES);
                for (l, bias) in self.bias[row0..row0 + live].iter().enumerate() {
                    for (c, sums) in acc[..live_cols].iter().enumerate() {
                        let v = sums[l] + bias;
                        let v = match act {
                            Act::Identity => v,
                            Act::Relu => v.max(0.0),
                        };
                        // SAFETY: row `row0 + l < rows`, column `g GROUP + c < cols`,
                        // inside `y` and this tile's own (the caller's contract).
                        unsafe { *y.get().add((row0 + l) * cols + g * GROUP + c) = v };
                    }
                }
            }
        }
    }
}

/// `x` (`[depth, cols]`) as groups of [`GROUP`] columns, each `[depth][GROUP]`, the last
/// padded with zeros: the micro-kernel reads each group's values in order (reading
/// `x`'s rows a long stride apart instead thrashes the L1 cache's sets).
fn pack_columns(x: &[f32], depth: usize, cols: usize) -> Vec<f32> {
    let groups = cols.div_ceil(GROUP);
    let mut xp = vec![0f32; groups * depth * GROUP];
    let fill = |(g, dst): (usize, &mut [f32])| {
        let (c0, n) = (g * GROUP, (cols - g * GROUP).min(GROUP));
        for (k, d) in dst.chunks_exact_mut(GROUP).enumerate() {
            let src = &x[k * cols + c0..][..n];
            // Element by element: a `copy_from_slice` of 6 values is a `memmove` call.
            d.iter_mut().zip(src).for_each(|(d, &v)| *d = v);
        }
    };
    if xp.len() < PARALLEL_VALUES {
        xp.chunks_mut(depth * GROUP).enumerate().for_each(fill);
    } else {
        xp.par_chunks_mut(depth * GROUP).enumerate().for_each(fill);
    }
    xp
}

/// The columns of a `k x k` conv with `stride` and `pad` on `x` (channel-major, `d`),
/// packed as [`pack_columns`] packs im2col's matrix (`[C k k, N OH OW]`, row `(ch, i, j)`
/// holding channel `ch` at offset `(i, j)` of each output's window, zero in the padding)
/// but without that matrix between: each value is
/// read from `x` once, where im2col's rows of a small map are copies of one or two
/// values each. Returns the packed values and the columns (output pixels).
pub fn pack_windows(x: &[f32], d: Dims, k: usize, stride: usize, pad: usize) -> (Vec<f32>, usize) {
    let (sy, sx) = (
        Side::new(d.h, k, stride, pad),
        Side::new(d.w, k, stride, pad),
    );
    let (oh, ow) = (sy.out, sx.out);
    let (cols, kk, per_channel) = (d.n * oh * ow, k * k, d.n * d.plane());
    let groups = cols.div_ceil(GROUP);
    // For each group, tap and column: the offset of the value it reads within its
    // channel's planes, or `NONE` (in the padding, or past the last column).
    assert!(
        per_channel < NONE as usize,
        "a channel's planes past u32 offsets"
    );
    let taps = kk * GROUP;
    let mut offsets = vec![NONE; groups * taps];
    let table = |(g, offs): (usize, &mut [u32])| {
        for (c, q) in (g * GROUP..cols.min((g + 1) * GROUP)).enumerate() {
            let (b, oy, ox) = (q / (oh * ow), q / ow % oh, q % ow);
            for (t, o) in offs.iter_mut().skip(c).step_by(GROUP).enumerate() {
                if let (Some(iy), Some(ix)) = (sy.at(oy, t / k), sx.at(ox, t % k)) {
                    *o = ((b * d.h + iy) * d.w + ix) as u32;
                }
            }
        }
    };
    if offsets.len() < PARALLEL_VALUES {
        offsets.chunks_exact_mut(taps).enumerate().for_each(table);
    } else {
        let per_task = PARALLEL_VALUES.div_ceil(4 * taps);
        offsets
            .par_chunks_exact_mut(taps)
            .enumerate()
            .with_min_len(per_task)
            .for_each(table);
    }
    let mut xp = vec![0f32; groups * d.c * taps];
    // One task per group and channel: its `k k` rows of `GROUP` values. Compiled for
    // the SIMD level, the loop gathers 16 values at a time (4.7x the baseline's
    // speed on AVX-512).
    let fill = |(r, rows): (usize, &mut [f32])| {
        let (g, ch) = (r / d.c, r % d.c);
        let planes = &x[ch * per_channel..][..per_channel];
        let offs = &offsets[g * taps..][..taps];
        vectorized(
            #[inline(always)]
            || {
                for (v, &o) in rows.iter_mut().zip(offs) {
                    *v = planes.get(o as usize).copied().unwrap_or(0.0);
                }
            },
        )
    };
    if xp.len() < PARALLEL_VALUES {
        xp.chunks_mut(taps).enumerate().for_each(fill);
    } else {
        let per_task = PARALLEL_VALUES.div_ceil(4 * taps);
        xp.par_chunks_mut(taps)
            .enumerate()
            .with_min_len(per_task)
            .for_each(fill);
    }
    (xp, cols)
}

/// An offset in [`pack_windows`]'s table that reads nothing (a zero).
const NONE: u32 = u32::MAX;

/// Values below which [`pack_columns`] and [`pack_windows`] run on the calling thread.
const PARALLEL_VALUES: usize = 1 << 16;

/// `acc[p][c][l] += sum_k w[p][k][l] xg[k][c]` for `p < P`: the micro-kernel, `P` panels of `W`
/// against one group of columns. With `FMA` each step is a fused multiply-add (one
/// instruction where the level has FMA; a slow library call where not, so only levels
/// with FMA ask for it).
#[inline(always)]
fn group<const P: usize, const FMA: bool>(
    w: [&[f32]; P],
    xg: &[f32],
    acc: &mut [[[f32; LANES]; GROUP]; 2],
) {
    // One array per panel, each step spelled out: LLVM keeps these in registers (an
    // array indexed by panel, or a returned one, it kept in memory or left scalar).
    let (mut a0, mut a1) = (acc[0], acc[1]);
    let step = |a: &mut [[f32; LANES]; GROUP], wk: &[f32; LANES], xk: &[f32; GROUP]| {
        for c in 0..GROUP {
            for l in 0..LANES {
                a[c][l] = if FMA {
                    wk[l].mul_add(xk[c], a[c][l])
                } else {
                    a[c][l] + wk[l] * xk[c]
                };
            }
        }
    };
    let lanes = |wp: &[f32], k: usize| -> [f32; LANES] {
        wp[k * LANES..][..LANES].try_into().expect("LANES values")
    };
    for (k, xk) in xg.chunks_exact(GROUP).enumerate() {
        let xk: &[f32; GROUP] = xk.try_into().expect("GROUP values");
        step(&mut a0, &lanes(w[0], k), xk);
        if P == 2 {
            step(&mut a1, &lanes(w[P - 1], k), xk);
        }
    }
    acc[0] = a0;
    if P == 2 {
        acc[1] = a1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::simd::with_level;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// The product by its definition, in f64.
    fn reference(
        w: &[f32],
        b: &[f32],
        x: &[f32],
        rows: usize,
        depth: usize,
        cols: usize,
    ) -> Vec<f64> {
        let mut y = vec![0f64; rows * cols];
        for o in 0..rows {
            for p in 0..cols {
                y[o * cols + p] = b[o] as f64
                    + (0..depth)
                        .map(|k| w[o * depth + k] as f64 * x[k * cols + p] as f64)
                        .sum::<f64>();
            }
        }
        y
    }

    /// im2col by its definition: row `(ch, i, j)`, column `(b, oy, ox)` holds
    /// `x[ch, b, oy s + i - p, ox s + j - p]`, zero outside the map.
    fn im2col(x: &[f32], d: Dims, k: usize, s: usize, p: usize) -> (Vec<f32>, usize) {
        let side = |n: usize| (n + 2 * p - k) / s + 1;
        let (oh, ow) = (side(d.h), side(d.w));
        let cols = d.n * oh * ow;
        let mut m = vec![0f32; d.c * k * k * cols];
        for ch in 0..d.c {
            for (i, j) in (0..k).flat_map(|i| (0..k).map(move |j| (i, j))) {
                for (b, oy, ox) in (0..cols).map(|q| (q / (oh * ow), q / ow % oh, q % ow)) {
                    let (iy, ix) = (
                        (oy * s + i) as isize - p as isize,
                        (ox * s + j) as isize - p as isize,
                    );
                    if (0..d.h as isize).contains(&iy) && (0..d.w as isize).contains(&ix) {
                        m[((ch * k + i) * k + j) * cols + (b * oh + oy) * ow + ox] =
                            x[((ch * d.n + b) * d.h + iy as usize) * d.w + ix as usize];
                    }
                }
            }
        }
        (m, cols)
    }

    /// The windows packed straight from the map equal im2col's matrix packed, for
    /// 1x1 and 3x3 kernels, strides 1 and 2, padding, a batch of 2, a 1x1 map, and a
    /// table large enough to be filled in parallel.
    #[test]
    fn packed_windows_match_im2col_by_definition() {
        let mut rng = StdRng::seed_from_u64(6);
        let cases = [
            (
                Dims {
                    c: 3,
                    n: 2,
                    h: 5,
                    w: 7,
                },
                3,
                1,
                1,
            ),
            (
                Dims {
                    c: 4,
                    n: 1,
                    h: 4,
                    w: 4,
                },
                3,
                2,
                1,
            ),
            (
                Dims {
                    c: 5,
                    n: 2,
                    h: 3,
                    w: 3,
                },
                1,
                1,
                0,
            ),
            (
                Dims {
                    c: 6,
                    n: 1,
                    h: 8,
                    w: 8,
                },
                1,
                2,
                0,
            ),
            (
                Dims {
                    c: 2,
                    n: 1,
                    h: 1,
                    w: 1,
                },
                3,
                1,
                1,
            ),
            (
                Dims {
                    c: 512,
                    n: 1,
                    h: 4,
                    w: 4,
                },
                3,
                1,
                1,
            ),
        ];
        for (d, k, s, p) in cases {
            let x = random(d.c * d.n * d.plane(), &mut rng);
            let (m, cols) = im2col(&x, d, k, s, p);
            let (got, got_cols) = pack_windows(&x, d, k, s, p);
            assert_eq!(got_cols, cols, "{d:?} k{k} s{s} p{p}: columns");
            let want = pack_columns(&m, d.c * k * k, cols);
            assert!(got == want, "{d:?} k{k} s{s} p{p}: packed values differ");
        }
    }

    /// Every shape class (rows and columns not multiples of the panel, group or block,
    /// one column, products run serially and in parallel) at every level, against the
    /// definition, with and without ReLU.
    #[test]
    fn packed_products_match_the_definition() {
        let mut rng = StdRng::seed_from_u64(5);
        let shapes = [
            (1, 1, 1),
            (16, 9, 6),
            (17, 27, 4),
            (40, 33, 97),
            (7, 5, 200),
            (100, 512, 1),
            (512, 300, 16),
            (33, 64, 1024),
        ];
        for (rows, depth, cols) in shapes {
            let (w, b, x) = (
                random(rows * depth, &mut rng),
                random(rows, &mut rng),
                random(depth * cols, &mut rng),
            );
            let want = reference(&w, &b, &x, rows, depth, cols);
            let packed = Packed::new(&w, &b, rows, depth);
            for lv in Level::ALL {
                for act in [Act::Identity, Act::Relu] {
                    let got = with_level(lv, || packed.apply(&x, cols, act));
                    for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
                        let r = if act == Act::Relu { r.max(0.0) } else { r };
                        let tol = 1e-5 * (depth as f64).sqrt() * (1.0 + r.abs());
                        assert!(
                            (g as f64 - r).abs() <= tol,
                            "{rows}x{depth}x{cols} {lv:?} {act:?} at {i}: {g} against {r}"
                        );
                    }
                }
            }
        }
    }
}
