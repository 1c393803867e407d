//! Human-readable tables for the CLI (machine output is JSON, elsewhere).

use crate::cost::{Cost, LayerKind};
use std::fmt::Write;

fn kind_name(k: LayerKind) -> &'static str {
    match k {
        LayerKind::Conv => "conv",
        LayerKind::BatchNorm => "bn",
        LayerKind::MaxPool => "maxpool",
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
        "vs base: FLOPs {:.2}M -> {:.2}M ({:.2}x fewer), params {:.2}M -> {:.2}M ({:.2}x fewer), size {:.2} MB -> {:.2} MB",
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
