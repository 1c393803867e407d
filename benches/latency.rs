//! Benchmark (not a test): inference latency at batch 1 and batch 128, median over many
//! runs, for vgg19_bn and the reference-config compressed model, on rankprune's two
//! forward passes: the inference engine (`model::Engine`: BatchNorms folded, weights
//! packed once) and the training model's (burn flex tensors, our kernels).
//! `experiments/latency` runs it beside onnxruntime and PyTorch and prints the table.
//!
//! Run: cargo bench --bench latency [-- RUNS_BATCH_1 [RUNS_BATCH_128]]
//! Prints `| engine | model | batch | median ms | min ms | runs |` rows.

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use common::config_arch;
use rankprune::arch::{Arch, ArchSpec};
use rankprune::graph::build::of_arch;
use rankprune::model::{Engine, GraphNet};
use rankprune::weights::Weights;
use std::time::Instant;

/// (median, min) milliseconds of `runs` calls of `run`, after two warm-ups.
fn latency<T>(runs: usize, mut run: impl FnMut() -> T) -> (f64, f64) {
    for _ in 0..2 {
        std::hint::black_box(run());
    }
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(run());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0])
}

/// Each engine's (median, min) milliseconds on `arch` at `batch`.
fn engines(arch: &Arch, batch: usize, runs: usize) -> [(&'static str, (f64, f64)); 2] {
    let device = Device::flex();
    let model = GraphNet::from_weights(&of_arch(arch), Weights::init(arch, 0), "init", &device)
        .expect("weights made for the plan");
    let x = Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let images: Vec<f32> = x.clone().into_data().try_to_vec().expect("f32 images");
    let engine = Engine::new(&model);
    [
        (
            "rankprune engine",
            latency(runs, || engine.forward(&images, batch)),
        ),
        (
            "rankprune (burn)",
            latency(runs, || model.forward(x.clone()).into_data()),
        ),
    ]
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
    println!("| engine | model | batch | median ms | min ms | runs |");
    println!("|---|---|---|---|---|---|");
    for (name, arch) in &models {
        for (batch, runs) in [(1, runs_1), (128, runs_128)] {
            for (engine, (median, min)) in engines(arch, batch, runs) {
                println!("| {engine} | {name} | {batch} | {median:.2} | {min:.2} | {runs} |");
            }
        }
    }
}
