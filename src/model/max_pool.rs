//! 2x2 max-pooling with stride 2 as an op of the flex CPU backend: one pass over each
//! `[H, W]` plane forward, and backward one pass that recomputes each window's maximum
//! and routes the gradient to it (the first maximum in row-major order, as PyTorch's
//! `max_pool2d` does). Runs of whole planes run in parallel. `tests` checks the output and the input
//! gradient against burn's `MaxPool2d`.

use super::flex::{Flat, tensor, values};
use super::profile::{Op, timed};
use super::simd::vectorized;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use rayon::prelude::*;

#[backend_extension(Flex, Autodiff)]
pub trait MaxPoolBackend: Backend {
    /// `[A, B, H, W]` -> `[A, B, H / 2, W / 2]`, each value the maximum of its 2x2 window
    /// (`H` and `W` even).
    fn max_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Index within the window `[a, b, c, d]` (row-major) of its first maximum.
fn arg_max(window: [f32; 4]) -> usize {
    let mut best = 0;
    for k in 1..4 {
        if window[k] > window[best] {
            best = k;
        }
    }
    best
}

/// [`pool`], timed for the profile.
fn forward(x: &Flat) -> Flat {
    timed(Op::PoolForward, || pool(x))
}

/// Each 2x2 window's maximum, plane by plane.
fn pool(x: &Flat) -> Flat {
    let [a, b, h, w] = x.layout().shape().dims::<4>();
    tensor(pool_values(&values(x), h, w), [a, b, h / 2, w / 2])
}

/// Input values a task takes at least: a 2x2 pool runs at some 20 values a
/// nanosecond, so a smaller task would cost more in rayon's hand-off than it pools
/// (a batch-1 map of vgg19_bn pools in 2-4 µs on one thread).
const MIN_TASK_VALUES: usize = 1 << 17;

/// [`pool`] on values: planes of `h x w` (both even) in, of `h/2 x w/2` out. The
/// inference engine's 2x2 pooling too.
pub(super) fn pool_values(xs: &[f32], h: usize, w: usize) -> Vec<f32> {
    assert!(
        h.is_multiple_of(2) && w.is_multiple_of(2),
        "2x2 pooling of an odd map"
    );
    let (plane, out_plane) = (h * w, h * w / 4);
    let mut y = vec![0f32; xs.len() / 4];
    let planes = MIN_TASK_VALUES.div_ceil(plane);
    let task = |(y, x): (&mut [f32], &[f32])| {
        vectorized(
            #[inline(always)]
            || pool_planes(x, y, w),
        )
    };
    if xs.len() <= MIN_TASK_VALUES {
        task((&mut y, xs));
    } else {
        y.par_chunks_mut(planes * out_plane)
            .zip(xs.par_chunks(planes * plane))
            .for_each(task);
    }
    y
}

/// 2x2 pooling of whole planes `x` (rows of `w`) into `y`, written so that it
/// vectorises: each output row from two input rows, window by window.
#[inline(always)]
fn pool_planes(x: &[f32], y: &mut [f32], w: usize) {
    // A NaN wins, as in PyTorch's pool (`val > max || isnan(val)`); `f32::max` would
    // drop it.
    let max = |a: f32, b: f32| if a > b || a.is_nan() { a } else { b };
    for (out, rows) in y.chunks_exact_mut(w / 2).zip(x.chunks_exact(2 * w)) {
        let (r0, r1) = rows.split_at(w);
        for ((o, a), b) in out
            .iter_mut()
            .zip(r0.chunks_exact(2))
            .zip(r1.chunks_exact(2))
        {
            *o = max(max(a[0], b[0]), max(a[1], b[1]));
        }
    }
}

/// Each window's gradient goes to its first maximum, zero to the other three; the
/// windows tile each plane, so every value of `dx` is written once.
fn backward(x: &Flat, dy: &Flat) -> Flat {
    let [a, b, h, w] = x.layout().shape().dims::<4>();
    let (xs, dys) = (values(x), values(dy));
    let (oh, ow) = (h / 2, w / 2);
    let total = a * b * h * w;
    let mut dx = Vec::<f32>::with_capacity(total);
    dx.spare_capacity_mut()[..total]
        .par_chunks_mut(h * w)
        .zip(xs.par_chunks(h * w).zip(dys.par_chunks(oh * ow)))
        .for_each(|(dx, (x, dy))| {
            for (oy, (rows, dy)) in dx.chunks_mut(2 * w).zip(dy.chunks(ow)).enumerate() {
                let (d0, d1) = rows.split_at_mut(w);
                let (r0, r1) = (&x[2 * oy * w..][..w], &x[(2 * oy + 1) * w..][..w]);
                for (ox, &g) in dy.iter().enumerate() {
                    let (u, v) = (2 * ox, 2 * ox + 1);
                    let k = arg_max([r0[u], r0[v], r1[u], r1[v]]);
                    let at = |q: usize| if q == k { g } else { 0.0 };
                    d0[u].write(at(0));
                    d0[v].write(at(1));
                    d1[u].write(at(2));
                    d1[v].write(at(3));
                }
            }
        });
    // SAFETY: each plane's `oh` row pairs hold `ow` windows of 2x2, which cover its
    // `h x w` values (h and w even, checked by the forward pass), each written above.
    unsafe { dx.set_len(total) };
    tensor(dx, [a, b, h, w])
}

impl MaxPoolBackend for Flex {
    fn max_pool_2x2(x: Flat) -> Flat {
        forward(&x)
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// The input (shared storage, not a copy).
    type State = Flat;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        if let [Some(node)] = ops.parents {
            let dx = timed(Op::PoolBackward, || backward(&ops.state, &dy));
            grads.register::<Flex>(node.id, dx);
        }
    }
}

impl<C: CheckpointStrategy> MaxPoolBackend for Autodiff<Flex, C> {
    fn max_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node()];
        let x = x.into_primitive();
        let y = forward(&x);
        match MaxPoolBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(x, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Dispatch;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Device, Distribution, Tensor};

    fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn ours(x: Tensor<4>) -> Tensor<4> {
        Tensor::from_dispatch(<Dispatch as MaxPoolBackend>::max_pool_2x2(
            x.into_dispatch(),
        ))
    }

    /// Output and input gradient against burn's MaxPool2d, on random values and on a
    /// ReLU'd input full of tied zeros.
    /// A NaN anywhere in a window makes its maximum NaN (PyTorch's rule), and the
    /// windows beside it are untouched.
    #[test]
    fn a_nan_in_a_window_wins() {
        for at in [0, 1, 4, 5] {
            let mut x: Vec<f32> = (0..16).map(|v| v as f32).collect();
            x[at] = f32::NAN;
            let y = pool_values(&x, 4, 4);
            assert!(y[0].is_nan(), "NaN at {at}: window maximum {}", y[0]);
            assert_eq!(&y[1..], &[7.0, 13.0, 15.0], "NaN at {at}: other windows");
        }
    }

    #[test]
    fn pooling_matches_burns_max_pool2d() {
        let d = Device::flex().autodiff();
        let pool = MaxPool2dConfig::new([2, 2]).init();
        for (dims, relu) in [
            ([2, 3, 4, 6], false),
            ([1, 1, 2, 2], false),
            ([3, 2, 8, 8], true),
        ] {
            let mut x0 = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &d);
            if relu {
                x0 = burn::tensor::activation::relu(x0);
            }
            let [a, b, h, w] = dims;
            let g = Tensor::<4>::random([a, b, h / 2, w / 2], Distribution::Normal(0.0, 1.0), &d);
            let run = |mine: bool| {
                let x = x0.clone().detach().require_grad();
                let y = if mine {
                    ours(x.clone())
                } else {
                    pool.forward(x.clone())
                };
                let grads = (y.clone() * g.clone()).sum().backward();
                (flat(y), flat(x.grad(&grads).unwrap()))
            };
            assert_eq!(run(true), run(false), "{dims:?}, relu {relu}");
        }
    }
}
