//! Exact cost counter: params, MACs, FLOPs and model size of any [`Arch`].
//!
//! Convention (reproduces the reference's 796.79 MFLOPs for vgg19_bn/CIFAR-100):
//! - FLOPs: 2 x MACs of convs and linears, plus 1 per output element of a layer with a
//!   bias, plus 4 per max-pool (2x2) output element; BatchNorm and ReLU are free.
//! - Params: conv weights and biases, BN weight and bias, linear weight and bias.
//! - Size: 4 bytes x (params and BN running mean and var).

use crate::arch::{Arch, ConvSpec, Unit};
use serde::Serialize;

/// Kind of a counted layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    Conv,
    BatchNorm,
    MaxPool,
    /// Average pooling, windowed or global.
    AvgPool,
    /// A residual sum.
    Add,
    Linear,
}

/// Cost of one layer. `in`/`out` are channels (features for the classifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerCost {
    pub name: String,
    pub kind: LayerKind,
    #[serde(rename = "in")]
    pub in_channels: usize,
    #[serde(rename = "out")]
    pub out_channels: usize,
    pub params: u64,
    pub macs: u64,
    pub flops: u64,
    /// Non-trainable f32 values stored with the layer (BN running mean and var).
    #[serde(skip)]
    pub buffers: u64,
}

/// Totals and per-layer rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cost {
    pub params: u64,
    pub macs: u64,
    pub flops: u64,
    pub size_bytes: u64,
    pub layers: Vec<LayerCost>,
}

impl Cost {
    /// The totals of `layers`: their params, MACs and FLOPs summed, the size 4 bytes per
    /// param and buffer.
    pub fn of_layers(layers: Vec<LayerCost>) -> Self {
        let params = layers.iter().map(|l| l.params).sum();
        let buffers: u64 = layers.iter().map(|l| l.buffers).sum();
        Cost {
            params,
            macs: layers.iter().map(|l| l.macs).sum(),
            flops: layers.iter().map(|l| l.flops).sum(),
            size_bytes: 4 * (params + buffers),
            layers,
        }
    }

    pub fn mflops(&self) -> f64 {
        self.flops as f64 / 1e6
    }

    pub fn mparams(&self) -> f64 {
        self.params as f64 / 1e6
    }

    /// Model size in MB (10^6 bytes).
    pub fn size_mb(&self) -> f64 {
        self.size_bytes as f64 / 1e6
    }
}

fn conv_cost(conv: &ConvSpec, in_size: usize) -> LayerCost {
    let out_size = conv.out_size(in_size);
    let out_elems = (conv.out_channels * out_size * out_size) as u64;
    let weights = (conv.out_channels * conv.in_channels * conv.kernel * conv.kernel) as u64;
    let macs = out_elems * (conv.in_channels * conv.kernel * conv.kernel) as u64;
    let bias = u64::from(conv.bias);
    LayerCost {
        name: conv.name.clone(),
        kind: LayerKind::Conv,
        in_channels: conv.in_channels,
        out_channels: conv.out_channels,
        params: weights + bias * conv.out_channels as u64,
        macs,
        flops: 2 * macs + bias * out_elems,
        buffers: 0,
    }
}

/// Counts every layer of `arch` for one input image.
pub fn count(arch: &Arch) -> Cost {
    let sizes = arch.spatial_sizes();
    let mut layers = Vec::new();
    let mut channels = arch.input[0];
    for (ui, unit) in arch.units.iter().enumerate() {
        match unit {
            Unit::Conv(c) => {
                let mut size = sizes[ui];
                for conv in c.body.convs() {
                    layers.push(conv_cost(conv, size));
                    size = conv.out_size(size);
                }
                channels = c.body.out_channels();
                if let Some(bn) = &c.bn {
                    layers.push(LayerCost {
                        name: bn.clone(),
                        kind: LayerKind::BatchNorm,
                        in_channels: channels,
                        out_channels: channels,
                        params: 2 * channels as u64,
                        macs: 0,
                        flops: 0,
                        buffers: 2 * channels as u64,
                    });
                }
            }
            Unit::MaxPool { name } => {
                let out = sizes[ui] / 2;
                layers.push(LayerCost {
                    name: name.clone(),
                    kind: LayerKind::MaxPool,
                    in_channels: channels,
                    out_channels: channels,
                    params: 0,
                    macs: 0,
                    flops: 4 * (channels * out * out) as u64,
                    buffers: 0,
                });
            }
            Unit::Linear(l) => {
                let macs = (l.in_features * l.out_features) as u64;
                layers.push(LayerCost {
                    name: l.name.clone(),
                    kind: LayerKind::Linear,
                    in_channels: l.in_features,
                    out_channels: l.out_features,
                    params: macs + l.out_features as u64,
                    macs,
                    flops: 2 * macs + l.out_features as u64,
                    buffers: 0,
                });
                channels = l.out_features;
            }
        }
    }
    Cost::of_layers(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;

    #[test]
    fn vgg19_bn_cifar100_matches_reference() {
        let cost = count(&ArchSpec::parse("vgg19_bn").unwrap().build(100));
        assert_eq!(cost.params, 20_086_692);
        assert_eq!(format!("{:.2}", cost.mflops()), "796.79");
    }

    #[test]
    fn hand_counted_tiny_net() {
        // conv 3->2 (3x3, bias) on 4x4, BN(2), pool -> 2x2, linear 8->3.
        let mut arch = ArchSpec::parse("cfg_bn:2,M").unwrap().build(3);
        arch.input = [3, 4, 4];
        if let Unit::Linear(l) = arch.units.last_mut().unwrap() {
            l.in_features = 8;
        }
        arch.check().unwrap();
        let c = count(&arch);
        // conv: 2*3*9 + 2 = 56 params; MACs = 2*4*4 outputs * 27 = 864.
        // BN 4 params; linear 8*3+3 = 27 params, 24 MACs.
        assert_eq!(c.params, 56 + 4 + 27);
        assert_eq!(c.macs, 864 + 24);
        // FLOPs: 2*864 + 32 bias + 4*8 pool + 2*24 + 3 bias.
        assert_eq!(c.flops, 1728 + 32 + 32 + 48 + 3);
        assert_eq!(c.size_bytes, 4 * (87 + 4));
    }

    #[test]
    fn tucker_unit_is_three_convs() {
        let mut arch = ArchSpec::parse("cfg:4,8").unwrap().build(2);
        arch.decompose("features.2", 3, 5).unwrap();
        let c = count(&arch);
        let conv = |n: &str| c.layers.iter().find(|l| l.name == n).unwrap().clone();
        assert_eq!(conv("features.2_tucker_0").params, 4 * 3);
        assert_eq!(conv("features.2_tucker_1").params, 3 * 5 * 9);
        assert_eq!(conv("features.2_tucker_2").params, 5 * 8 + 8);
        assert_eq!(conv("features.2_tucker_1").macs, 32 * 32 * 5 * 3 * 9);
        assert_eq!(
            conv("features.2_tucker_2").flops,
            2 * 32 * 32 * 8 * 5 + 32 * 32 * 8
        );
    }
}
