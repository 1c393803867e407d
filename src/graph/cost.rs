//! The cost counter on a [`Graph`], with [`crate::cost`]'s conventions: FLOPs are 2 x
//! MACs of convs and linears plus 1 per biased output element, a pool's window size per
//! output element (a global average pool: one per input element), one per output
//! element for each extra input of an add; BatchNorm, ReLU and Flatten are free.

use super::{Graph, Op};
use crate::cost::{Cost, LayerCost, LayerKind};

/// Counts every node of `graph` for one input image.
pub fn count(graph: &Graph) -> Cost {
    let shapes = graph.shapes().expect("a built graph has shapes");
    let mut layers = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let ins = graph.input_shapes(&shapes, i);
        let out = &shapes[i];
        let out_elems: u64 = out.iter().product::<usize>() as u64;
        let row = |kind, in_c: usize, out_c: usize, params: u64, macs: u64, flops: u64| LayerCost {
            name: node.name.clone(),
            kind,
            in_channels: in_c,
            out_channels: out_c,
            params,
            macs,
            flops,
            buffers: 0,
        };
        let channels = out[0];
        match &node.op {
            Op::Conv(c) => {
                let macs = out_elems * (c.in_channels * c.kernel * c.kernel) as u64;
                let bias = u64::from(c.bias);
                let weights = (c.out_channels * c.in_channels * c.kernel * c.kernel) as u64;
                layers.push(row(
                    LayerKind::Conv,
                    c.in_channels,
                    c.out_channels,
                    weights + bias * c.out_channels as u64,
                    macs,
                    2 * macs + bias * out_elems,
                ));
            }
            Op::BatchNorm { channels } => {
                let c = *channels as u64;
                layers.push(LayerCost {
                    buffers: 2 * c,
                    ..row(LayerKind::BatchNorm, *channels, *channels, 2 * c, 0, 0)
                });
            }
            Op::MaxPool(w) | Op::AvgPool(w) => {
                let kind = if matches!(node.op, Op::MaxPool(_)) {
                    LayerKind::MaxPool
                } else {
                    LayerKind::AvgPool
                };
                let per = (w.kernel * w.kernel) as u64;
                layers.push(row(kind, channels, channels, 0, 0, per * out_elems));
            }
            Op::GlobalAvgPool => {
                let in_elems = ins[0].iter().product::<usize>() as u64;
                layers.push(row(LayerKind::AvgPool, channels, channels, 0, 0, in_elems));
            }
            Op::Add => {
                let extra = (ins.len() - 1) as u64;
                layers.push(row(
                    LayerKind::Add,
                    channels,
                    channels,
                    0,
                    0,
                    extra * out_elems,
                ));
            }
            Op::Linear {
                in_features,
                out_features,
            } => {
                let macs = (in_features * out_features) as u64;
                layers.push(row(
                    LayerKind::Linear,
                    *in_features,
                    *out_features,
                    macs + *out_features as u64,
                    macs,
                    2 * macs + *out_features as u64,
                ));
            }
            Op::Relu | Op::Flatten => {}
        }
    }
    Cost::of_layers(layers)
}
