//! Human-readable tables for the CLI (machine output is JSON, elsewhere).

use crate::arch::Arch;
use crate::compress::decompose::{LayerDecomposition, RankRecommendation};
use crate::cost::{Cost, LayerKind};
use crate::graph::Graph;
use indexmap::IndexMap;
use std::fmt::Write;

fn kind_name(k: LayerKind) -> &'static str {
    match k {
        LayerKind::Conv => "conv",
        LayerKind::BatchNorm => "bn",
        LayerKind::MaxPool => "maxpool",
        LayerKind::AvgPool => "avgpool",
        LayerKind::Add => "add",
        LayerKind::Linear => "linear",
    }
}

/// Per-layer table followed by totals.
pub fn cost_table(cost: &Cost) -> String {
    let mut s = String::new();
    let w = cost
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        s,
        "{:<w$}  {:<7}  {:>6}  {:>6}  {:>11}  {:>14}  {:>10}",
        "layer", "kind", "in", "out", "params", "MACs", "MFLOPs"
    );
    for l in &cost.layers {
        let _ = writeln!(
            s,
            "{:<w$}  {:<7}  {:>6}  {:>6}  {:>11}  {:>14}  {:>10.3}",
            l.name,
            kind_name(l.kind),
            l.in_channels,
            l.out_channels,
            l.params,
            l.macs,
            l.flops as f64 / 1e6
        );
    }
    let _ = writeln!(s, "{}", "-".repeat(w + 68));
    let _ = writeln!(
        s,
        "total: {} params ({:.2}M), {} MACs, {:.2} MFLOPs, size {:.2} MB",
        cost.params,
        cost.mparams(),
        cost.macs,
        cost.mflops(),
        cost.size_mb()
    );
    s
}

/// One line comparing a compressed model with its base.
pub fn reduction_line(base: &Cost, new: &Cost) -> String {
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    format!(
        "vs the original: FLOPs {:.2}M -> {:.2}M ({:.2}x fewer), params {:.2}M -> {:.2}M ({:.2}x fewer), size {:.2} MB -> {:.2} MB",
        base.mflops(),
        new.mflops(),
        ratio(base.flops, new.flops),
        base.mparams(),
        new.mparams(),
        ratio(base.params, new.params),
        base.size_mb(),
        new.size_mb()
    )
}

/// Rank recommendation: full, VBMF and chosen ranks with per-layer cost before and after.
pub fn rank_table(recs: &[RankRecommendation], before: &Cost, after: &Cost) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12}  {:>11}  {:>11}  {:>11}  {:>12}  {:>12}  {:>10}  {:>10}",
        "layer", "full [S,T]", "VBMF", "chosen", "MFLOPs", "MFLOPs new", "params", "params new"
    );
    let layer_sum = |c: &Cost, name: &str, f: fn(&crate::cost::LayerCost) -> u64| -> u64 {
        let sub = format!("{name}_tucker_");
        c.layers
            .iter()
            .filter(|l| l.name == name || l.name.starts_with(&sub))
            .map(f)
            .sum()
    };
    for r in recs {
        let pair = |p: [usize; 2]| format!("[{}, {}]", p[0], p[1]);
        let _ = writeln!(
            s,
            "{:<12}  {:>11}  {:>11}  {:>11}  {:>12.2}  {:>12.2}  {:>10}  {:>10}",
            r.layer,
            pair(r.full),
            pair(r.vbmf),
            pair(r.chosen),
            layer_sum(before, &r.layer, |l| l.flops) as f64 / 1e6,
            layer_sum(after, &r.layer, |l| l.flops) as f64 / 1e6,
            layer_sum(before, &r.layer, |l| l.params),
            layer_sum(after, &r.layer, |l| l.params),
        );
    }
    s
}

/// Outcome of a decomposition: ranks, relative reconstruction error, HOOI sweeps.
pub fn decomposition_table(layers: &[LayerDecomposition]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12}  {:>11}  {:>10}  {:>5}",
        "layer", "ranks", "rel error", "HOOI"
    );
    for l in layers {
        let ranks = format!("[{}, {}]", l.ranks[0], l.ranks[1]);
        let _ = writeln!(
            s,
            "{:<12}  {:>11}  {:>10.4}  {:>5}",
            l.layer, ranks, l.rel_error, l.hooi_iterations
        );
    }
    s
}

/// Pruning ratios with filters before and after per conv.
/// [`ratio_table`] for a graph's dependency groups (each named by its first conv; its
/// member convs share the channel count).
pub fn group_ratio_table(before: &Graph, after: &Graph, ratios: &IndexMap<String, f64>) -> String {
    let mut s = String::new();
    let w = ratios.keys().map(String::len).max().unwrap_or(5).max(5);
    let _ = writeln!(
        s,
        "{:<w$}  {:>6}  {:>8}  {:>7}  {:>7}",
        "group", "ratio", "channels", "kept", "members"
    );
    let groups = crate::graph::groups::groups(before);
    let channels = |g: &Graph, name: &str| match g.find(name).map(|i| &g.nodes[i].op) {
        Some(crate::graph::Op::Conv(c)) => c.out_channels,
        _ => 0,
    };
    for (name, r) in ratios {
        let members = groups
            .iter()
            .find(|g| &g.name == name)
            .map_or(0, |g| g.members.len());
        let (n, k) = (channels(before, name), channels(after, name));
        let _ = writeln!(s, "{name:<w$}  {r:>6.3}  {n:>8}  {k:>7}  {members:>7}");
    }
    s
}

pub fn ratio_table(before: &Arch, after: &Arch, ratios: &IndexMap<String, f64>) -> String {
    let mut s = String::new();
    let w = ratios.keys().map(String::len).max().unwrap_or(5).max(5);
    let _ = writeln!(
        s,
        "{:<w$}  {:>6}  {:>8}  {:>7}",
        "layer", "ratio", "filters", "kept"
    );
    for (name, r) in ratios {
        let n = before
            .conv(before.find_conv(name).expect("ratio of a conv"))
            .out_channels;
        let k = after
            .conv(after.find_conv(name).expect("ratio of a conv"))
            .out_channels;
        let _ = writeln!(s, "{name:<w$}  {r:>6.3}  {n:>8}  {k:>7}");
    }
    s
}
