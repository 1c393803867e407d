//! Layers on activations kept channel-major (`[C, N, H, W]`): there a 1x1 conv (two of
//! every Tucker unit) is one matrix product over all the batch's pixels, instead of one
//! small product per image in burn's `conv2d`. Built from burn's differentiable tensor
//! ops, so autodiff derives both gradients; `tests` checks outputs and gradients against
//! burn's own `conv2d` and `BatchNorm`.

use super::bn_relu::{BnReluBackend, BnReluEvalBackend};
use super::conv_gemm::ConvBackend;
use super::max_pool::MaxPoolBackend;
use burn::backend::Dispatch;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::activation;
use burn::tensor::{Device, Tensor};

/// `[N, C, H, W]` -> `[C, N, H, W]` (and back: the swap is its own inverse).
pub fn swap_batch_channels(x: Tensor<4>) -> Tensor<4> {
    x.swap_dims(0, 1)
}

/// Whether `device` is the flex CPU backend (with or without autodiff), where our
/// kernels run.
fn on_flex(device: &Device) -> bool {
    *device == Device::flex() || *device == Device::flex().autodiff()
}

fn padding(conv: &Conv2d) -> Option<usize> {
    match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && t == b && t == r => Some(t),
        PaddingConfig2d::Valid => Some(0),
        _ => None,
    }
}

/// `conv` applied to channel-major `x` (`[C, N, H, W]`), output channel-major. With
/// stride 1, no dilation, one group and the same zero padding on every side, it is one
/// matrix product over the whole batch: on the flex CPU backend
/// [`conv_gemm`](super::conv_gemm)'s kernel (a 1x1 conv's columns are the input itself,
/// a larger kernel's come from im2col), elsewhere, for a 1x1 conv, burn's
/// `[out, in] x [in, N*H*W]` matmul. Anything else goes through burn's `conv2d`.
pub fn conv(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [k, kw] = conv.kernel_size;
    let padding = padding(conv)
        .filter(|_| conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1);
    let [out_c, ..] = conv.weight.dims();
    let device = x.device();
    match padding {
        Some(0) if k == 1 && kw == 1 && !on_flex(&device) => {
            let [c, n, h, w] = x.dims();
            let weight = conv.weight.val().reshape([out_c, c]);
            let mut y = weight.matmul(x.reshape([c, n * h * w]));
            if let Some(b) = &conv.bias {
                y = y + b.val().reshape([out_c, 1]);
            }
            y.reshape([out_c, n, h, w])
        }
        Some(p) if k == kw && on_flex(&device) => {
            let bias = match &conv.bias {
                Some(b) => b.val(),
                None => Tensor::zeros([out_c], &device),
            };
            Tensor::from_dispatch(<Dispatch as ConvBackend>::conv_cnhw(
                x.into_dispatch(),
                conv.weight.val().into_dispatch(),
                bias.into_dispatch(),
                p,
            ))
        }
        _ => swap_batch_channels(conv.forward(swap_batch_channels(x))),
    }
}

/// The model's 2x2, stride-2 max-pooling of `x` (any layout: it works plane by plane):
/// [`max_pool`](super::max_pool)'s kernel on the flex CPU backend for even maps,
/// burn's `MaxPool2d` otherwise.
pub fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [.., h, w] = x.dims();
    if !(on_flex(&x.device()) && h % 2 == 0 && w % 2 == 0) {
        return pool.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as MaxPoolBackend>::max_pool_2x2(
        x.into_dispatch(),
    ))
}

/// `bn` applied to channel-major `x`, train or inference as it decides: the fused kernel
/// of [`batch_norm_relu`] without its ReLU on the flex CPU backend, burn's layer elsewhere.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    fused(bn, x, false)
}

/// `relu(bn(x))` on channel-major `x`. On the flex CPU backend this is a fused kernel
/// ([`bn_relu`](super::bn_relu)): inference with the running statistics, or training,
/// which updates them as burn's BatchNorm does. Anything else goes through burn's layers.
pub fn batch_norm_relu(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    fused(bn, x, true)
}

/// [`batch_norm_relu`], or [`batch_norm`] without `relu`.
fn fused(bn: &BatchNorm, x: Tensor<4>, relu: bool) -> Tensor<4> {
    let device = x.device();
    let flex = on_flex(&device);
    if flex && !device.is_autodiff() {
        let y = <Dispatch as BnReluEvalBackend>::bn_relu_eval(
            x.into_dispatch(),
            bn.gamma.val().into_dispatch(),
            bn.beta.val().into_dispatch(),
            bn.running_mean.value().into_dispatch(),
            bn.running_var.value().into_dispatch(),
            bn.epsilon,
            relu,
        );
        return Tensor::from_dispatch(y);
    }
    if !(flex && bn.training.is_enabled()) {
        let y = swap_batch_channels(bn.forward(swap_batch_channels(x)));
        return if relu { activation::relu(y) } else { y };
    }
    let (y, mean, var) = <Dispatch as BnReluBackend>::bn_relu_train(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
        relu,
    );
    let m = bn.momentum;
    for (state, batch) in [(&bn.running_mean, mean), (&bn.running_var, var)] {
        let batch = Tensor::<1>::from_dispatch(batch);
        let running = state.value_sync().to_device(&batch.device());
        let updated = running
            .mul_scalar(1.0 - m)
            .add(batch.detach().mul_scalar(m));
        state.update(updated.detach());
    }
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::simd::{Level, with_level};
    use burn::module::Param;
    use burn::tensor::{Device, Distribution};

    fn conv_of(out_c: usize, in_c: usize, k: usize, p: usize, bias: bool, d: &Device) -> Conv2d {
        let w = Tensor::<4>::random([out_c, in_c, k, k], Distribution::Normal(0.0, 1.0), d);
        let b = Tensor::<1>::random([out_c], Distribution::Normal(0.0, 1.0), d);
        Conv2d {
            weight: Param::from_tensor(w),
            bias: bias.then(|| Param::from_tensor(b)),
            stride: [1, 1],
            kernel_size: [k, k],
            dilation: [1, 1],
            groups: 1,
            padding: PaddingConfig2d::Explicit(p, p, p, p),
        }
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn assert_close(name: &str, ours: Vec<f32>, theirs: Vec<f32>) {
        assert_eq!(ours.len(), theirs.len(), "{name}: length");
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "{name}[{i}]: {a} vs burn {b} (max |burn| {scale})"
            );
        }
    }

    /// Output and both gradients of `conv` against burn's `Conv2d::forward` (NCHW), with
    /// a random upstream gradient so that every output element is weighted differently.
    fn check(n: usize, in_c: usize, out_c: usize, hw: usize, k: usize, p: usize, bias: bool) {
        let d = Device::flex().autodiff();
        let layer = conv_of(out_c, in_c, k, p, bias, &d);
        let x0 = Tensor::<4>::random([n, in_c, hw, hw], Distribution::Normal(0.0, 1.0), &d);
        let o = hw + 2 * p + 1 - k;
        let g = Tensor::<4>::random([n, out_c, o, o], Distribution::Normal(0.0, 1.0), &d);
        let run = |ours: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if ours {
                swap_batch_channels(conv(&layer, swap_batch_channels(x.clone())))
            } else {
                layer.forward(x.clone())
            };
            let grads = (y.clone() * g.clone()).sum().backward();
            let gx = x.grad(&grads).unwrap();
            let gw = layer.weight.val().grad(&grads).unwrap();
            let gb = layer
                .bias
                .as_ref()
                .map(|b| values(b.val().grad(&grads).unwrap()));
            (values(y), values(gx), values(gw), gb)
        };
        let (ours, theirs) = (run(true), run(false));
        let case = format!("n{n} c{in_c}->{out_c} {hw}x{hw} k{k} p{p}");
        assert_close(&format!("{case} output"), ours.0, theirs.0);
        assert_close(&format!("{case} input grad"), ours.1, theirs.1);
        assert_close(&format!("{case} weight grad"), ours.2, theirs.2);
        if let (Some(a), Some(b)) = (ours.3, theirs.3) {
            assert_close(&format!("{case} bias grad"), a, b);
        }
    }

    #[test]
    fn conv_matches_burns_conv2d_with_both_gradients() {
        check(3, 7, 2, 4, 1, 0, false); // Tucker first 1x1, pruned-looking counts
        check(2, 4, 6, 5, 1, 0, true); // 1x1 with bias (a Tucker unit's last conv)
        check(1, 1, 3, 2, 1, 0, true); // batch 1, one channel, 2x2 map
        check(4, 5, 3, 16, 1, 0, true); // weight gradient split over threads
        // The whole-batch im2col product:
        check(2, 3, 5, 8, 3, 1, true); // RGB input, odd channel count
        check(1, 1, 4, 2, 3, 1, false); // batch 1, one channel, 2x2 map
        check(3, 4, 3, 4, 3, 1, false); // 4x4 map, pruned-looking counts
        check(2, 3, 3, 6, 3, 0, true); // valid 3x3
        check(2, 2, 3, 5, 5, 2, true); // 5x5 same
        check(2, 2, 2, 3, 5, 1, true); // kernel wider than map plus padding on one side
        // Few output pixels and many weights (`skinny`): 4 pixels with C k k = 1224
        // (not a multiple of 16 lanes), 3 (not a multiple of 4 pixels), 8 over two
        // images, and a 1x1.
        check(1, 136, 216, 2, 3, 1, true);
        check(3, 128, 240, 1, 3, 1, false);
        check(2, 120, 256, 2, 3, 1, true);
        check(2, 520, 512, 2, 1, 0, true);
        // Blocks of images one after the other, every thread on each (two of 1 + 1 on
        // two threads), and in parallel, one per thread (20 of one image each).
        let two_threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        two_threads.install(|| {
            check(3, 16, 4, 64, 3, 1, true);
            check(20, 8, 4, 32, 3, 1, true);
            check(20, 8, 4, 32, 3, 1, false); // without a bias (products write y)
        });
    }

    /// Winograd's forward, input and weight gradients (16 channels or more
    /// on both sides, 64 tiles or more): odd maps whose last tiles hang over the edge,
    /// 1x1 and 2x2 maps, one chunk after the other with the products shared, and chunks
    /// one per thread (8 images, 2 each); each compiled for every instruction set this
    /// CPU has (AVX-512, AVX2, baseline), see `simd`.
    #[test]
    fn winograd_matches_burns_conv2d_on_every_instruction_set() {
        let two_threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for level in Level::ALL {
            with_level(level, || {
                check(8, 16, 16, 5, 3, 1, true);
                check(64, 17, 20, 2, 3, 1, false);
                check(64, 16, 16, 1, 3, 1, true);
                check(4, 24, 16, 7, 3, 1, false);
                two_threads.install(|| {
                    check(8, 16, 16, 32, 3, 1, true);
                    check(8, 16, 17, 31, 3, 1, false);
                    // One image overflows a chunk: bands of tile rows, one per thread,
                    // the last hanging over an odd map's edge.
                    check(2, 16, 16, 63, 3, 1, true);
                });
            });
        }
    }

    #[test]
    fn batch_norm_in_either_layout_agrees() {
        let d = Device::flex().autodiff();
        let bn = burn::nn::BatchNormConfig::new(3).init(&d);
        let x = Tensor::<4>::random([4, 3, 2, 2], Distribution::Normal(1.0, 2.0), &d);
        let ours = swap_batch_channels(batch_norm(&bn, swap_batch_channels(x.clone())));
        let bn2 = burn::nn::BatchNormConfig::new(3).init(&d);
        assert_close("bn", values(ours), values(bn2.forward(x)));
    }
}
