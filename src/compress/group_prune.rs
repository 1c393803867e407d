//! L2 filter pruning of a [`Graph`] by dependency group: the channels a residual add
//! ties together are removed from every member conv, every BatchNorm on them and every
//! layer that reads them, at once.
//!
//! A channel's importance is its group norm, the L2 norm of all the member filters that
//! produce it (DepGraph, Fang et al., CVPR 2023, group-level L2 importance: the squared
//! norms of the coupled parameters summed). A group is named by its first conv.

use super::prune::{Kept, kept_indices, select};
use super::slamp::{PruneTarget, check_target, slamp_scores, threshold_ratios};
use crate::config::kept_filters;
use crate::cost::Cost;
use crate::graph::cost::count;
use crate::graph::groups::{Group, Reader, groups};
use crate::graph::{Graph, Op};
use crate::weights::{TensorF32, Weights};
use indexmap::IndexMap;
use std::collections::BTreeMap;

/// Each channel's group norm: sqrt of the sum over members of its filter's squared norm.
pub fn group_norms(graph: &Graph, weights: &Weights, group: &Group) -> Vec<f64> {
    let mut sq: Vec<f64> = Vec::new();
    for &m in &group.members {
        let w = &weights.tensors[&format!("{}.weight", graph.nodes[m].name)];
        let per = w.data.len() / w.shape[0];
        sq.resize(w.shape[0], 0.0);
        for (c, filter) in w.data.chunks_exact(per).enumerate() {
            sq[c] += filter
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>();
        }
    }
    sq.into_iter().map(f64::sqrt).collect()
}

/// Keeps `idx` of the channels a Linear reads (`per_channel` consecutive features each).
fn select_features(w: &TensorF32, per_channel: usize, idx: &[usize]) -> TensorF32 {
    let cols: Vec<usize> = idx
        .iter()
        .flat_map(|&c| c * per_channel..(c + 1) * per_channel)
        .collect();
    select(w, 1, &cols)
}

/// `graph` and `weights` with each named group pruned by its ratio (the share of its
/// channels removed; the lowest group norms go). A name that is a group member but not
/// the group's first conv, or no conv at all, is an error naming the group to use.
pub fn prune_groups(
    graph: &Graph,
    weights: &Weights,
    ratios: &BTreeMap<String, f64>,
) -> Result<(Graph, Weights), String> {
    let (g, w, _) = prune_groups_kept(graph, weights, ratios)?;
    Ok((g, w))
}

/// [`prune_groups`], with the channels each named group kept (by group name; on a VGG
/// plan, what [`super::prune::prune_model`] reports per conv).
pub fn prune_groups_kept(
    graph: &Graph,
    weights: &Weights,
    ratios: &BTreeMap<String, f64>,
) -> Result<(Graph, Weights, Kept), String> {
    let mut kept = Kept::new();
    let (g, w) = prune(graph, Some((weights, &mut kept)), ratios)?;
    Ok((g, w.expect("weights given"), kept))
}

/// The graph [`prune_groups`] gives, without weights: what the ratios make of the
/// network's layout and cost (the channel counts do not depend on which channels go).
pub fn pruned_layout(graph: &Graph, ratios: &BTreeMap<String, f64>) -> Result<Graph, String> {
    Ok(prune(graph, None, ratios)?.0)
}

fn prune(
    graph: &Graph,
    mut weights: Option<(&Weights, &mut Kept)>,
    ratios: &BTreeMap<String, f64>,
) -> Result<(Graph, Option<Weights>), String> {
    let gs = groups(graph);
    for name in ratios.keys() {
        if gs.iter().any(|g| &g.name == name) {
            continue;
        }
        let owner = gs
            .iter()
            .find(|g| g.members.iter().any(|&m| graph.nodes[m].name == *name));
        return Err(match owner {
            Some(g) => format!(
                "{name}: its channels are tied to group {:?} (a residual add joins them): give the ratio to {:?}",
                g.name, g.name
            ),
            None => format!("{name}: no conv group of that name"),
        });
    }
    let mut nodes: Vec<Op> = graph.nodes.iter().map(|n| n.op.clone()).collect();
    let mut w = weights.as_ref().map(|(w, _)| (*w).clone());
    for g in &gs {
        let Some(&ratio) = ratios.get(&g.name) else {
            continue;
        };
        if !(0.0..1.0).contains(&ratio) {
            return Err(format!("{}: ratio {ratio}: allowed [0, 1)", g.name));
        }
        let channels = match &graph.nodes[g.members[0]].op {
            Op::Conv(c) => c.out_channels,
            _ => unreachable!("a group's members are convs"),
        };
        let kept = kept_filters(channels, ratio);
        match (&mut w, &mut weights) {
            (Some(w), Some((original, record))) => {
                let keep = kept_indices(&group_norms(graph, original, g), kept);
                apply(graph, g, &keep, &mut nodes, w);
                record.insert(g.name.clone(), keep);
            }
            _ => resize(g, kept, &mut nodes),
        }
    }
    Ok((with_ops(graph, nodes)?, w))
}

/// Gives group `g` `n` channels in `ops`: its members' outputs, its BatchNorms and its
/// readers' inputs.
fn resize(g: &Group, n: usize, ops: &mut [Op]) {
    for &m in &g.members {
        if let Op::Conv(c) = &mut ops[m] {
            c.out_channels = n;
        }
    }
    for &b in &g.bns {
        ops[b] = Op::BatchNorm { channels: n };
    }
    for r in &g.readers {
        match (*r, r.node()) {
            (Reader::Conv(_), i) => {
                if let Op::Conv(c) = &mut ops[i] {
                    c.in_channels = n;
                }
            }
            (Reader::Linear { per_channel, .. }, i) => {
                if let Op::Linear { in_features, .. } = &mut ops[i] {
                    *in_features = n * per_channel;
                }
            }
        }
    }
}

/// `graph` with `ops` in place of its nodes' ops (same names and edges).
fn with_ops(graph: &Graph, ops: Vec<Op>) -> Result<Graph, String> {
    // The same nodes in the same (topological) order: only the shapes need checking.
    let mut g = graph.clone();
    for (node, op) in g.nodes.iter_mut().zip(ops) {
        node.op = op;
    }
    g.shapes().map_err(|e| e.to_string())?;
    Ok(g)
}

/// Keeps channels `keep` of group `g` in the ops and the weights.
fn apply(graph: &Graph, g: &Group, keep: &[usize], ops: &mut [Op], w: &mut Weights) {
    resize(g, keep.len(), ops);
    let mut edit = |key: String, f: &dyn Fn(&TensorF32) -> TensorF32| {
        let t = w
            .tensors
            .get_mut(&key)
            .expect("weights matched to the graph");
        *t = f(t);
    };
    for &m in &g.members {
        let name = &graph.nodes[m].name;
        if matches!(&ops[m], Op::Conv(c) if c.bias) {
            edit(format!("{name}.bias"), &|t| select(t, 0, keep));
        }
        edit(format!("{name}.weight"), &|t| select(t, 0, keep));
    }
    for &b in &g.bns {
        for field in ["weight", "bias", "running_mean", "running_var"] {
            edit(format!("{}.{field}", graph.nodes[b].name), &|t| {
                select(t, 0, keep)
            });
        }
    }
    for r in &g.readers {
        let key = format!("{}.weight", graph.nodes[r.node()].name);
        match *r {
            Reader::Conv(_) => edit(key, &|t| select(t, 1, keep)),
            Reader::Linear { per_channel, .. } => {
                edit(key, &|t| select_features(t, per_channel, keep))
            }
        }
    }
}

/// Each group of `graph` (by name) with the SLAMP score of each of its channels: LAMP's
/// normalisation (Lee et al., ICLR 2021, Eq. 2) over the group's channel norms
/// ([`group_norms`], DepGraph's group importance), so that scores compare across groups.
pub fn group_scores(graph: &Graph, weights: &Weights) -> Vec<(String, Vec<f64>)> {
    groups(graph)
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                slamp_scores(&group_norms(graph, weights, g)),
            )
        })
        .collect()
}

/// Per-group ratios from one global SLAMP threshold over every group's channel scores,
/// the smallest that makes the pruned graph meet `target` (against `original`, the
/// uncompressed model's cost): each group clamped to `max_ratio` and keeping a channel.
/// All zeros when the graph already meets it; an error naming the closest reachable
/// figure when it cannot.
pub fn recommend_group_ratios(
    graph: &Graph,
    weights: &Weights,
    target: PruneTarget,
    max_ratio: f64,
    original: &Cost,
) -> crate::Result<IndexMap<String, f64>> {
    check_target(target, max_ratio)?;
    let layers = group_scores(graph, weights);
    ratios_for_group_scores(graph, &layers, target, max_ratio, original)
}

/// [`recommend_group_ratios`] on given per-channel scores (`layers`: every group of
/// `graph`, in [`groups`]' order, with one score per channel; a channel goes when its
/// score is at most the threshold).
pub fn ratios_for_group_scores(
    graph: &Graph,
    layers: &[(String, Vec<f64>)],
    target: PruneTarget,
    max_ratio: f64,
    original: &Cost,
) -> crate::Result<IndexMap<String, f64>> {
    let gs = groups(graph);
    debug_assert!(gs.iter().zip(layers).all(|(g, (n, _))| &g.name == n));
    let ops: Vec<Op> = graph.nodes.iter().map(|n| n.op.clone()).collect();
    let pruned_cost = |removed: &[usize]| {
        let mut ops = ops.clone();
        for ((g, (_, s)), &k) in gs.iter().zip(layers).zip(removed) {
            resize(g, s.len() - k, &mut ops);
        }
        count(&with_ops(graph, ops).expect("resizing a group keeps the graph valid"))
    };
    threshold_ratios(layers, target, max_ratio, original, pruned_cost)
}
