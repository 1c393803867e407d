//! Tucker-2 decomposition of a [`Graph`]'s convs: each named conv becomes the chain
//! `NAME_tucker_0` (1x1, in -> r_in), `NAME_tucker_1` (the kernel, stride and padding,
//! r_in -> r_out) and `NAME_tucker_2` (1x1, r_out -> out, with the bias), factored as
//! [`super::tucker`] factors a VGG conv. The last 1x1 produces the original channels,
//! so it takes the conv's place in its dependency group; the ranks are the chain's own.

use super::decompose::{LayerDecomposition, TuckerCache, cached_factors};
use crate::graph::{Conv, Graph, Node, Op};
use crate::weights::Weights;
use std::collections::BTreeMap;

fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> Op {
    Op::Conv(Conv {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        bias,
    })
}

/// `graph` and `weights` with each conv in `ranks` (`name -> [r_in, r_out]`)
/// decomposed. An unknown name, a node that is not a conv and ranks out of range are
/// errors naming the layer.
pub fn decompose_graph(
    graph: &Graph,
    weights: &Weights,
    ranks: &BTreeMap<String, [usize; 2]>,
) -> Result<(Graph, Weights), String> {
    decompose_graph_cached(graph, weights, ranks, None)
}

/// [`decompose_graph`] taking each conv's factors from `cache` (which must belong to
/// these `weights`) when it holds them at the same ranks, and adding the new ones.
pub fn decompose_graph_cached(
    graph: &Graph,
    weights: &Weights,
    ranks: &BTreeMap<String, [usize; 2]>,
    cache: Option<&TuckerCache>,
) -> Result<(Graph, Weights), String> {
    let (g, w, _) = decompose_graph_with(graph, weights, ranks, cache, |_| {})?;
    Ok((g, w))
}

/// [`decompose_graph_cached`] that calls `on_layer` with each conv's name before it is
/// factored (a progress bar) and reports every factorisation (ranks, relative error,
/// HOOI iterations) in graph order. The weights come in the decomposed graph's order.
pub fn decompose_graph_with(
    graph: &Graph,
    weights: &Weights,
    ranks: &BTreeMap<String, [usize; 2]>,
    cache: Option<&TuckerCache>,
    mut on_layer: impl FnMut(&str),
) -> Result<(Graph, Weights, Vec<LayerDecomposition>), String> {
    let mut report = Vec::new();
    let mut run = Factoring {
        weights: weights.clone(),
        cache,
        on_layer: &mut on_layer,
        report: &mut report,
    };
    let g = decompose(graph, Some(&mut run), ranks)?;
    // In the decomposed graph's order, as a file of its weights has them.
    let w = run
        .weights
        .matched_to_shapes(crate::model::graph_weight_shapes(&g), "<decomposed>")
        .map_err(|e| e.to_string())?;
    Ok((g, w, report))
}

/// A decomposition with weights: the tensors being rewritten, the factor cache, the
/// progress callback and the per-layer report.
struct Factoring<'a> {
    weights: Weights,
    cache: Option<&'a TuckerCache>,
    on_layer: &'a mut dyn FnMut(&str),
    report: &'a mut Vec<LayerDecomposition>,
}

/// The graph [`decompose_graph`] gives, without weights (no factorisation): what a
/// config's ranks make of the network's layout and cost.
pub fn decomposed_layout(
    graph: &Graph,
    ranks: &BTreeMap<String, [usize; 2]>,
) -> Result<Graph, String> {
    decompose(graph, None, ranks)
}

fn decompose(
    graph: &Graph,
    mut weights: Option<&mut Factoring>,
    ranks: &BTreeMap<String, [usize; 2]>,
) -> Result<Graph, String> {
    for (name, &[r_in, r_out]) in ranks {
        let Some(i) = graph.find(name) else {
            return Err(format!("{name}: no such layer"));
        };
        let Op::Conv(c) = &graph.nodes[i].op else {
            return Err(format!("{name}: not a conv"));
        };
        if !(1..=c.in_channels).contains(&r_in) || !(1..=c.out_channels).contains(&r_out) {
            return Err(format!(
                "{name}: ranks [{r_in}, {r_out}]: allowed [1..={}, 1..={}]",
                c.in_channels, c.out_channels
            ));
        }
    }
    // Each chain takes its conv's place, so the order stays topological; `carrier[j]` is
    // the new index of the node that carries old node j's output (a chain's last conv).
    let mut nodes: Vec<Node> = Vec::with_capacity(graph.nodes.len() + 2 * ranks.len());
    let mut carrier = vec![0usize; graph.nodes.len()];
    for (j, node) in graph.nodes.iter().enumerate() {
        let n = &node.name;
        let inputs: Vec<usize> = node.inputs.iter().map(|&i| carrier[i]).collect();
        let (Op::Conv(c), Some(&[r_in, r_out])) = (&node.op, ranks.get(n)) else {
            nodes.push(Node {
                name: n.clone(),
                op: node.op.clone(),
                inputs,
            });
            carrier[j] = nodes.len() - 1;
            continue;
        };
        let ops = [
            conv(c.in_channels, r_in, 1, 1, 0, false),
            conv(r_in, r_out, c.kernel, c.stride, c.padding, false),
            conv(r_out, c.out_channels, 1, 1, 0, c.bias),
        ];
        if let Some(f) = weights.as_deref_mut() {
            factor(f, n, [r_in, r_out])?;
        }
        for (k, op) in ops.into_iter().enumerate() {
            let name = format!("{n}_tucker_{k}");
            if graph.find(&name).is_some() {
                return Err(format!("{n}: the graph already has a node {name}"));
            }
            let from = if k == 0 {
                inputs.clone()
            } else {
                vec![nodes.len() - 1]
            };
            nodes.push(Node {
                name,
                op,
                inputs: from,
            });
        }
        carrier[j] = nodes.len() - 1;
    }
    let out = Graph {
        model: graph.model.clone(),
        input: graph.input,
        nodes,
    };
    out.shapes().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Replaces conv `n`'s kernel (and bias) in `w` by its Tucker-2 chain's three.
fn factor(run: &mut Factoring, n: &str, [r_in, r_out]: [usize; 2]) -> Result<(), String> {
    (run.on_layer)(n);
    let w = &mut run.weights;
    let kernel = w
        .tensors
        .shift_remove(&format!("{n}.weight"))
        .ok_or_else(|| format!("{n}: the weights have no {n}.weight"))?;
    let f = cached_factors(run.cache, &kernel, n, r_in, r_out).map_err(|e| e.to_string())?;
    run.report.push(LayerDecomposition {
        layer: n.to_string(),
        ranks: [r_in, r_out],
        rel_error: f.rel_error,
        hooi_iterations: f.iterations,
    });
    for (k, t) in f.convs.iter().enumerate() {
        w.tensors
            .insert(format!("{n}_tucker_{k}.weight"), t.clone());
    }
    if let Some(b) = w.tensors.shift_remove(&format!("{n}.bias")) {
        w.tensors.insert(format!("{n}_tucker_2.bias"), b);
    }
    Ok(())
}
