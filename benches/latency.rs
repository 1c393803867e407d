//! Benchmark (not a test): inference latency of rankprune's own forward pass (the graph
//! model every command runs, burn flex, our kernels) at batch 1 and batch 128, median over many runs, for vgg19_bn and the
//! reference-config compressed model. `experiments/latency` runs it beside onnxruntime
//! and PyTorch and prints the table.
//!
//! Run: cargo bench --bench latency [-- RUNS_BATCH_1 [RUNS_BATCH_128]]
//! Prints `| model | batch | median ms | min ms | runs |` rows.

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use common::config_arch;
use rankprune::arch::{Arch, ArchSpec};
use rankprune::graph::build::of_arch;
use rankprune::model::GraphNet;
use rankprune::weights::Weights;
use std::time::Instant;

/// (median, min) milliseconds of `runs` forward passes of a `batch`, after two warm-ups.
fn latency(arch: &Arch, batch: usize, runs: usize) -> (f64, f64) {
    let device = Device::flex();
    let model = GraphNet::from_weights(&of_arch(arch), Weights::init(arch, 0), "init", &device)
        .expect("weights made for the plan");
    let x = Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    for _ in 0..2 {
        let _ = model.forward(x.clone()).into_data();
    }
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let _ = model.forward(x.clone()).into_data();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0])
}

fn main() {
    rankprune::model::keep_freed_memory(); // as the `rankprune` binary does
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let runs_1: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    let runs_128: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(7);
    let base = ArchSpec::parse("vgg19_bn").unwrap().build(100);
    let models = [
        ("vgg19_bn", base.clone()),
        (
            "reference-config compressed",
            config_arch(&base, "experiments/reference-search-config.json"),
        ),
    ];
    println!("| model | batch | median ms | min ms | runs |");
    println!("|---|---|---|---|---|");
    for (name, arch) in &models {
        for (batch, runs) in [(1, runs_1), (128, runs_128)] {
            let (median, min) = latency(arch, batch, runs);
            println!("| {name} | {batch} | {median:.2} | {min:.2} | {runs} |");
        }
    }
}
