//! BatchNorm folded into the conv before it, for inference. In eval mode a BatchNorm is
//! the affine map `gamma (z - mean) / sqrt(var + eps) + beta` per channel, so with
//! `s = gamma / sqrt(var + eps)` the conv `z = W x + b` followed by it is the conv
//! `(s W) x + (s (b - mean) + beta)` (PyTorch's `torch.nn.utils.fusion.fuse_conv_bn_eval`
//! does the same). The tests check the folded network's logits against the original's.

use crate::weights::{TensorF32, Weights};

/// The epsilon of every BatchNorm rankprune builds (PyTorch's default).
pub const BN_EPSILON: f64 = 1e-5;

/// Folds the BatchNorm `bn` into the conv `conv` (which has a bias if `had_bias`): the
/// conv's weight is scaled, its bias set, and the BatchNorm's tensors removed.
fn fold_into(w: &mut Weights, bn: &str, conv: &str, had_bias: bool) {
    let take = |w: &mut Weights, field: &str| {
        w.tensors
            .shift_remove(&format!("{bn}.{field}"))
            .expect("a checked model has its BatchNorm's tensors")
    };
    let (gamma, beta) = (take(w, "weight"), take(w, "bias"));
    let (mean, var) = (take(w, "running_mean"), take(w, "running_var"));
    let scale: Vec<f64> = gamma
        .data
        .iter()
        .zip(&var.data)
        .map(|(&g, &v)| f64::from(g) / (f64::from(v) + BN_EPSILON).sqrt())
        .collect();
    let weight = w
        .tensors
        .get_mut(&format!("{conv}.weight"))
        .expect("a checked model has its conv weights");
    let per_filter = weight.data.len() / scale.len();
    for (filter, &s) in weight.data.chunks_mut(per_filter).zip(&scale) {
        filter
            .iter_mut()
            .for_each(|v| *v = (f64::from(*v) * s) as f32);
    }
    let bias_key = format!("{conv}.bias");
    let old_bias = match had_bias {
        true => w.tensors[&bias_key].data.clone(),
        false => vec![0.0; scale.len()],
    };
    let bias = (0..scale.len())
        .map(|o| {
            let b = f64::from(old_bias[o]) - f64::from(mean.data[o]);
            (b * scale[o] + f64::from(beta.data[o])) as f32
        })
        .collect();
    w.tensors
        .insert(bias_key, TensorF32::new(vec![scale.len()], bias));
}

/// `graph` and `weights` with every BatchNorm whose input is a conv that nothing else
/// reads folded into that conv: the conv gains a bias, the BatchNorm and its tensors
/// leave the graph, and its readers read the conv.
pub fn fold_graph_batch_norms(
    graph: &crate::graph::Graph,
    weights: Weights,
) -> (crate::graph::Graph, Weights) {
    use crate::graph::{Graph, NodeDef, Op};
    let mut readers = vec![0usize; graph.nodes.len()];
    for n in &graph.nodes {
        for &j in &n.inputs {
            readers[j] += 1;
        }
    }
    let mut w = weights;
    let mut ops: Vec<Op> = graph.nodes.iter().map(|n| n.op.clone()).collect();
    // replaced[i]: the node that now stands for node i's output.
    let mut replaced: Vec<usize> = (0..graph.nodes.len()).collect();
    let mut gone = vec![false; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let (Op::BatchNorm { .. }, [j]) = (&node.op, node.inputs.as_slice()) else {
            continue;
        };
        let Op::Conv(c) = &mut ops[*j] else { continue };
        if readers[*j] != 1 {
            continue;
        }
        fold_into(&mut w, &node.name, &graph.nodes[*j].name, c.bias);
        c.bias = true;
        replaced[i] = *j;
        gone[i] = true;
    }
    let defs = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone[*i])
        .map(|(i, n)| NodeDef {
            name: n.name.clone(),
            op: ops[i].clone(),
            inputs: n
                .inputs
                .iter()
                .map(|&j| graph.nodes[replaced[j]].name.clone())
                .collect(),
        })
        .collect();
    let g = Graph::new(&graph.model, graph.input, defs).expect("folding keeps a valid graph");
    (g, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{Arch, ArchSpec, Unit};
    use crate::graph::build::of_arch;
    use crate::model::GraphNet;
    use burn::tensor::{Device, Distribution, Tensor};

    /// Weights with BatchNorm statistics and affine parameters far from the identity.
    fn with_batch_norm_spread(arch: &Arch, seed: u64) -> Weights {
        let mut w = Weights::init(arch, seed);
        for (k, (key, t)) in w.tensors.iter_mut().enumerate() {
            let field = key.rsplit('.').next().unwrap_or("");
            let is_bn = arch.units.iter().any(|u| match u {
                Unit::Conv(c) => {
                    c.bn.as_deref()
                        .is_some_and(|bn| key.starts_with(&format!("{bn}.")))
                }
                _ => false,
            });
            if !is_bn {
                continue;
            }
            for (i, v) in t.data.iter_mut().enumerate() {
                let x = ((i * 7 + k * 13) % 11) as f32 / 11.0; // 0..1, varied
                *v = match field {
                    "running_mean" => x - 0.5,
                    "running_var" => 0.5 + 2.0 * x,
                    "weight" => 0.5 + x,
                    _ => 0.3 * x - 0.1,
                };
            }
        }
        w
    }

    #[test]
    fn folded_network_gives_the_same_logits() {
        let device = Device::flex();
        let mut arch = ArchSpec::parse("cfg_bn:4,M,6,M,5").unwrap().build(3);
        arch.decompose("features.4", 2, 3).unwrap();
        let w = with_batch_norm_spread(&arch, 5);
        let graph = of_arch(&arch);
        let (folded, fw) = fold_graph_batch_norms(&graph, w.clone());
        assert!(
            folded
                .nodes
                .iter()
                .all(|n| !matches!(n.op, crate::graph::Op::BatchNorm { .. }))
        );
        assert!(fw.tensors.keys().all(|k| !k.contains("running")));
        let x = Tensor::<4>::random([3, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let logits = |g: &crate::graph::Graph, w: Weights| {
            let m = GraphNet::from_weights(g, w, "mem", &device).unwrap();
            crate::model::values(m.forward(x.clone())).data
        };
        let (a, b) = (logits(&graph, w), logits(&folded, fw));
        let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-4 * scale, "{p} vs folded {q}");
        }
    }
}
