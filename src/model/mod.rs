//! The burn `Vgg` module, built from an [`Arch`] (any mix of plain and Tucker units,
//! any channel counts) and converted to and from [`Weights`].

mod bn_relu;
mod cnhw;
mod conv_gemm;
mod flex;
mod graph_net;
pub mod infer;
pub mod latency;
mod max_pool;
mod memory;
pub mod profile;
pub mod simd;
mod skinny;
mod winograd;

pub use graph_net::{GraphNet, expected_shapes as graph_weight_shapes};
pub use infer::Engine;

/// A model that maps images `[batch, C, H, W]` to logits `[batch, classes]`: what
/// evaluation needs of [`Vgg`] and [`GraphNet`] alike.
pub trait Classifier {
    fn logits(&self, x: Tensor<4>) -> Tensor<2>;
}

impl Classifier for Vgg {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}

impl Classifier for GraphNet {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}
pub use memory::keep_freed_memory;

use crate::arch::{Arch, ConvSpec, Unit};
use crate::weights::{TensorF32, Weights, WeightsError};
use burn::module::{Module, Param, ParamId, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

/// A VGG-style network whose layout is `arch`.
#[derive(Module, Debug)]
pub struct Vgg {
    /// Every conv and Tucker sub-conv, in execution order.
    pub convs: Vec<Conv2d>,
    /// One BatchNorm per conv unit that has one, in order.
    pub bns: Vec<BatchNorm>,
    pub classifier: Linear,
    pool: MaxPool2d,
    #[module(skip)]
    pub arch: Arch,
}

/// A tensor on `device` with `t`'s values and shape.
pub(crate) fn tensor<const D: usize>(t: &TensorF32, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

/// A parameter whose id is derived from its weights key (FNV-1a), so that optimizer
/// state saved in one process matches the same parameter after a reload.
fn param<const D: usize>(w: &Weights, key: &str, device: &Device) -> Param<Tensor<D>> {
    param_of(&w.tensors[key], key, device)
}

fn param_of<const D: usize>(t: &TensorF32, key: &str, device: &Device) -> Param<Tensor<D>> {
    let id = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut p = Param::from_tensor(tensor(t, device));
    p.id = ParamId::from(id);
    p
}

/// The tensor's values on the host, with its shape.
pub(crate) fn values<const D: usize>(t: Tensor<D>) -> TensorF32 {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor data");
    TensorF32::new(shape, data)
}

/// The conv `spec` with its weights (and bias) from `w`.
pub(crate) fn conv_from(spec: &ConvSpec, w: &Weights, device: &Device) -> Conv2d {
    let p = spec.padding;
    Conv2d {
        weight: param(w, &format!("{}.weight", spec.name), device),
        bias: spec
            .bias
            .then(|| param(w, &format!("{}.bias", spec.name), device)),
        stride: [spec.stride; 2],
        kernel_size: [spec.kernel; 2],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(p, p, p, p),
    }
}

/// The BatchNorm `name` with its parameters and running statistics from `w`.
pub(crate) fn bn_from(name: &str, w: &Weights, device: &Device) -> BatchNorm {
    let get = |field: &str| tensor::<1>(&w.tensors[&format!("{name}.{field}")], device);
    BatchNorm {
        gamma: param(w, &format!("{name}.weight"), device),
        beta: param(w, &format!("{name}.bias"), device),
        training: Param::from_bool(true),
        running_mean: RunningState::new(get("running_mean")),
        running_var: RunningState::new(get("running_var")),
        momentum: 0.1,
        epsilon: 1e-5,
    }
}

/// `[r, c]` -> `[c, r]`.
fn transpose2(t: &TensorF32) -> TensorF32 {
    let (r, c) = (t.shape[0], t.shape[1]);
    let data = (0..c)
        .flat_map(|j| (0..r).map(move |i| t.data[i * c + j]))
        .collect();
    TensorF32::new(vec![c, r], data)
}

impl Vgg {
    /// Builds the model for `arch` from `weights` (checked against `arch` first).
    pub fn from_weights(
        arch: &Arch,
        weights: Weights,
        file: &str,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let w = weights.matched_to(arch, file)?;
        let mut convs = Vec::new();
        let mut bns = Vec::new();
        let mut classifier = None;
        for unit in &arch.units {
            match unit {
                Unit::Conv(c) => {
                    convs.extend(c.body.convs().iter().map(|s| conv_from(s, &w, device)));
                    bns.extend(c.bn.iter().map(|name| bn_from(name, &w, device)));
                }
                Unit::MaxPool { .. } => {}
                Unit::Linear(l) => {
                    // PyTorch stores [out, in]; burn's row layout is [in, out].
                    // Transposed on the host, so the parameter stays a leaf of the autodiff graph.
                    let key = format!("{}.weight", l.name);
                    let weight = param_of::<2>(&transpose2(&w.tensors[&key]), &key, device);
                    classifier = Some(Linear {
                        weight,
                        bias: Some(param(&w, &format!("{}.bias", l.name), device)),
                    });
                }
            }
        }
        Ok(Self {
            convs,
            bns,
            classifier: classifier.expect("a checked architecture has a classifier"),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            arch: arch.clone(),
        })
    }

    /// Fresh model with torchvision's VGG initialisation (see [`Weights::init`]).
    pub fn init(arch: &Arch, seed: u64, device: &Device) -> Self {
        Self::from_weights(arch, Weights::init(arch, seed), "<init>", device)
            .expect("init weights fit their arch")
    }

    /// All tensors with PyTorch keys and layouts, BN running statistics included.
    pub fn to_weights(&self) -> Weights {
        let mut tensors = indexmap::IndexMap::new();
        let mut convs = self.convs.iter();
        let mut bns = self.bns.iter();
        for unit in &self.arch.units {
            match unit {
                Unit::Conv(c) => {
                    for spec in c.body.convs() {
                        let conv = convs.next().expect("one Conv2d per spec");
                        tensors.insert(format!("{}.weight", spec.name), values(conv.weight.val()));
                        if let Some(b) = &conv.bias {
                            tensors.insert(format!("{}.bias", spec.name), values(b.val()));
                        }
                    }
                    if let Some(name) = &c.bn {
                        let bn = bns.next().expect("one BatchNorm per bn name");
                        tensors.insert(format!("{name}.weight"), values(bn.gamma.val()));
                        tensors.insert(format!("{name}.bias"), values(bn.beta.val()));
                        tensors.insert(
                            format!("{name}.running_mean"),
                            values(bn.running_mean.value()),
                        );
                        tensors.insert(
                            format!("{name}.running_var"),
                            values(bn.running_var.value()),
                        );
                    }
                }
                Unit::MaxPool { .. } => {}
                Unit::Linear(l) => {
                    tensors.insert(
                        format!("{}.weight", l.name),
                        values(self.classifier.weight.val().transpose()),
                    );
                    let bias = self
                        .classifier
                        .bias
                        .as_ref()
                        .expect("classifier has a bias");
                    tensors.insert(format!("{}.bias", l.name), values(bias.val()));
                }
            }
        }
        Weights { tensors }
    }

    /// Logits `[batch, classes]` for images `[batch, 3, H, W]`. Runs channel-major, every
    /// conv one matrix product over the whole batch ([`cnhw`]).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = cnhw::swap_batch_channels(x);
        let mut convs = self.convs.iter();
        let mut bns = self.bns.iter();
        for u in &self.arch.units {
            match u {
                Unit::Conv(c) => {
                    for _ in c.body.convs() {
                        x = cnhw::conv(convs.next().expect("one Conv2d per spec"), x);
                    }
                    x = match c.bn {
                        Some(_) => {
                            let bn = bns.next().expect("one BatchNorm per bn name");
                            cnhw::batch_norm_relu(bn, x)
                        }
                        None => relu(x),
                    };
                }
                // Pooling works on each [H, W] plane alone, so the layout does not matter.
                Unit::MaxPool { .. } => x = cnhw::max_pool(&self.pool, x),
                Unit::Linear(_) => {
                    let [c, b, h, w] = x.dims();
                    let x = cnhw::swap_batch_channels(x).reshape([b, c * h * w]);
                    return self.classifier.forward(x);
                }
            }
        }
        unreachable!("a checked architecture ends with its classifier")
    }

    /// The same logits as [`Self::forward`], computed batch-major with burn's own conv2d
    /// (the reference the channel-major path is tested against).
    pub fn forward_reference(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_with(x, |_, bn, x| match bn {
            Some((_, bn)) => bn.forward(x),
            None => x,
        })
    }

    /// [`Self::forward`] with `unit(u, bn, x)` in place of conv unit `u`'s BatchNorm:
    /// `x` is the unit's conv output, `bn` its BatchNorm with its index among the BNs
    /// (`None` without one); what it returns goes through the ReLU.
    pub fn forward_with(
        &self,
        x: Tensor<4>,
        mut unit: impl FnMut(usize, Option<(usize, &BatchNorm)>, Tensor<4>) -> Tensor<4>,
    ) -> Tensor<2> {
        let mut x = x;
        let mut convs = self.convs.iter();
        let mut bns = self.bns.iter().enumerate();
        let mut units = 0;
        for u in &self.arch.units {
            match u {
                Unit::Conv(c) => {
                    for _ in c.body.convs() {
                        x = convs.next().expect("one Conv2d per spec").forward(x);
                    }
                    let bn =
                        c.bn.as_ref()
                            .map(|_| bns.next().expect("one BatchNorm per bn name"));
                    x = unit(units, bn, x);
                    units += 1;
                    x = relu(x);
                }
                Unit::MaxPool { .. } => x = self.pool.forward(x),
                Unit::Linear(_) => {
                    let [b, c, h, w] = x.dims();
                    return self.classifier.forward(x.reshape([b, c * h * w]));
                }
            }
        }
        unreachable!("a checked architecture ends with its classifier")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;

    #[test]
    fn weights_round_trip_through_the_model_bit_exact() {
        let device = Device::flex();
        let mut arch = ArchSpec::parse("cfg_bn:4,M,6").unwrap().build(3);
        arch.decompose("features.4", 2, 3).unwrap();
        let w = Weights::init(&arch, 1);
        let model = Vgg::from_weights(&arch, w.clone(), "mem", &device).unwrap();
        assert_eq!(model.to_weights(), w);
        let y = model.forward(Tensor::zeros([2, 3, 32, 32], &device));
        assert_eq!(y.dims(), [2, 3]);
    }

    /// The channel-major forward against burn's batch-major layers: logits, an input
    /// gradient, every conv's weight gradient and the BN running statistics after a step,
    /// then inference logits.
    #[test]
    fn channel_major_forward_matches_burns_layers() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let device = Device::flex().autodiff();
        let mut arch = ArchSpec::parse("cfg_bn:4,M,6,M,5").unwrap().build(3);
        arch.decompose("features.4", 2, 3).unwrap();
        arch.decompose("features.8", 3, 1).unwrap();
        let w = Weights::init(&arch, 3);
        // Seeded input, so that a run is repeatable (burn's `random` is not seeded).
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let data: Vec<f32> = (0..3 * 3 * 32 * 32)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let x0 = Tensor::<4>::from_data(TensorData::new(data, [3, 3, 32, 32]), &device);
        let run = |reference: bool| {
            let model = Vgg::from_weights(&arch, w.clone(), "mem", &device).unwrap();
            let x = x0.clone().require_grad();
            let y = if reference {
                model.forward_reference(x.clone())
            } else {
                model.forward(x.clone())
            };
            let weights = Tensor::<2>::from_floats([[1.0, -2.0, 0.5]], &device);
            let grads = (y.clone() * weights).sum().backward();
            let mut all = vec![values(y.inner()).data, values(x.grad(&grads).unwrap()).data];
            for conv in &model.convs {
                all.push(values(conv.weight.val().grad(&grads).unwrap()).data);
            }
            for bn in &model.bns {
                all.push(values(bn.running_var.value()).data);
            }
            all
        };
        let (ours, theirs) = (run(false), run(true));
        // Inference (running statistics, no autodiff) as well.
        let model = Vgg::from_weights(&arch, w.clone(), "mem", &Device::flex()).unwrap();
        let x = x0.clone().inner();
        let inference = [
            values(model.forward(x.clone())).data,
            values(model.forward_reference(x)).data,
        ];
        let ours: Vec<_> = ours.into_iter().chain([inference[0].clone()]).collect();
        let theirs: Vec<_> = theirs.into_iter().chain([inference[1].clone()]).collect();
        assert_eq!(ours.len(), theirs.len());
        for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                // Each kernel matches burn's op within 1e-4 (their own tests); through a
                // whole network float32 rounding compounds (a weight gradient sums
                // hundreds of products far larger than the result), hence 1e-3.
                assert!(
                    (p - q).abs() <= 1e-3 * scale + 1e-6,
                    "tensor {k}[{i}]: {p} vs {q}"
                );
            }
        }
    }
}
