//! The inference engine's layers other than products, on channel-major maps
//! (`[C, N, H, W]`: `C N` planes of `H x W`) and feature-major features (`[F, N]`).
//! Each follows PyTorch's definition of its op; `super::tests` checks whole networks
//! against burn's layers.

use crate::graph::Window;
use rayon::prelude::*;

/// Sizes of a channel-major map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub c: usize,
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

impl Dims {
    pub fn plane(&self) -> usize {
        self.h * self.w
    }
}

/// Values below which a layer runs on the calling thread.
const PARALLEL_VALUES: usize = 1 << 15;

/// A window's geometry over one input side: output side and the input index of output
/// `o`'s tap `t` (`None` in the padding).
#[derive(Clone, Copy)]
pub struct Side {
    size: usize,
    pub out: usize,
    stride: usize,
    pad: usize,
}

impl Side {
    pub fn new(size: usize, kernel: usize, stride: usize, pad: usize) -> Self {
        Self {
            size,
            out: (size + 2 * pad - kernel) / stride + 1,
            stride,
            pad,
        }
    }

    pub fn at(&self, o: usize, t: usize) -> Option<usize> {
        (o * self.stride + t)
            .checked_sub(self.pad)
            .filter(|&i| i < self.size)
    }
}

/// `f(plane in, plane out)` for every plane, in parallel when large.
fn per_plane(
    x: &[f32],
    d: Dims,
    out_plane: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut y = vec![0f32; d.c * d.n * out_plane];
    let run = |(src, dst): (&[f32], &mut [f32])| f(src, dst);
    if x.len() < PARALLEL_VALUES {
        x.chunks(d.plane())
            .zip(y.chunks_mut(out_plane))
            .for_each(run);
    } else {
        x.par_chunks(d.plane())
            .zip(y.par_chunks_mut(out_plane))
            .for_each(run);
    }
    y
}

/// Max-pooling (padding never wins: PyTorch pads with minus infinity).
pub fn max_pool(x: &[f32], d: Dims, win: &Window) -> Vec<f32> {
    pool(x, d, win, f32::NEG_INFINITY, f32::max, |m, _| m)
}

/// Average pooling counting the padding in the divisor (PyTorch's and burn's default,
/// `count_include_pad`).
pub fn avg_pool(x: &[f32], d: Dims, win: &Window) -> Vec<f32> {
    let taps = (win.kernel * win.kernel) as f32;
    pool(x, d, win, 0.0, |a, b| a + b, |s, _| s / taps)
}

fn pool(
    x: &[f32],
    d: Dims,
    win: &Window,
    start: f32,
    fold: impl Fn(f32, f32) -> f32 + Sync,
    finish: impl Fn(f32, usize) -> f32 + Sync,
) -> Vec<f32> {
    let (sy, sx) = (
        Side::new(d.h, win.kernel, win.stride, win.padding),
        Side::new(d.w, win.kernel, win.stride, win.padding),
    );
    per_plane(x, d, sy.out * sx.out, |src, dst| {
        for oy in 0..sy.out {
            for ox in 0..sx.out {
                let mut acc = start;
                let mut taps = 0;
                for iy in (0..win.kernel).filter_map(|t| sy.at(oy, t)) {
                    for ix in (0..win.kernel).filter_map(|t| sx.at(ox, t)) {
                        acc = fold(acc, src[iy * d.w + ix]);
                        taps += 1;
                    }
                }
                dst[oy * sx.out + ox] = finish(acc, taps);
            }
        }
    })
}

/// The mean of each plane: `[C, N, 1, 1]`.
pub fn global_avg_pool(x: &[f32], d: Dims) -> Vec<f32> {
    let n = d.plane() as f32;
    per_plane(x, d, 1, |src, dst| dst[0] = src.iter().sum::<f32>() / n)
}

/// `[C, N, H, W]` to feature-major `[C H W, N]` (features in `torch.flatten`'s order).
pub fn flatten(x: &[f32], d: Dims) -> Vec<f32> {
    if d.plane() == 1 || d.n == 1 {
        return x.to_vec();
    }
    let mut y = vec![0f32; x.len()];
    for ch in 0..d.c {
        for b in 0..d.n {
            for (s, &v) in x[(ch * d.n + b) * d.plane()..][..d.plane()]
                .iter()
                .enumerate()
            {
                y[(ch * d.plane() + s) * d.n + b] = v;
            }
        }
    }
    y
}

/// `x * scale + shift` per channel (an unfolded BatchNorm), then ReLU if `relu`. `x`
/// holds `scale.len()` channels of `per_channel` values each.
pub fn affine(mut x: Vec<f32>, scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    let per_channel = x.len() / scale.len();
    for ((chunk, &a), &b) in x.chunks_mut(per_channel).zip(scale).zip(shift) {
        for v in chunk {
            let y = *v * a + b;
            *v = if relu { y.max(0.0) } else { y };
        }
    }
    x
}

/// ReLU in place.
pub fn relu(mut x: Vec<f32>) -> Vec<f32> {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
    x
}

/// The sum of `xs` (all of one length), then ReLU if `relu`.
pub fn add(xs: &[&[f32]], relu: bool) -> Vec<f32> {
    let mut y = xs[0].to_vec();
    for x in &xs[1..] {
        y.iter_mut().zip(*x).for_each(|(a, b)| *a += b);
    }
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    y
}
