//! Graphs of the architectures rankprune knows: VGG (from its unit list, [`from_arch`])
//! and ResNets with BasicBlocks ([`ResNetSpec`]).

use super::{Conv, Graph, GraphError, INPUT, NodeDef, Op, Window};
use crate::arch::{Arch, Unit};

/// Appends nodes, each reading the previous one unless told otherwise.
struct Builder {
    defs: Vec<NodeDef>,
    last: String,
}

impl Builder {
    fn new() -> Self {
        Builder {
            defs: Vec::new(),
            last: INPUT.to_string(),
        }
    }

    /// Adds `name` reading `inputs`; returns its name.
    fn node_from(&mut self, name: &str, op: Op, inputs: Vec<String>) -> String {
        self.defs.push(NodeDef {
            name: name.to_string(),
            op,
            inputs,
        });
        self.last = name.to_string();
        self.last.clone()
    }

    /// Adds `name` reading the last node.
    fn node(&mut self, name: &str, op: Op) -> String {
        let from = vec![self.last.clone()];
        self.node_from(name, op, from)
    }
}

/// A conv op.
pub(crate) fn conv(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> Op {
    Op::Conv(Conv {
        in_channels: cin,
        out_channels: cout,
        kernel,
        stride,
        padding,
        bias,
    })
}

/// The graph of a VGG-style unit list, compressed or not: each conv (or Tucker
/// sub-conv), its BatchNorm and ReLU (`NAME.relu`), the max-pools, `flatten` and the
/// classifier.
pub fn from_arch(arch: &Arch) -> Result<Graph, GraphError> {
    let mut b = Builder::new();
    for unit in &arch.units {
        match unit {
            Unit::Conv(u) => {
                for c in u.body.convs() {
                    b.node(
                        &c.name,
                        conv(
                            c.in_channels,
                            c.out_channels,
                            c.kernel,
                            c.stride,
                            c.padding,
                            c.bias,
                        ),
                    );
                }
                if let Some(bn) = &u.bn {
                    b.node(
                        bn,
                        Op::BatchNorm {
                            channels: u.body.out_channels(),
                        },
                    );
                }
                b.node(&format!("{}.relu", u.body.name()), Op::Relu);
            }
            Unit::MaxPool { name } => {
                let w = Window {
                    kernel: 2,
                    stride: 2,
                    padding: 0,
                };
                b.node(name, Op::MaxPool(w));
            }
            Unit::Linear(l) => {
                b.node("flatten", Op::Flatten);
                b.node(
                    &l.name,
                    Op::Linear {
                        in_features: l.in_features,
                        out_features: l.out_features,
                    },
                );
            }
        }
    }
    Graph::new(&arch.model, arch.input, b.defs)
}

/// [`from_arch`] of an architecture rankprune built or checked (its layer names,
/// shapes and weights keys unchanged): the graph training runs for a VGG plan.
pub fn of_arch(arch: &Arch) -> Graph {
    from_arch(arch).expect("a checked architecture is a valid graph")
}

/// A ResNet of BasicBlocks: He et al. (2016)'s CIFAR `resnet20/32/44/56/110` (three
/// stages of 16, 32, 64 channels) or torchvision's `resnet18/34` (four stages of 64 to
/// 512), with an optional width multiplier (`resnet20@2`, `resnet18@0.25`).
///
/// Shortcuts where the shape changes are 1x1 projections with BatchNorm (option B of
/// the paper, torchvision's `downsample`), for both families; option A's zero-padding
/// has no parameters to load and no op in the graph. The stem is the CIFAR one (3x3
/// conv, stride 1, no max-pool) below 128x128 inputs, and torchvision's ImageNet stem
/// (7x7 conv, stride 2, 3x3 max-pool) from 128x128 up. Names are torchvision's:
/// `conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetSpec {
    pub text: String,
    /// Blocks per stage.
    pub blocks: Vec<usize>,
    /// Channels per stage (after the width multiplier); the stem has the first.
    pub widths: Vec<usize>,
}

/// Side from which the ImageNet stem is used.
pub const IMAGENET_STEM_FROM: usize = 128;

impl ResNetSpec {
    /// `resnet20`, `resnet56@0.5`, `resnet18`, ...; `None` for a name that is not one.
    pub fn parse(text: &str) -> Option<Result<Self, String>> {
        let (name, width) = match text.split_once('@') {
            Some((n, w)) => (n, Some(w)),
            None => (text, None),
        };
        let depth: usize = name.strip_prefix("resnet")?.parse().ok()?;
        let width = match width.map(str::parse::<f64>) {
            None => 1.0,
            Some(Ok(w)) if w.is_finite() && w > 0.0 => w,
            Some(_) => {
                return Some(Err(format!(
                    "{text:?}: the width after @ must be a positive number (resnet20@0.5)"
                )));
            }
        };
        let (blocks, widths): (Vec<usize>, Vec<usize>) = match depth {
            18 => (vec![2, 2, 2, 2], vec![64, 128, 256, 512]),
            34 => (vec![3, 4, 6, 3], vec![64, 128, 256, 512]),
            50 | 101 | 152 => {
                return Some(Err(format!(
                    "{text:?}: torchvision's Bottleneck ResNets are not supported; BasicBlock ones are (resnet18, resnet34, and the CIFAR resnet20, 32, 44, 56, 110)"
                )));
            }
            d if d >= 8 && (d - 2) % 6 == 0 => (vec![(d - 2) / 6; 3], vec![16, 32, 64]),
            _ => {
                return Some(Err(format!(
                    "{text:?}: allowed resnet20, resnet32, resnet44, resnet56, resnet110 (6n+2 layers) and resnet18, resnet34"
                )));
            }
        };
        let widths = widths
            .iter()
            .map(|&c| ((c as f64 * width).round() as usize).max(1))
            .collect();
        Some(Ok(ResNetSpec {
            text: text.to_string(),
            blocks,
            widths,
        }))
    }

    /// The graph for 3 x `side` x `side` inputs and `num_classes` outputs.
    pub fn build(&self, num_classes: usize, side: usize) -> Result<Graph, GraphError> {
        let mut b = Builder::new();
        let stem = self.widths[0];
        if side >= IMAGENET_STEM_FROM {
            b.node("conv1", conv(3, stem, 7, 2, 3, false));
        } else {
            b.node("conv1", conv(3, stem, 3, 1, 1, false));
        }
        b.node("bn1", Op::BatchNorm { channels: stem });
        b.node("relu", Op::Relu);
        if side >= IMAGENET_STEM_FROM {
            let w = Window {
                kernel: 3,
                stride: 2,
                padding: 1,
            };
            b.node("maxpool", Op::MaxPool(w));
        }
        let mut channels = stem;
        for (stage, (&blocks, &width)) in self.blocks.iter().zip(&self.widths).enumerate() {
            for block in 0..blocks {
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                let p = format!("layer{}.{block}", stage + 1);
                let input = b.last.clone();
                b.node(
                    &format!("{p}.conv1"),
                    conv(channels, width, 3, stride, 1, false),
                );
                b.node(&format!("{p}.bn1"), Op::BatchNorm { channels: width });
                b.node(&format!("{p}.relu1"), Op::Relu);
                b.node(&format!("{p}.conv2"), conv(width, width, 3, 1, 1, false));
                let main = b.node(&format!("{p}.bn2"), Op::BatchNorm { channels: width });
                let shortcut = if stride != 1 || channels != width {
                    b.node_from(
                        &format!("{p}.downsample.0"),
                        conv(channels, width, 1, stride, 0, false),
                        vec![input],
                    );
                    b.node(
                        &format!("{p}.downsample.1"),
                        Op::BatchNorm { channels: width },
                    )
                } else {
                    input
                };
                b.node_from(&format!("{p}.add"), Op::Add, vec![main, shortcut]);
                b.node(&format!("{p}.relu"), Op::Relu);
                channels = width;
            }
        }
        b.node("avgpool", Op::GlobalAvgPool);
        b.node("flatten", Op::Flatten);
        b.node(
            "fc",
            Op::Linear {
                in_features: channels,
                out_features: num_classes,
            },
        );
        Graph::new(&self.text, [3, side, side], b.defs)
    }
}
