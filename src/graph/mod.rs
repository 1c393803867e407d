//! A CNN as a graph of named nodes: the description that residual networks need and
//! VGG's unit list ([`crate::arch::Arch`]) is one case of.
//!
//! Nodes are stored in topological order; each reads the outputs of earlier nodes (or
//! the image, when it lists no input). [`Graph::new`] orders nodes given in any order
//! and refuses unknown inputs, repeated names and cycles; [`Graph::shapes`] infers every
//! node's output `[C, H, W]` and refuses mismatched shapes, naming the node.
//!
//! [`cost`] counts it with [`crate::cost`]'s conventions, [`groups`] finds the channel
//! sets that residual adds tie together, [`build`] makes VGG (from an `Arch`) and
//! ResNets.

pub mod build;
pub mod cost;
pub mod groups;

use std::collections::HashMap;

/// A 2-D convolution (`groups = 1`, square kernel, PyTorch layout `[out, in, k, k]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

/// Square pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Window {
    /// Output side for an input side (floor, as PyTorch's pools without ceil_mode).
    pub fn out_size(&self, size: usize) -> Option<usize> {
        if self.stride == 0 || self.kernel == 0 {
            return None;
        }
        (size + 2 * self.padding)
            .checked_sub(self.kernel)
            .map(|d| d / self.stride + 1)
    }
}

/// What a node computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Conv(Conv),
    BatchNorm {
        channels: usize,
    },
    Relu,
    MaxPool(Window),
    AvgPool(Window),
    /// Mean over each channel's whole map: `[C, H, W]` to `[C, 1, 1]`.
    GlobalAvgPool,
    /// Element-wise sum of two or more inputs of one shape.
    Add,
    /// `[C, H, W]` to `[C * H * W]` (channel-major, as `torch.flatten(x, 1)`).
    Flatten,
    Linear {
        in_features: usize,
        out_features: usize,
    },
}

impl Op {
    /// Short name for messages and tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::BatchNorm { .. } => "BatchNorm",
            Op::Relu => "Relu",
            Op::MaxPool(_) => "MaxPool",
            Op::AvgPool(_) => "AvgPool",
            Op::GlobalAvgPool => "GlobalAveragePool",
            Op::Add => "Add",
            Op::Flatten => "Flatten",
            Op::Linear { .. } => "Linear",
        }
    }
}

/// A node: its PyTorch-style name (`layer1.0.conv1`), op and the nodes it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// Indices of earlier nodes; empty = the input image.
    pub inputs: Vec<usize>,
}

/// A node as given to [`Graph::new`]: inputs by name (`"input"` or none = the image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDef {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
}

/// The image input's name in [`NodeDef::inputs`].
pub const INPUT: &str = "input";

/// A graph that cannot be used; the message names the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node} ({op}): {message}")]
pub struct GraphError {
    pub node: String,
    pub op: String,
    pub message: String,
}

impl GraphError {
    fn at(node: &Node, message: impl Into<String>) -> Self {
        GraphError {
            node: node.name.clone(),
            op: node.op.kind().to_string(),
            message: message.into(),
        }
    }
}

/// A whole network; the last node's output is the logits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Model name as written in configs (`resnet20`, `vgg19_bn`).
    pub model: String,
    /// Input shape `[channels, height, width]`.
    pub input: [usize; 3],
    pub nodes: Vec<Node>,
}

impl Graph {
    /// The graph of `defs` in topological order (Kahn's algorithm, keeping the given
    /// order among ready nodes).
    pub fn new(model: &str, input: [usize; 3], defs: Vec<NodeDef>) -> Result<Self, GraphError> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, d) in defs.iter().enumerate() {
            if d.name == INPUT || index.insert(&d.name, i).is_some() {
                return Err(GraphError {
                    node: d.name.clone(),
                    op: d.op.kind().into(),
                    message: "the name is used twice (or is the input's)".into(),
                });
            }
        }
        let mut reads: Vec<Vec<usize>> = Vec::with_capacity(defs.len());
        for d in &defs {
            let mut r = Vec::new();
            for name in d.inputs.iter().filter(|n| *n != INPUT) {
                let Some(&j) = index.get(name.as_str()) else {
                    return Err(GraphError {
                        node: d.name.clone(),
                        op: d.op.kind().into(),
                        message: format!("reads {name:?}, which no node produces"),
                    });
                };
                r.push(j);
            }
            reads.push(r);
        }
        let mut waiting: Vec<usize> = reads.iter().map(Vec::len).collect();
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); defs.len()];
        for (i, r) in reads.iter().enumerate() {
            for &j in r {
                readers[j].push(i);
            }
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..defs.len()).filter(|&i| waiting[i] == 0).collect();
        let mut order = Vec::with_capacity(defs.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &k in &readers[i] {
                waiting[k] -= 1;
                if waiting[k] == 0 {
                    ready.insert(k);
                }
            }
        }
        if order.len() < defs.len() {
            let stuck = (0..defs.len())
                .find(|&i| waiting[i] > 0)
                .expect("a node is left");
            return Err(GraphError {
                node: defs[stuck].name.clone(),
                op: defs[stuck].op.kind().into(),
                message: "is on a cycle: the graph must be acyclic".into(),
            });
        }
        let mut position = vec![0; defs.len()];
        for (p, &i) in order.iter().enumerate() {
            position[i] = p;
        }
        let nodes = order
            .iter()
            .map(|&i| Node {
                name: defs[i].name.clone(),
                op: defs[i].op.clone(),
                inputs: reads[i].iter().map(|&j| position[j]).collect(),
            })
            .collect();
        let graph = Graph {
            model: model.to_string(),
            input,
            nodes,
        };
        graph.shapes()?;
        Ok(graph)
    }

    /// Index of the node called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The shape each node's inputs arrive with.
    pub fn input_shapes(&self, shapes: &[Vec<usize>], i: usize) -> Vec<Vec<usize>> {
        let n = &self.nodes[i];
        if n.inputs.is_empty() {
            vec![self.input.to_vec()]
        } else {
            n.inputs.iter().map(|&j| shapes[j].clone()).collect()
        }
    }

    /// The classes the network scores: the last node's output size.
    pub fn num_classes(&self) -> Result<usize, GraphError> {
        Ok(self.shapes()?.last().map_or(0, |s| s[0]))
    }

    /// Every node's output shape (`[C, H, W]`, or `[F]` after Flatten and Linear).
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>, GraphError> {
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let ins = self.input_shapes(&shapes, i);
            shapes.push(out_shape(node, &ins)?);
        }
        Ok(shapes)
    }
}

/// The output shape of `node` for inputs of `ins`.
fn out_shape(node: &Node, ins: &[Vec<usize>]) -> Result<Vec<usize>, GraphError> {
    let err = |m: String| GraphError::at(node, m);
    let one = || -> Result<&Vec<usize>, GraphError> {
        match ins {
            [x] => Ok(x),
            _ => Err(err(format!("takes one input, given {}", ins.len()))),
        }
    };
    let map = || -> Result<[usize; 3], GraphError> {
        let x = one()?;
        <[usize; 3]>::try_from(x.as_slice())
            .map_err(|_| err(format!("takes a [C, H, W] map, given {x:?}")))
    };
    Ok(match &node.op {
        Op::Conv(c) => {
            let [ch, h, w] = map()?;
            if ch != c.in_channels {
                return Err(err(format!(
                    "takes {} input channels, receives {ch}",
                    c.in_channels
                )));
            }
            let win = Window {
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
            };
            match (win.out_size(h), win.out_size(w)) {
                (Some(oh), Some(ow)) if c.out_channels > 0 => vec![c.out_channels, oh, ow],
                _ => return Err(err(format!("leaves no output for a {h}x{w} map"))),
            }
        }
        Op::BatchNorm { channels } => {
            let [ch, h, w] = map()?;
            if ch != *channels {
                return Err(err(format!(
                    "normalises {channels} channels, receives {ch}"
                )));
            }
            vec![ch, h, w]
        }
        Op::Relu => one()?.clone(),
        Op::MaxPool(win) | Op::AvgPool(win) => {
            let [ch, h, w] = map()?;
            match (win.out_size(h), win.out_size(w)) {
                (Some(oh), Some(ow)) => vec![ch, oh, ow],
                _ => return Err(err(format!("leaves no output for a {h}x{w} map"))),
            }
        }
        Op::GlobalAvgPool => {
            let [ch, _, _] = map()?;
            vec![ch, 1, 1]
        }
        Op::Add => {
            if ins.len() < 2 {
                return Err(err(format!("adds two or more inputs, given {}", ins.len())));
            }
            if let Some(x) = ins.iter().find(|x| **x != ins[0]) {
                return Err(err(format!(
                    "adds inputs of different shapes: {:?} and {x:?}",
                    ins[0]
                )));
            }
            ins[0].clone()
        }
        Op::Flatten => vec![one()?.iter().product()],
        Op::Linear {
            in_features,
            out_features,
        } => {
            let x = one()?;
            if x.len() != 1 || x[0] != *in_features {
                return Err(err(format!(
                    "takes {in_features} features, receives {x:?} (flatten first)"
                )));
            }
            vec![*out_features]
        }
    })
}

#[cfg(test)]
mod tests;
