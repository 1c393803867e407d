//! Benchmark (not a test): training and inference throughput (images/s) on the CPU, batch
//! 128, SGD momentum step included, of vgg19_bn/CIFAR-100, of the reference-config
//! compressed model and of the Fashion-MNIST simple flow's model (vgg19_bn@0.25, VBMF
//! calibration 0.25 + SLAMP 0.4). Compare with experiments/torch_train_bench.py (same
//! models, same batch).
//!
//! The last column trains through `Vgg::forward_reference` (burn's own conv2d, BatchNorm
//! and relu, batch-major), which is what training ran before our kernels.
//!
//! Run: cargo bench --bench train [-- STEPS [NAME-FILTER]]; experiments/throughput runs
//! it beside the PyTorch script and prints the ratios.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rankprune::arch::{Arch, ArchSpec};
use rankprune::config::LayerConfig;
use rankprune::model::Vgg;
use std::time::Instant;

const BATCH: usize = 128;

fn train_images_per_s(arch: &Arch, steps: usize, reference: bool) -> f64 {
    let device = Device::flex().autodiff();
    let mut model = Vgg::init(arch, 0, &device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let x = Tensor::<4>::random([BATCH, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let classes = arch.num_classes() as i64;
    let labels: Vec<i64> = (0..BATCH as i64).map(|i| i % classes).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [BATCH]), &device);
    let mut step = |model: Vgg| {
        let logits = if reference {
            model.forward_reference(x.clone())
        } else {
            model.forward(x.clone())
        };
        let loss = loss_fn.forward(logits, y.clone());
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
    (steps * BATCH) as f64 / t.elapsed().as_secs_f64()
}

fn inference_images_per_s(arch: &Arch, steps: usize) -> f64 {
    let device = Device::flex();
    let model = Vgg::init(arch, 0, &device);
    let x = Tensor::<4>::random([BATCH, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let _ = model.forward(x.clone()).into_data(); // warm-up
    let t = Instant::now();
    for _ in 0..steps {
        let _ = model.forward(x.clone()).into_data();
    }
    (steps * BATCH) as f64 / t.elapsed().as_secs_f64()
}

fn config_arch(base: &Arch, path: &str) -> Arch {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    LayerConfig::from_json(&text, &path)
        .unwrap()
        .apply(base, &path)
        .unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let steps: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let filter = args.next().unwrap_or_default();
    let base = ArchSpec::parse("vgg19_bn").unwrap().build(100);
    let quarter = ArchSpec::parse("vgg19_bn@0.25").unwrap().build(10);
    let models = [
        ("vgg19_bn", base.clone()),
        (
            "reference-config compressed",
            config_arch(&base, "experiments/reference-search-config.json"),
        ),
        (
            "fmnist simple flow (vgg19_bn@0.25, 8.1x)",
            config_arch(
                &quarter,
                "experiments/results/fmnist-vgg19_bn-0.25-fidelity/fd-pruning.json",
            ),
        ),
    ];
    println!(
        "| model | batch | steps | train images/s | inference images/s | train images/s, burn's layers (before) |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, arch) in models.iter().filter(|(n, _)| n.contains(&filter)) {
        let train = train_images_per_s(arch, steps, false);
        let before = train_images_per_s(arch, steps, true);
        let infer = inference_images_per_s(arch, steps);
        println!("| {name} | {BATCH} | {steps} | {train:.1} | {infer:.1} | {before:.1} |");
    }
}
