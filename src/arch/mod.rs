//! Plain, serializable description of a VGG-style network.
//!
//! Every other part of rankprune reads this: the cost counter, the layer-config
//! validator, weight surgery and the burn model's `init`. Channel counts here are the
//! *current* ones, so pruning is a change of numbers in this structure.

mod vgg;

pub use vgg::{ArchSpec, ArchSpecError, MAX_POOLS, VggCfgItem, vgg_cfg};

use serde::{Deserialize, Serialize};

/// A 2-D convolution as it appears in the network (PyTorch layout `[out, in, k, k]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvSpec {
    pub name: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// Output spatial size for an input of `size` (square maps only).
    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel) / self.stride + 1
    }
}

/// The Tucker-2 replacement of one conv: 1x1 in->r_in, kxk r_in->r_out, 1x1 r_out->out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TuckerSpec {
    /// Name of the conv this replaces (`features.3`); sub-convs are `NAME_tucker_i`.
    pub name: String,
    pub convs: [ConvSpec; 3],
}

/// What computes a conv unit's output channels: one conv, or a Tucker-2 chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConvBody {
    Plain(ConvSpec),
    Tucker(TuckerSpec),
}

impl ConvBody {
    /// Name of the (original) layer, e.g. `features.3`.
    pub fn name(&self) -> &str {
        match self {
            ConvBody::Plain(c) => &c.name,
            ConvBody::Tucker(t) => &t.name,
        }
    }

    /// The convs in execution order (one, or three for a Tucker unit).
    pub fn convs(&self) -> &[ConvSpec] {
        match self {
            ConvBody::Plain(c) => std::slice::from_ref(c),
            ConvBody::Tucker(t) => &t.convs,
        }
    }

    pub(crate) fn convs_mut(&mut self) -> &mut [ConvSpec] {
        match self {
            ConvBody::Plain(c) => std::slice::from_mut(c),
            ConvBody::Tucker(t) => &mut t.convs,
        }
    }

    pub fn in_channels(&self) -> usize {
        self.convs()[0].in_channels
    }

    pub fn out_channels(&self) -> usize {
        self.convs().last().expect("a body has a conv").out_channels
    }
}

/// A conv unit: conv (or Tucker chain) -> optional BatchNorm -> ReLU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvUnit {
    pub body: ConvBody,
    /// PyTorch name of the BatchNorm2d after the conv (`features.1`), if any.
    pub bn: Option<String>,
}

/// The final Linear layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearSpec {
    pub name: String,
    pub in_features: usize,
    pub out_features: usize,
}

/// One step of the feature extractor or the classifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "unit", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // a few dozen units per network: boxing buys nothing
pub enum Unit {
    Conv(ConvUnit),
    /// 2x2 max-pool with stride 2 (`name` is its PyTorch index, for tables only).
    MaxPool {
        name: String,
    },
    Linear(LinearSpec),
}

/// The layer that reads a conv's output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// A conv's input channels.
    Conv(ConvPos),
    /// The Linear unit at `unit`; each channel owns `per_channel` consecutive features.
    Linear { unit: usize, per_channel: usize },
}

/// A whole network: input shape and the ordered units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    /// Model name as written in configs (`vgg19_bn`).
    pub model: String,
    /// Input shape `[channels, height, width]`.
    pub input: [usize; 3],
    pub units: Vec<Unit>,
}

/// Where a layer sits in an [`Arch`]: unit index and conv index inside that unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPos {
    pub unit: usize,
    pub conv: usize,
}

impl Arch {
    /// Number of classes (the classifier's output size).
    pub fn num_classes(&self) -> usize {
        self.classifier().out_features
    }

    pub fn classifier(&self) -> &LinearSpec {
        self.units
            .iter()
            .rev()
            .find_map(|u| match u {
                Unit::Linear(l) => Some(l),
                _ => None,
            })
            .expect("an architecture ends with a Linear classifier")
    }

    /// Conv units in order.
    pub fn conv_units(&self) -> impl Iterator<Item = &ConvUnit> {
        self.units.iter().filter_map(|u| match u {
            Unit::Conv(c) => Some(c),
            _ => None,
        })
    }

    /// Every conv and Tucker sub-conv, in execution order.
    pub fn convs(&self) -> impl Iterator<Item = &ConvSpec> {
        self.conv_units().flat_map(|u| u.body.convs().iter())
    }

    /// Names of the original conv layers (`features.0`, ...), decomposed or not.
    pub fn layer_names(&self) -> Vec<String> {
        self.conv_units()
            .map(|u| u.body.name().to_string())
            .collect()
    }

    /// Position of the conv or sub-conv called `name` (`features.3`, `features.3_tucker_1`).
    pub fn find_conv(&self, name: &str) -> Option<ConvPos> {
        self.units.iter().enumerate().find_map(|(ui, u)| match u {
            Unit::Conv(c) => c
                .body
                .convs()
                .iter()
                .position(|s| s.name == name)
                .map(|ci| ConvPos { unit: ui, conv: ci }),
            _ => None,
        })
    }

    /// The conv unit whose original layer is called `name`.
    pub fn find_unit(&self, name: &str) -> Option<(usize, &ConvUnit)> {
        self.units.iter().enumerate().find_map(|(i, u)| match u {
            Unit::Conv(c) if c.body.name() == name => Some((i, c)),
            _ => None,
        })
    }

    pub fn conv(&self, pos: ConvPos) -> &ConvSpec {
        match &self.units[pos.unit] {
            Unit::Conv(c) => &c.body.convs()[pos.conv],
            _ => panic!("unit {} is not a conv unit", pos.unit),
        }
    }

    /// Spatial size (square) of the feature map entering each unit, and after the last.
    pub fn spatial_sizes(&self) -> Vec<usize> {
        let mut size = self.input[1];
        let mut sizes = Vec::with_capacity(self.units.len() + 1);
        for unit in &self.units {
            sizes.push(size);
            match unit {
                Unit::Conv(c) => size = c.body.convs().iter().fold(size, |s, k| k.out_size(s)),
                Unit::MaxPool { .. } => size /= 2,
                Unit::Linear(_) => size = 1,
            }
        }
        sizes.push(size);
        sizes
    }

    /// Replaces the plain conv of unit `name` with a Tucker-2 chain of ranks
    /// `[in_rank, out_rank]`; the bias moves to `_tucker_2`.
    pub fn decompose(&mut self, name: &str, in_rank: usize, out_rank: usize) -> Result<(), String> {
        let Some((ui, _)) = self.find_unit(name) else {
            return Err(format!("no conv layer called {name}"));
        };
        let Unit::Conv(unit) = &mut self.units[ui] else {
            unreachable!()
        };
        let ConvBody::Plain(conv) = &unit.body else {
            return Err(format!("{name} is already decomposed"));
        };
        let sub = |i: usize, cin, cout, kernel, stride, padding, bias| ConvSpec {
            name: format!("{name}_tucker_{i}"),
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            padding,
            bias,
        };
        let convs = [
            sub(0, conv.in_channels, in_rank, 1, 1, 0, false),
            sub(
                1,
                in_rank,
                out_rank,
                conv.kernel,
                conv.stride,
                conv.padding,
                false,
            ),
            sub(2, out_rank, conv.out_channels, 1, 1, 0, conv.bias),
        ];
        unit.body = ConvBody::Tucker(TuckerSpec {
            name: name.to_string(),
            convs,
        });
        Ok(())
    }

    /// Who reads the output channels of the conv at `pos`: the next conv (the next
    /// sub-conv inside a Tucker unit), or the classifier. The BN in between, if any, is
    /// [`Arch::bn_after`].
    pub fn consumer(&self, pos: ConvPos) -> Option<Consumer> {
        let Unit::Conv(unit) = &self.units[pos.unit] else {
            panic!("unit {} is not a conv unit", pos.unit)
        };
        if pos.conv + 1 < unit.body.convs().len() {
            return Some(Consumer::Conv(ConvPos {
                unit: pos.unit,
                conv: pos.conv + 1,
            }));
        }
        let sizes = self.spatial_sizes();
        self.units
            .iter()
            .enumerate()
            .skip(pos.unit + 1)
            .find_map(|(ui, next)| match next {
                Unit::Conv(_) => Some(Consumer::Conv(ConvPos { unit: ui, conv: 0 })),
                Unit::Linear(_) => Some(Consumer::Linear {
                    unit: ui,
                    per_channel: sizes[ui] * sizes[ui],
                }),
                Unit::MaxPool { .. } => None,
            })
    }

    /// The BatchNorm that normalises the output of the conv at `pos`, if any (only the
    /// last conv of a unit has one).
    pub fn bn_after(&self, pos: ConvPos) -> Option<&str> {
        match &self.units[pos.unit] {
            Unit::Conv(c) if pos.conv + 1 == c.body.convs().len() => c.bn.as_deref(),
            _ => None,
        }
    }

    /// Sets the number of output channels of the conv at `pos` and shrinks every
    /// consumer of those channels: the next conv's inputs, or the classifier's input
    /// features (h*w features per channel). The BN follows the conv's count.
    pub fn set_out_channels(&mut self, pos: ConvPos, out: usize) {
        assert!(out >= 1, "a conv keeps at least one filter");
        let consumer = self.consumer(pos);
        self.conv_mut(pos).out_channels = out;
        match consumer {
            Some(Consumer::Conv(next)) => self.conv_mut(next).in_channels = out,
            Some(Consumer::Linear { unit, per_channel }) => {
                if let Unit::Linear(l) = &mut self.units[unit] {
                    l.in_features = out * per_channel;
                }
            }
            None => {}
        }
    }

    fn conv_mut(&mut self, pos: ConvPos) -> &mut ConvSpec {
        match &mut self.units[pos.unit] {
            Unit::Conv(c) => &mut c.body.convs_mut()[pos.conv],
            _ => panic!("unit {} is not a conv unit", pos.unit),
        }
    }

    /// Checks that every unit's inputs match what the previous unit produces.
    pub fn check(&self) -> Result<(), String> {
        let sizes = self.spatial_sizes();
        let mut channels = self.input[0];
        for (ui, unit) in self.units.iter().enumerate() {
            match unit {
                Unit::Conv(c) => {
                    for conv in c.body.convs() {
                        if conv.in_channels != channels {
                            return Err(format!(
                                "{} takes {} input channels but receives {channels}",
                                conv.name, conv.in_channels
                            ));
                        }
                        if conv.out_channels == 0 {
                            return Err(format!("{} has no filters", conv.name));
                        }
                        channels = conv.out_channels;
                    }
                }
                Unit::MaxPool { name } => {
                    if sizes[ui] < 2 {
                        return Err(format!("max-pool {name} receives a {0}x{0} map", sizes[ui]));
                    }
                }
                Unit::Linear(l) => {
                    let expect = channels * sizes[ui] * sizes[ui];
                    if l.in_features != expect {
                        return Err(format!(
                            "{} takes {} features but receives {expect}",
                            l.name, l.in_features
                        ));
                    }
                    channels = l.out_features;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg19_bn_names_match_pytorch_indexing() {
        let arch = ArchSpec::parse("vgg19_bn").unwrap().build(100);
        let names: Vec<String> = arch.layer_names();
        let want = [0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49];
        let want: Vec<String> = want.iter().map(|i| format!("features.{i}")).collect();
        assert_eq!(names, want);
        let bns: Vec<String> = arch.conv_units().map(|u| u.bn.clone().unwrap()).collect();
        assert_eq!(bns[0], "features.1");
        assert_eq!(bns[15], "features.50");
        assert_eq!(arch.classifier().in_features, 512);
        assert_eq!(arch.num_classes(), 100);
        arch.check().unwrap();
    }

    #[test]
    fn plain_vgg_indexing_has_no_bn_slots() {
        let arch = ArchSpec::parse("vgg11").unwrap().build(10);
        // vgg11 without BN: conv, relu, pool, conv, relu, pool, conv, relu, conv ...
        let names = arch.layer_names();
        assert_eq!(
            &names[..4],
            ["features.0", "features.3", "features.6", "features.8"]
        );
        assert!(arch.conv_units().all(|u| u.bn.is_none()));
    }

    #[test]
    fn decompose_then_prune_propagates_channels() {
        let mut arch = ArchSpec::parse("cfg_bn:8,M,16,M").unwrap().build(10);
        arch.decompose("features.4", 5, 6).unwrap();
        arch.check().unwrap();
        let pos = arch.find_conv("features.4_tucker_0").unwrap();
        arch.set_out_channels(pos, 3);
        assert_eq!(
            arch.conv(arch.find_conv("features.4_tucker_1").unwrap())
                .in_channels,
            3
        );
        let pos = arch.find_conv("features.4_tucker_2").unwrap();
        arch.set_out_channels(pos, 10);
        // 32 -> 16 -> 8 after two pools: 10 channels of 8x8 each.
        assert_eq!(arch.classifier().in_features, 10 * 8 * 8);
        let pos = arch.find_conv("features.0").unwrap();
        arch.set_out_channels(pos, 2);
        assert_eq!(
            arch.conv(arch.find_conv("features.4_tucker_0").unwrap())
                .in_channels,
            2
        );
        arch.check().unwrap();
    }
}
