//! Benchmark (not a test): training throughput (images/s) of vgg19_bn/CIFAR-100 and of
//! the reference-config compressed model, batch 128, SGD step included, on the CPU.
//! Compare with experiments/torch_train_bench.py (same model, same batch).
//!
//! Run: cargo bench --bench train [-- STEPS]

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rankprune::arch::{Arch, ArchSpec};
use rankprune::config::LayerConfig;
use rankprune::model::Vgg;
use std::time::Instant;

fn images_per_s(arch: &Arch, steps: usize, batch: usize) -> f64 {
    let device = Device::flex().autodiff();
    let mut model = Vgg::init(arch, 0, &device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let x = Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 100).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &device);
    let mut step = |model: Vgg| {
        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(0.01, model, grads);
        let _ = model.convs[0].weight.val().into_data(); // sync
        model
    };
    model = step(model); // warm-up
    let t = Instant::now();
    for _ in 0..steps {
        model = step(model);
    }
    let _ = model.num_params();
    (steps * batch) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let base = ArchSpec::parse("vgg19_bn").unwrap().build(100);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/reference-search-config.json"
    ))
    .unwrap();
    let compressed = LayerConfig::from_json(&text, "ref")
        .unwrap()
        .apply(&base, "ref")
        .unwrap();
    println!("| model | batch | steps | train images/s (burn flex, CPU) |");
    println!("|---|---|---|---|");
    for (name, arch) in [
        ("vgg19_bn", &base),
        ("reference-config compressed", &compressed),
    ] {
        println!(
            "| {name} | 128 | {steps} | {:.1} |",
            images_per_s(arch, steps, 128)
        );
    }
}
