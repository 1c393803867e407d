//! BatchNorm recalibration ("adaptive BN", Li et al., EagleEye, ECCV 2020): forget every
//! BN's running statistics and re-estimate them from a few training batches, forward
//! passes only. Each BN normalises with its batch's statistics, as in training; the new
//! running mean and variance are the pooled statistics of all the batches (the variance
//! unbiased, as PyTorch stores it), so they do not depend on the batches' order.

use crate::data::ImageSet;
use crate::data::batches::{Batch, batch_at};
use crate::model::{GraphNet, values};
use burn::module::RunningState;
use burn::tensor::module::batch_norm_train;
use burn::tensor::{Device, Tensor, TensorData};

/// Per-channel sums over every value a BN saw: count, sum and sum of squares (f64).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pooled {
    count: f64,
    sum: Vec<f64>,
    squares: Vec<f64>,
}

impl Pooled {
    /// Adds one batch's per-channel mean and biased variance over `count` values each.
    pub(crate) fn add(&mut self, count: f64, mean: &[f32], var: &[f32]) {
        if self.sum.is_empty() {
            self.sum = vec![0.0; mean.len()];
            self.squares = vec![0.0; mean.len()];
        }
        for (c, (&m, &v)) in mean.iter().zip(var).enumerate() {
            let (m, v) = (f64::from(m), f64::from(v));
            self.sum[c] += count * m;
            self.squares[c] += count * (v + m * m);
        }
        self.count += count;
    }

    /// `(mean, unbiased variance)` per channel.
    pub(crate) fn stats(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.count;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let var = self
            .squares
            .iter()
            .zip(&mean)
            .map(|(q, m)| ((q / n - m * m).max(0.0) * n / (n - 1.0).max(1.0)) as f32)
            .collect();
        (mean.into_iter().map(|m| m as f32).collect(), var)
    }
}

/// The BN statistics pooled over `batches` (one forward pass each, BN in train mode).
pub fn pooled_bn_stats(
    model: &GraphNet,
    batches: &[Batch],
    device: &Device,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut pooled = vec![Pooled::default(); model.bns.len()];
    for b in batches {
        model.forward_with(super::images_tensor(b, device), |bn, x| {
            let Some((i, bn)) = bn else { return x };
            let [n, _, h, w] = x.dims();
            let r = batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
            pooled[i].add(
                (n * h * w) as f64,
                &values(r.mean).data,
                &values(r.variance).data,
            );
            r.output
        });
    }
    pooled.iter().map(Pooled::stats).collect()
}

/// The first `batches` batches of `batch_size` images of a `seed`ed shuffle of `set`,
/// without augmentation: the calibration images every candidate sees.
pub fn calibration_batches(
    set: &ImageSet,
    batches: usize,
    batch_size: usize,
    seed: u64,
) -> Vec<Batch> {
    let plan = crate::data::batches::EpochPlan {
        batch_size,
        seed: Some(seed),
        limit: Some(batches * batch_size),
    };
    crate::data::batches::epoch_order(set.len(), &plan)
        .chunks(batch_size.max(1))
        .map(|chunk| batch_at(set, chunk, None))
        .collect()
}

/// `model` with every BN's running statistics re-estimated from `batches` batches of
/// `batch_size` training images of `set` (the first ones of a `seed`ed shuffle, without
/// augmentation: the statistics serve evaluation on un-augmented images). Every caller
/// with the same set, sizes and seed uses the same images.
pub fn recalibrate_bn(
    mut model: GraphNet,
    set: &ImageSet,
    batches: usize,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> GraphNet {
    let batches = calibration_batches(set, batches, batch_size, seed);
    if batches.is_empty() {
        return model;
    }
    let stats = pooled_bn_stats(&model, &batches, device);
    for (bn, (mean, var)) in model.bns.iter_mut().zip(stats) {
        let c = mean.len();
        bn.running_mean = RunningState::new(Tensor::from_data(TensorData::new(mean, [c]), device));
        bn.running_var = RunningState::new(Tensor::from_data(TensorData::new(var, [c]), device));
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;
    use crate::weights::Weights;

    fn random_set(n: usize, seed: u64) -> ImageSet {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        };
        ImageSet {
            pixels: (0..n * crate::data::IMAGE_BYTES).map(|_| next()).collect(),
            labels: (0..n as u32).map(|i| i % 3).collect(),
            ..ImageSet::default()
        }
    }

    fn model(device: &Device) -> GraphNet {
        let mut arch = ArchSpec::parse("cfg_bn:4,M,6,5").unwrap().build(3);
        arch.decompose("features.4", 2, 3).unwrap();
        let graph = crate::graph::build::of_arch(&arch);
        GraphNet::from_weights(&graph, Weights::init(&arch, 7), "mem", device).unwrap()
    }

    fn running(m: &GraphNet) -> Vec<(Vec<f32>, Vec<f32>)> {
        m.bns
            .iter()
            .map(|b| {
                (
                    values(b.running_mean.value()).data,
                    values(b.running_var.value()).data,
                )
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    /// One batch: every BN's new statistics are those burn's own train-mode BatchNorm
    /// computes for the batch (momentum 1), its biased variance made unbiased.
    #[test]
    fn one_batch_gives_burns_train_mode_statistics() {
        let device = Device::flex();
        let set = random_set(6, 1);
        let got = running(&recalibrate_bn(model(&device), &set, 1, 6, 3, &device));

        let ad = device.clone().autodiff();
        let mut reference = model(&ad);
        for bn in &mut reference.bns {
            bn.momentum = 1.0;
        }
        let b = &calibration_batches(&set, 1, 6, 3)[0];
        let _ = reference.forward_reference(crate::train::images_tensor(b, &ad));
        // Values per channel each BN saw: batch x h x w (32x32, 16x16 after the pool).
        for ((mean, var), (bn, n)) in got
            .iter()
            .zip(reference.bns.iter().zip([6144.0, 1536.0, 1536.0]))
        {
            close(mean, &values(bn.running_mean.value_sync()).data, 1e-4);
            let unbiased: Vec<f32> = values(bn.running_var.value_sync())
                .data
                .iter()
                .map(|v| v * n / (n - 1.0))
                .collect();
            close(var, &unbiased, 1e-4);
        }
    }

    /// Two batches: the first BN's statistics are the mean and unbiased variance of the
    /// first conv's outputs over all images of both batches, computed directly.
    #[test]
    fn two_batches_pool_like_one_direct_computation() {
        let device = Device::flex();
        let set = random_set(10, 2);
        let m = model(&device);
        // The same two batches, as one batch of 8 images.
        let direct_input = {
            let images: Vec<f32> = calibration_batches(&set, 2, 4, 5)
                .into_iter()
                .flat_map(|b| b.images)
                .collect();
            let x = Tensor::<4>::from_data(TensorData::new(images, [8, 3, 32, 32]), &device);
            m.convs[0]
                .forward(x)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let got = running(&recalibrate_bn(m.clone(), &set, 2, 4, 5, &device));
        let (channels, plane) = (4, 32 * 32);
        for c in 0..channels {
            let vals: Vec<f64> = (0..8)
                .flat_map(|i| {
                    let start = (i * channels + c) * plane;
                    direct_input[start..start + plane]
                        .iter()
                        .map(|&v| f64::from(v))
                })
                .collect();
            let n = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            close(&[got[0].0[c]], &[mean as f32], 1e-4);
            close(&[got[0].1[c]], &[var as f32], 1e-4);
        }
        // The model's weights are untouched; only running statistics change.
        let before = m.to_weights();
        let after = recalibrate_bn(m, &set, 2, 4, 5, &device).to_weights();
        for (k, v) in &before.tensors {
            if !k.contains("running") {
                assert_eq!(v, &after.tensors[k], "{k}");
            }
        }
    }
}
