//! The burn model of any [`Graph`]: residual networks as well as VGG.
//!
//! One `Conv2d`, `BatchNorm` or `Linear` per node of that kind, loaded from and saved to
//! [`Weights`] under the nodes' PyTorch names. [`GraphNet::forward`] runs channel-major
//! (`[C, N, H, W]`) through the same kernels as [`super::Vgg`] (a BatchNorm read only by
//! a ReLU is fused with it; an Add is a plain sum in either layout);
//! [`GraphNet::forward_reference`] runs batch-major through burn's own layers, the
//! reference the channel-major path is tested against.

use super::{bn_from, cnhw, param, param_of, transpose2, values};
use crate::graph::{Conv, Graph, Op, Window};
use crate::weights::{TensorF32, Weights, WeightsError};
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2dConfig, MaxPool2dConfig};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// Keys and PyTorch-layout shapes of every tensor `graph` has, in node order.
pub fn expected_shapes(graph: &Graph) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for node in &graph.nodes {
        let n = &node.name;
        match &node.op {
            Op::Conv(c) => {
                out.push((
                    format!("{n}.weight"),
                    vec![c.out_channels, c.in_channels, c.kernel, c.kernel],
                ));
                if c.bias {
                    out.push((format!("{n}.bias"), vec![c.out_channels]));
                }
            }
            Op::BatchNorm { channels } => {
                for field in ["weight", "bias", "running_mean", "running_var"] {
                    out.push((format!("{n}.{field}"), vec![*channels]));
                }
            }
            Op::Linear {
                in_features,
                out_features,
            } => {
                out.push((format!("{n}.weight"), vec![*out_features, *in_features]));
                out.push((format!("{n}.bias"), vec![*out_features]));
            }
            _ => {}
        }
    }
    out
}

/// A network whose layout is `graph`.
#[derive(Module, Debug)]
pub struct GraphNet {
    /// One per Conv node, in node order.
    pub convs: Vec<Conv2d>,
    /// One per BatchNorm node, in node order.
    pub bns: Vec<BatchNorm>,
    /// One per Linear node, in node order.
    pub linears: Vec<Linear>,
    #[module(skip)]
    pub graph: Graph,
    /// Each node's index among the layers of its kind.
    #[module(skip)]
    slot: Vec<usize>,
}

/// A node's output: a feature map (in the run's layout) or features `[N, F]`.
#[derive(Clone)]
enum Value {
    Map(Tensor<4>),
    Flat(Tensor<2>),
}

impl Value {
    fn map(self, node: &str) -> Tensor<4> {
        match self {
            Value::Map(x) => x,
            Value::Flat(_) => panic!("{node} reads features where a map is due"),
        }
    }
}

fn conv_of(c: &Conv, name: &str, w: &Weights, device: &Device) -> Conv2d {
    let p = c.padding;
    Conv2d {
        weight: param(w, &format!("{name}.weight"), device),
        bias: c.bias.then(|| param(w, &format!("{name}.bias"), device)),
        stride: [c.stride; 2],
        kernel_size: [c.kernel; 2],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(p, p, p, p),
    }
}

fn pool(op: &Op, x: Tensor<4>) -> Tensor<4> {
    let config = |w: &Window| {
        let p = w.padding;
        (
            [w.kernel; 2],
            [w.stride; 2],
            PaddingConfig2d::Explicit(p, p, p, p),
        )
    };
    match op {
        Op::MaxPool(w) if *w == TWO_BY_TWO => {
            cnhw::max_pool(&MaxPool2dConfig::new([2, 2]).init(), x)
        }
        Op::MaxPool(w) => {
            let (k, s, p) = config(w);
            MaxPool2dConfig::new(k)
                .with_strides(s)
                .with_padding(p)
                .init()
                .forward(x)
        }
        Op::AvgPool(w) => {
            let (k, s, p) = config(w);
            AvgPool2dConfig::new(k)
                .with_strides(s)
                .with_padding(p)
                .init()
                .forward(x)
        }
        _ => unreachable!("a pool op"),
    }
}

/// For each node of `graph`: how many inputs of later nodes read it, and the last node
/// that does.
pub(super) fn uses(graph: &Graph) -> (Vec<usize>, Vec<usize>) {
    let mut readers = vec![0usize; graph.nodes.len()];
    let mut last_use = vec![0usize; graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for &j in &n.inputs {
            readers[j] += 1;
            last_use[j] = i;
        }
    }
    (readers, last_use)
}

/// What [`GraphNet::forward_with`] hands its hook: the BatchNorm (with its index among
/// the BNs) whose output the hook computes, or `None` for a BN-less conv's output.
pub type Unit<'a> = Option<(usize, &'a BatchNorm)>;

type Hook<'h> = dyn for<'a> FnMut(Unit<'a>, Tensor<4>) -> Tensor<4> + 'h;

/// VGG's pooling, which has a kernel of its own.
pub(super) const TWO_BY_TWO: Window = Window {
    kernel: 2,
    stride: 2,
    padding: 0,
};

impl GraphNet {
    /// The model of `graph` from `weights` (checked against it first; `file` names
    /// their source in errors).
    pub fn from_weights(
        graph: &Graph,
        weights: Weights,
        file: &str,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let w = weights.matched_to_shapes(expected_shapes(graph), file)?;
        let (mut convs, mut bns, mut linears) = (Vec::new(), Vec::new(), Vec::new());
        let mut slot = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let n = &node.name;
            slot.push(match &node.op {
                Op::Conv(c) => {
                    convs.push(conv_of(c, n, &w, device));
                    convs.len() - 1
                }
                Op::BatchNorm { .. } => {
                    bns.push(bn_from(n, &w, device));
                    bns.len() - 1
                }
                Op::Linear { .. } => {
                    // PyTorch stores [out, in]; burn's row layout is [in, out].
                    let key = format!("{n}.weight");
                    let weight = param_of::<2>(&transpose2(&w.tensors[&key]), &key, device);
                    linears.push(Linear {
                        weight,
                        bias: Some(param(&w, &format!("{n}.bias"), device)),
                    });
                    linears.len() - 1
                }
                _ => 0,
            });
        }
        Ok(Self {
            convs,
            bns,
            linears,
            graph: graph.clone(),
            slot,
        })
    }

    /// Fresh weights for `graph`: convs Kaiming-normal (fan-out, ReLU gain, as
    /// torchvision's ResNets and VGGs), BN gamma 1 and beta 0, linear N(0, 0.01).
    pub fn init_weights(graph: &Graph, seed: u64) -> Weights {
        Weights::init_shapes(expected_shapes(graph), seed)
    }

    /// All tensors under PyTorch keys and layouts, BN running statistics included.
    pub fn to_weights(&self) -> Weights {
        let mut tensors = indexmap::IndexMap::new();
        let mut put = |key: String, t: TensorF32| {
            tensors.insert(key, t);
        };
        for (node, &i) in self.graph.nodes.iter().zip(&self.slot) {
            let n = &node.name;
            match &node.op {
                Op::Conv(_) => {
                    let c = &self.convs[i];
                    put(format!("{n}.weight"), values(c.weight.val()));
                    if let Some(b) = &c.bias {
                        put(format!("{n}.bias"), values(b.val()));
                    }
                }
                Op::BatchNorm { .. } => {
                    let bn = &self.bns[i];
                    put(format!("{n}.weight"), values(bn.gamma.val()));
                    put(format!("{n}.bias"), values(bn.beta.val()));
                    put(format!("{n}.running_mean"), values(bn.running_mean.value()));
                    put(format!("{n}.running_var"), values(bn.running_var.value()));
                }
                Op::Linear { .. } => {
                    let l = &self.linears[i];
                    put(format!("{n}.weight"), values(l.weight.val().transpose()));
                    let b = l.bias.as_ref().expect("a linear has a bias");
                    put(format!("{n}.bias"), values(b.val()));
                }
                _ => {}
            }
        }
        Weights { tensors }
    }

    /// Logits `[batch, classes]` for images `[batch, C, H, W]`, run channel-major.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.run(cnhw::swap_batch_channels(x), true, None)
    }

    /// The same logits batch-major through burn's own layers.
    pub fn forward_reference(&self, x: Tensor<4>) -> Tensor<2> {
        self.run(x, false, None)
    }

    /// The batch-major logits with `unit` computing each unit's output, as
    /// [`super::Vgg::forward_with`] does: every BatchNorm node is replaced by
    /// `unit(Some((its index among the BNs, the BN)), its input)`, and a conv that a ReLU
    /// reads directly (no BN between) is followed by `unit(None, its output)`.
    pub fn forward_with(
        &self,
        x: Tensor<4>,
        mut unit: impl FnMut(Unit, Tensor<4>) -> Tensor<4>,
    ) -> Tensor<2> {
        self.run(x, false, Some(&mut unit))
    }

    /// Whether node `i` is a BatchNorm whose only reader is the ReLU right after it.
    fn fuses_with_relu(&self, i: usize, readers: &[usize]) -> bool {
        Self::fuses(&self.graph, i, readers)
    }

    /// Whether the channel-major forward pass fuses node `i` of `graph` with the ReLU
    /// after it: a BatchNorm whose only reader (of `readers[i]`) is that ReLU.
    fn fuses(graph: &Graph, i: usize, readers: &[usize]) -> bool {
        let nodes = &graph.nodes;
        matches!(nodes[i].op, Op::BatchNorm { .. })
            && readers[i] == 1
            && nodes
                .get(i + 1)
                .is_some_and(|n| n.op == Op::Relu && n.inputs == [i])
    }

    /// Whether node `i` is a conv whose only reader is the ReLU right after it.
    fn feeds_relu(&self, i: usize, readers: &[usize]) -> bool {
        let nodes = &self.graph.nodes;
        matches!(nodes[i].op, Op::Conv(_))
            && readers[i] == 1
            && nodes
                .get(i + 1)
                .is_some_and(|n| n.op == Op::Relu && n.inputs == [i])
    }

    fn run(&self, x: Tensor<4>, channel_major: bool, hook: Option<&mut Hook>) -> Tensor<2> {
        match self.run_values(x, channel_major, hook) {
            Value::Flat(y) => y,
            Value::Map(_) => panic!("a graph ends with its classifier's features"),
        }
    }

    /// The last node's value.
    fn run_values(&self, x: Tensor<4>, channel_major: bool, mut hook: Option<&mut Hook>) -> Value {
        let nodes = &self.graph.nodes;
        let (readers, last_use) = uses(&self.graph);
        let mut values: Vec<Option<Value>> = vec![None; nodes.len()];
        let image = Value::Map(x);
        let mut skip = false;
        for (i, node) in nodes.iter().enumerate() {
            if std::mem::take(&mut skip) {
                continue; // the ReLU fused into the BatchNorm before it
            }
            // An input read for the last time is moved, not shared, so that a kernel
            // may write in its buffer (the fused BatchNorm's inference does).
            let inputs: Vec<Value> = if node.inputs.is_empty() {
                vec![image.clone()]
            } else {
                node.inputs
                    .iter()
                    .enumerate()
                    .map(|(k, &j)| {
                        let again = node.inputs[k + 1..].contains(&j);
                        let v = if last_use[j] == i && !again {
                            values[j].take()
                        } else {
                            values[j].clone()
                        };
                        v.expect("an input computed before")
                    })
                    .collect()
            };
            let mut inputs = inputs.into_iter();
            let x0 = inputs.next().expect("a node reads an input");
            let s = self.slot[i];
            let out = match &node.op {
                Op::Conv(_) if channel_major => {
                    Value::Map(cnhw::conv(&self.convs[s], x0.map(&node.name)))
                }
                Op::Conv(_) => {
                    let y = self.convs[s].forward(x0.map(&node.name));
                    match hook.as_mut() {
                        Some(h) if self.feeds_relu(i, &readers) => Value::Map(h(None, y)),
                        _ => Value::Map(y),
                    }
                }
                Op::BatchNorm { .. } if channel_major && self.fuses_with_relu(i, &readers) => {
                    skip = true; // the result is the ReLU's
                    Value::Map(cnhw::batch_norm_relu(&self.bns[s], x0.map(&node.name)))
                }
                Op::BatchNorm { .. } if channel_major => {
                    Value::Map(cnhw::batch_norm(&self.bns[s], x0.map(&node.name)))
                }
                Op::BatchNorm { .. } => {
                    let x = x0.map(&node.name);
                    Value::Map(match hook.as_mut() {
                        Some(h) => h(Some((s, &self.bns[s])), x),
                        None => self.bns[s].forward(x),
                    })
                }
                Op::Relu => match x0 {
                    Value::Map(x) => Value::Map(relu(x)),
                    Value::Flat(x) => Value::Flat(relu(x)),
                },
                Op::MaxPool(_) | Op::AvgPool(_) => Value::Map(pool(&node.op, x0.map(&node.name))),
                Op::GlobalAvgPool => Value::Map(x0.map(&node.name).mean_dim(3).mean_dim(2)),
                Op::Add => {
                    let mut it = std::iter::once(x0).chain(inputs).map(|v| v.map(&node.name));
                    let sum = it.next().expect("an add has inputs");
                    Value::Map(it.fold(sum, |a, b| a + b))
                }
                Op::Flatten => {
                    let x = x0.map(&node.name);
                    let x = if channel_major {
                        cnhw::swap_batch_channels(x)
                    } else {
                        x
                    };
                    let [b, c, h, w] = x.dims();
                    Value::Flat(x.reshape([b, c * h * w]))
                }
                Op::Linear { .. } => match x0 {
                    Value::Flat(x) => Value::Flat(self.linears[s].forward(x)),
                    Value::Map(_) => panic!("{} reads a map: flatten first", node.name),
                },
            };
            values[if skip { i + 1 } else { i }] = Some(out);
            for &j in &node.inputs {
                if last_use[j] == i {
                    values[j] = None; // free what no later node reads
                }
            }
        }
        values
            .pop()
            .flatten()
            .expect("the last node's value is kept")
    }
}
