//! Train-mode BatchNorm followed by ReLU (or alone: `relu = false`, a residual block's
//! last BatchNorm, whose output meets the shortcut before its ReLU) as one op of the
//! flex CPU backend, on
//! channel-major activations (`[C, N, H, W]`, so each channel's values are contiguous):
//! two passes over the activation forward (statistics; normalise, scale, ReLU) and two
//! backward (the two per-channel sums; the input gradient), each parallel over channels.
//! burn's generic `batch_norm_train`, its backward and the ReLU take about a dozen tensor
//! passes with layout copies. The maths is burn's (batch mean and biased variance,
//! `ModuleOps::batch_norm_train[_backward]`), written out per channel: with
//! `h = (x - mean) / sqrt(var + eps)` and `g = dy` where the output is positive,
//! `dbeta = sum g`, `dgamma = sum g h`, `dx = gamma / sqrt(var + eps) * (g - dbeta / M - h dgamma / M)`.
//! `tests` checks output, statistics and all three gradients against burn's own layers.

use super::flex::{Flat, tensor, values};
use super::profile::{Op, timed};
use super::simd::vectorized;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, backend_extension};
use burn::tensor::Shape;
use rayon::prelude::*;

#[backend_extension(Flex, Autodiff)]
pub trait BnReluBackend: Backend {
    /// `relu(batch_norm(x))` (`batch_norm(x)` without `relu`) with the batch's
    /// statistics: `x` channel-major `[C, ...]`, `gamma` and `beta` `[C]`. Returns the
    /// output, the batch mean and the biased batch variance (`[C]` each; the last two
    /// carry no gradient).
    fn bn_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Inference: `relu(batch_norm(x))` with given statistics, on channel-major `x` (flex
/// only; autodiff devices take burn's layers).
#[backend_extension(Flex)]
pub trait BnReluEvalBackend: Backend {
    /// `x` channel-major `[C, ...]`; `gamma`, `beta`, `mean` and `var` `[C]`; the ReLU
    /// only with `relu`.
    fn bn_relu_eval(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// `sum f(a_i, b_i)`, each term in f32, summed in four f64 lanes (so that it vectorises
/// and cancelling sums such as the gradients' keep their precision).
#[inline(always)]
fn sum_by(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut lanes = [0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(&u, &v)| f64::from(f(u, v)))
        .sum();
    for (u, v) in ac.zip(bc) {
        for l in 0..4 {
            lanes[l] += f64::from(f(u[l], v[l]));
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// BatchNorm of one channel as `x * scale + shift`.
#[inline(always)]
fn scale_shift(gamma: f32, beta: f32, mean: f32, var: f32, epsilon: f64) -> (f32, f32) {
    let scale = gamma * inv_std(var, epsilon);
    (scale, beta - mean * scale)
}

/// `y = relu(x * scale + shift)` (without `relu`, `x * scale + shift`), one channel.
#[inline(always)]
fn normalize_relu(y: &mut [f32], x: &[f32], scale: f32, shift: f32, relu: bool) {
    if relu {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = (v * scale + shift).max(0.0);
        }
    } else {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v * scale + shift;
        }
    }
}

#[inline(always)]
fn inv_std(var: f32, epsilon: f64) -> f32 {
    (1.0 / (f64::from(var) + epsilon).sqrt()) as f32
}

/// [`statistics_and_output`], timed for the profile.
fn forward(x: &Flat, gamma: &Flat, beta: &Flat, epsilon: f64, relu: bool) -> (Flat, Flat, Flat) {
    timed(Op::BnReluForward, || {
        statistics_and_output(x, gamma, beta, epsilon, relu)
    })
}

/// Per channel: mean and biased variance (two passes, f64 sums), then the output.
fn statistics_and_output(
    x: &Flat,
    gamma: &Flat,
    beta: &Flat,
    epsilon: f64,
    relu: bool,
) -> (Flat, Flat, Flat) {
    let shape = x.layout().shape().clone();
    let channels = shape[0];
    let (xs, gs, bs) = (values(x), values(gamma), values(beta));
    let m = xs.len() / channels;
    let mut y = vec![0f32; xs.len()];
    let stats: Vec<(f32, f32)> = y
        .par_chunks_mut(m)
        .zip(xs.par_chunks(m))
        .enumerate()
        .map(|(c, (y, x))| {
            vectorized(
                #[inline(always)]
                || {
                    let mean = (sum_by(x, x, |v, _| v) / m as f64) as f32;
                    let var = (sum_by(x, x, |v, _| (v - mean) * (v - mean)) / m as f64) as f32;
                    let (scale, shift) = scale_shift(gs[c], bs[c], mean, var, epsilon);
                    normalize_relu(y, x, scale, shift, relu);
                    (mean, var)
                },
            )
        })
        .collect();
    let (mean, var) = stats.into_iter().unzip();
    let stat_shape = Shape::new([channels]);
    (
        tensor(y, shape),
        tensor(mean, stat_shape.clone()),
        tensor(var, stat_shape),
    )
}

/// The forward op's inputs and statistics, what its backward reads.
type Saved = (Flat, Flat, Flat, Flat, Flat, f64, bool);

/// Gradients `(dx, dgamma, dbeta)` for upstream gradient `dy`.
fn backward(saved: &Saved, dy: &Flat) -> (Flat, Flat, Flat) {
    let (x, gamma, beta, mean, var, epsilon, relu) = saved;
    let (epsilon, relu) = (*epsilon, *relu);
    let shape = x.layout().shape().clone();
    let channels = shape[0];
    let (xs, dys) = (values(x), values(dy));
    let (gs, bs, ms, vs) = (values(gamma), values(beta), values(mean), values(var));
    let m = xs.len() / channels;
    let mut dx = vec![0f32; xs.len()];
    let sums: Vec<(f32, f32)> = dx
        .par_chunks_mut(m)
        .zip(xs.par_chunks(m).zip(dys.par_chunks(m)))
        .enumerate()
        .map(|(c, (dx, (x, dy)))| {
            vectorized(
                #[inline(always)]
                || channel_backward(dx, x, dy, m, (gs[c], bs[c], ms[c], vs[c]), epsilon, relu),
            )
        })
        .collect();
    let (dgamma, dbeta) = sums.into_iter().unzip();
    let stat_shape = Shape::new([channels]);
    (
        tensor(dx, shape),
        tensor(dgamma, stat_shape.clone()),
        tensor(dbeta, stat_shape),
    )
}

/// One channel's `dx` (written) and `(dgamma, dbeta)`, from its `x`, `dy`, its
/// `(gamma, beta, mean, var)` and the ReLU's mask when `relu`.
#[inline(always)]
fn channel_backward(
    dx: &mut [f32],
    x: &[f32],
    dy: &[f32],
    m: usize,
    (gamma, beta, mu, var): (f32, f32, f32, f32),
    epsilon: f64,
    relu: bool,
) -> (f32, f32) {
    let inv = inv_std(var, epsilon);
    let (scale, shift) = scale_shift(gamma, beta, mu, var, epsilon);
    // Pass 1: the ReLU's mask (none without it) and the two sums.
    let live = |v: f32, g: f32| {
        if !relu || v * scale + shift > 0.0 {
            g
        } else {
            0.0
        }
    };
    let dbeta = sum_by(x, dy, live);
    let dgamma = sum_by(x, dy, |v, g| live(v, g) * (v - mu) * inv);
    // Pass 2: the input gradient.
    let (db, dg) = ((dbeta / m as f64) as f32, (dgamma / m as f64) as f32);
    for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        *o = scale * (live(v, g) - db - (v - mu) * inv * dg);
    }
    (dgamma as f32, dbeta as f32)
}

impl BnReluEvalBackend for Flex {
    fn bn_relu_eval(
        x: Flat,
        gamma: Flat,
        beta: Flat,
        mean: Flat,
        var: Flat,
        eps: f64,
        relu: bool,
    ) -> Flat {
        timed(Op::BnReluInference, || {
            inference(x, (gamma, beta, mean, var), eps, relu)
        })
    }
}

/// Inference: `relu(x * scale + shift)` per channel (no ReLU without `relu`), in `x`'s
/// own buffer when nothing else holds it (as a conv's fresh output). `bn` holds gamma,
/// beta, mean and variance.
fn inference(mut x: Flat, bn: (Flat, Flat, Flat, Flat), eps: f64, relu: bool) -> Flat {
    let (gamma, beta, mean, var) = bn;
    let shape = x.layout().shape().clone();
    let (gs, bs) = (values(&gamma), values(&beta));
    let (ms, vs) = (values(&mean), values(&var));
    let affine: Vec<(f32, f32)> = (0..shape[0])
        .map(|c| scale_shift(gs[c], bs[c], ms[c], vs[c], eps))
        .collect();
    let m = shape.num_elements() / shape[0];
    if let Some((start, end)) = x.layout().contiguous_offsets()
        && let Some(storage) = x.try_storage_mut::<f32>()
    {
        storage[start..end]
            .par_chunks_mut(m)
            .zip(&affine)
            .for_each(|(y, &(scale, shift))| {
                let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
                vectorized(
                    #[inline(always)]
                    || {
                        for v in y {
                            *v = (*v * scale + shift).max(floor);
                        }
                    },
                )
            });
        return x;
    }
    let xs = values(&x);
    let mut y = vec![0f32; xs.len()];
    y.par_chunks_mut(m)
        .zip(xs.par_chunks(m))
        .zip(&affine)
        .for_each(|((y, x), &(scale, shift))| {
            vectorized(
                #[inline(always)]
                || normalize_relu(y, x, scale, shift, relu),
            )
        });
    tensor(y, shape)
}

impl BnReluBackend for Flex {
    fn bn_relu_train(
        x: Flat,
        gamma: Flat,
        beta: Flat,
        epsilon: f64,
        relu: bool,
    ) -> (Flat, Flat, Flat) {
        forward(&x, &gamma, &beta, epsilon, relu)
    }
}

#[derive(Debug)]
struct BnReluBackward;

impl Backward<Flex, 3> for BnReluBackward {
    /// Input, gamma, beta, batch mean and variance (shared storage, not copies),
    /// epsilon, and whether the ReLU follows.
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (dx, dgamma, dbeta) = timed(Op::BnReluBackward, || backward(&ops.state, &dy));
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> BnReluBackend for Autodiff<Flex, C> {
    fn bn_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        let (y, mean, var) = forward(&x, &gamma, &beta, epsilon, relu);
        let stats = (
            Self::from_inner(mean.clone()),
            Self::from_inner(var.clone()),
        );
        let y = match BnReluBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, gamma, beta, mean, var, epsilon, relu), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, stats.0, stats.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::simd::{Level, with_level};
    use burn::backend::Dispatch;
    use burn::module::Param;
    use burn::nn::BatchNormConfig;
    use burn::tensor::activation::relu;
    use burn::tensor::{Device, Distribution, Tensor};

    fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn assert_close(name: &str, ours: Vec<f32>, theirs: Vec<f32>) {
        assert_eq!(ours.len(), theirs.len(), "{name}: length");
        let scale = theirs.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale + 1e-6,
                "{name}[{i}]: {a} vs burn {b} (max |burn| {scale})"
            );
        }
    }

    /// Output, batch statistics and the gradients of x, gamma and beta against burn's
    /// BatchNorm (train mode), and its relu with `with_relu`, on the same input in
    /// batch-major layout.
    fn check(n: usize, c: usize, hw: usize, with_relu: bool) {
        let d = Device::flex().autodiff();
        let x0 = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.5, 2.0), &d);
        let g = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.0, 1.0), &d);
        let mut bn = BatchNormConfig::new(c).init(&d);
        bn.gamma = Param::from_tensor(Tensor::random([c], Distribution::Normal(1.0, 0.5), &d));
        bn.beta = Param::from_tensor(Tensor::random([c], Distribution::Normal(0.0, 0.5), &d));
        let gradients = |y: Tensor<4>, x: &Tensor<4>| {
            let grads = (y * g.clone()).sum().backward();
            [
                flat(x.grad(&grads).unwrap()),
                flat(bn.gamma.val().grad(&grads).unwrap()),
                flat(bn.beta.val().grad(&grads).unwrap()),
            ]
        };
        let x = x0.clone().require_grad();
        let theirs_y = bn.forward(x.clone());
        let theirs_y = if with_relu { relu(theirs_y) } else { theirs_y };
        let theirs = (flat(theirs_y.clone()), gradients(theirs_y, &x));
        let theirs_mean = flat(
            x0.clone()
                .swap_dims(0, 1)
                .reshape([c, n * hw * hw])
                .mean_dim(1),
        );

        let x = x0.clone().require_grad();
        let (y, mean, _var) = <Dispatch as BnReluBackend>::bn_relu_train(
            x.clone().swap_dims(0, 1).into_dispatch(),
            bn.gamma.val().into_dispatch(),
            bn.beta.val().into_dispatch(),
            bn.epsilon,
            with_relu,
        );
        let y = Tensor::<4>::from_dispatch(y).swap_dims(0, 1);
        let ours = (flat(y.clone()), gradients(y, &x));
        let case = format!("n{n} c{c} {hw}x{hw} relu {with_relu}");
        assert_close(&format!("{case} output"), ours.0, theirs.0);
        assert_close(
            &format!("{case} mean"),
            flat(Tensor::<1>::from_dispatch(mean)),
            theirs_mean,
        );
        for (k, (a, b)) in ours.1.into_iter().zip(theirs.1).enumerate() {
            assert_close(&format!("{case} gradient {k}"), a, b);
        }
    }

    /// Inference with running statistics against burn's BatchNorm on an inference device,
    /// compiled for every instruction set this CPU has (see `simd`).
    #[test]
    fn fused_inference_matches_burns_batch_norm_and_relu() {
        for level in Level::ALL {
            with_level(level, inference_matches_burn);
        }
    }

    fn inference_matches_burn() {
        let d = Device::flex();
        let (n, c, hw) = (3, 4, 5);
        let x = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.5, 2.0), &d);
        let mut bn = BatchNormConfig::new(c).init(&d);
        let stat = |mean, std| Tensor::<1>::random([c], Distribution::Normal(mean, std), &d);
        bn.gamma = Param::from_tensor(stat(1.0, 0.5));
        bn.beta = Param::from_tensor(stat(0.0, 0.5));
        bn.running_mean = burn::module::RunningState::new(stat(0.3, 0.5));
        bn.running_var = burn::module::RunningState::new(stat(2.0, 0.5).abs());
        use super::super::cnhw::{batch_norm, batch_norm_relu};
        for with_relu in [true, false] {
            let theirs = bn.forward(x.clone());
            let theirs = flat(if with_relu { relu(theirs) } else { theirs });
            // The model's calls on an inference device, which take this kernel.
            let run = |x: Tensor<4>| {
                let y = if with_relu {
                    batch_norm_relu(&bn, x)
                } else {
                    batch_norm(&bn, x)
                };
                flat(y.swap_dims(0, 1))
            };
            // A strided view of a shared buffer (written to a new one), and a contiguous
            // tensor nothing else holds (normalised in place).
            let view = x.clone().swap_dims(0, 1);
            let own = Tensor::<4>::from_data(view.to_data(), &d);
            assert_close("inference, view", run(view), theirs.clone());
            assert_close("inference, in place", run(own), theirs);
        }
    }

    /// Training forward and backward, compiled for every instruction set this CPU has
    /// (see `simd`).
    #[test]
    fn fused_bn_relu_matches_burns_batch_norm_and_relu() {
        for level in Level::ALL {
            with_level(level, || {
                for with_relu in [true, false] {
                    check(4, 3, 5, with_relu);
                    check(1, 1, 2, with_relu); // batch 1, one channel, 2x2 map
                    check(16, 7, 4, with_relu);
                    check(2, 3, 9, with_relu); // 162 values a channel: a vector tail
                }
            });
        }
    }
}
