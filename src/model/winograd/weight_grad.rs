//! The weight gradient of [`super::forward`]'s convolution by F(2x2, 3x3): the forward
//! pass is bilinear in `U` and `V`, so `dU_e = dM_e V_e^T` summed over the tiles, with
//! `dM = A dY A^T` per tile, and `dg = G^T dU G`: 16 products of `[O, tiles] x
//! [tiles, C]`, 4 multiplies per output pixel and channel pair instead of im2col's 9.
//! `cnhw`'s tests check it against burn's conv2d weight gradient.

use super::{Chunk, Sizes, Tile, by_channel, tiling::F2, transform_inputs};
use crate::model::conv_gemm::{Shared, View, add_parts, matmul_add_on, min_len};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The weight gradient of that convolution for the output's gradient `dy`
/// (`[O, N, H, W]` channel-major): `dW` as `[O, C, 3, 3]`, by F(2x2, 3x3) whatever
/// `s.tile`. Chunks of images as in [`super::forward`]; chunks that run one per thread
/// each add to their thread's own `dU`, and those are summed in a fixed order.
pub fn weight_grad(x: &[f32], dy: &[f32], s: Sizes) -> Vec<f32> {
    let s = s.with_tile(Tile::F2);
    let oc = s.out * s.c;
    let (chunks, per_thread) = s.chunks();
    // `dU_e += dM_e V_e^T` for the chunk's tiles.
    let add_chunk = |du: &mut [f32], chunk: &Chunk| {
        let tiles = chunk.tiles(s);
        let v = transform_inputs::<F2>(x, s, chunk, per_thread);
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
            16,
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
