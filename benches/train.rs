//! Benchmark (not a test): training and inference throughput (images/s) on the CPU, batch
//! 128, SGD momentum step included, of vgg19_bn/CIFAR-100, of the reference-config
//! compressed model and of the Fashion-MNIST simple flow's model (vgg19_bn@0.25, VBMF
//! calibration 0.25 + SLAMP 0.4). Compare with experiments/torch_train_bench.py (same
//! models, same batch).
//!
//! And of resnet20 (He et al.'s CIFAR ResNet, 10 classes), which the PyTorch script does
//! not have. Training and inference run through `GraphNet` (the model's graph), as
//! `rankprune train` and `eval` do. The last two columns train the VGG plans through the
//! `Vgg` module (the same kernels, driven by the unit list) and `Vgg::forward_reference`
//! (burn's own conv2d, BatchNorm and relu, batch-major, what training ran before our
//! kernels); they read 0 for resnet20.
//!
//! Run: cargo bench --bench train [-- STEPS [NAME-FILTER|=NAME [train|inference|ours]]];
//! experiments/throughput runs
//! it beside the PyTorch script and prints the ratios. `BENCH_DEVICE=wgpu:N` (a build
//! with `--features wgpu`) measures training and inference on that device instead (what
//! `experiments/gpu-check` does); the last column is the first, warm-up training step's
//! seconds (kernel compilation and autotuning on a GPU).
//!
//! `cargo bench --bench train -- profile [STEPS [NAME-FILTER]]` prints instead a per-op
//! profile of one training step and one inference batch: the wall time of each kind of
//! our kernels ([`rankprune::model::profile`]), of the optimizer step, and what is left
//! of the forward and backward passes (burn's ops: classifier, loss, autodiff).

mod common;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use common::config_arch;
use rankprune::arch::{Arch, ArchSpec};
use rankprune::graph::Graph;
use rankprune::graph::build::{ResNetSpec, of_arch};
use rankprune::model::profile;
use rankprune::model::{GraphNet, Vgg};
use rankprune::weights::Weights;
use std::time::Instant;

const BATCH: usize = 128;

/// Inference batches per training step measured: a batch takes a fraction of a step, and
/// a short measurement is at the mercy of the machine's drift. The PyTorch script
/// measures as many.
const INFERENCE_BATCHES: usize = 4;

/// The recipe's optimizer: SGD with momentum 0.9, no dampening.
fn sgd() -> SgdConfig {
    SgdConfig::new().with_momentum(Some(
        MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
    ))
}

/// A model measured: its graph (what `train` and `eval` run) and, for VGG plans, the
/// plan (the `Vgg` module's and burn's-layers columns need it).
struct Model {
    name: &'static str,
    graph: Graph,
    arch: Option<Arch>,
}

impl Model {
    fn vgg(name: &'static str, arch: Arch) -> Self {
        let graph = of_arch(&arch);
        Self {
            name,
            graph,
            arch: Some(arch),
        }
    }

    /// Fresh weights: torchvision's VGG init for plans, its ResNet init otherwise.
    fn weights(&self) -> Weights {
        match &self.arch {
            Some(arch) => Weights::init(arch, 0),
            None => GraphNet::init_weights(&self.graph, 0),
        }
    }

    fn net(&self, device: &Device) -> GraphNet {
        GraphNet::from_weights(&self.graph, self.weights(), "mem", device).expect("init fits")
    }
}

/// One batch of random images and labels cycling through `graph`'s classes.
fn batch(graph: &Graph, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let x = Tensor::<4>::random([BATCH, 3, 32, 32], Distribution::Normal(0.0, 1.0), device);
    let classes = graph.num_classes().expect("a valid graph") as i64;
    let labels: Vec<i64> = (0..BATCH as i64).map(|i| i % classes).collect();
    (
        x,
        Tensor::from_data(TensorData::new(labels, [BATCH]), device),
    )
}

/// Which forward pass a training measurement runs.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// `GraphNet` of the arch's graph: what `train` runs.
    Graph,
    /// The `Vgg` module, the same kernels driven by the unit list (what training ran
    /// before it went through graphs).
    Vgg,
    /// `Vgg::forward_reference`: burn's own layers.
    Reference,
}

/// The device measured: `BENCH_DEVICE` (as `--device` takes it), else the CPU.
fn bench_device() -> Device {
    let name = std::env::var("BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    rankprune::device::parse_device(&name).unwrap_or_else(|e| panic!("BENCH_DEVICE: {e}"))
}

/// Training images per second along `path` (0 for the `Vgg` paths of a graph that is
/// no VGG plan), and the warm-up step's seconds.
fn train_images_per_s(model: &Model, steps: usize, path: Path) -> (f64, f64) {
    let device = bench_device().autodiff();
    let (x, y) = batch(&model.graph, &device);
    if path == Path::Graph {
        let first_weight: fn(&GraphNet) -> Tensor<4> = |m| m.convs[0].weight.val();
        let parts = (|m: &GraphNet, x| m.forward(x), first_weight);
        return timed_steps(model.net(&device), steps, parts, (x, y), &device);
    }
    let Some(arch) = &model.arch else {
        return (0.0, 0.0);
    };
    let model = Vgg::init(arch, 0, &device);
    let forward = move |m: &Vgg, x| match path {
        Path::Reference => m.forward_reference(x),
        _ => m.forward(x),
    };
    let first_weight: fn(&Vgg) -> Tensor<4> = |m| m.convs[0].weight.val();
    timed_steps(model, steps, (forward, first_weight), (x, y), &device)
}

/// Images per second of `steps` SGD steps of `model` (after one warm-up step), and the
/// warm-up step's seconds.
fn timed_steps<M: Module>(
    mut model: M,
    steps: usize,
    (forward, first_weight): (impl Fn(&M, Tensor<4>) -> Tensor<2>, fn(&M) -> Tensor<4>),
    (x, y): (Tensor<4>, Tensor<1, Int>),
    device: &Device,
) -> (f64, f64) {
    let mut optim = sgd().init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut step = |model: M| {
        let loss = loss_fn.forward(forward(&model, x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(0.01, model, grads);
        let _ = first_weight(&model).into_data(); // sync
        model
    };
    let t = Instant::now();
    model = step(model); // warm-up
    let warm_up = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..steps {
        model = step(model);
    }
    let _ = model.num_params();
    ((steps * BATCH) as f64 / t.elapsed().as_secs_f64(), warm_up)
}

fn inference_images_per_s(model: &Model, steps: usize) -> f64 {
    let device = bench_device();
    let model = model.net(&device);
    let x = Tensor::<4>::random([BATCH, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let _ = model.forward(x.clone()).into_data(); // warm-up
    let t = Instant::now();
    for _ in 0..steps {
        let _ = model.forward(x.clone()).into_data();
    }
    (steps * BATCH) as f64 / t.elapsed().as_secs_f64()
}

/// Milliseconds per step of each part of training (`steps` steps) and of inference.
fn profile_rows(m: &Model, steps: usize) -> Vec<(String, f64, f64)> {
    let device = Device::flex().autodiff();
    let mut model = m.net(&device);
    let mut optim = sgd().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (x, y) = batch(&m.graph, &device);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let (mut fwd, mut bwd, mut opt) = (0.0, 0.0, 0.0);
    for step in 0..=steps {
        profile::enable(step > 0); // step 0 warms up
        let t = Instant::now();
        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
        let f = ms(t);
        let t = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let b = ms(t);
        let t = Instant::now();
        model = optim.step(0.01, model, grads);
        let _ = model.convs[0].weight.val().into_data(); // sync
        if step > 0 {
            (fwd, bwd, opt) = (fwd + f, bwd + b, opt + ms(t));
        }
    }
    profile::enable(false);
    let train = profile::take();
    let inference_model =
        GraphNet::from_weights(&m.graph, model.to_weights(), "mem", &Device::flex())
            .expect("the trained weights fit their graph");
    let xi = x.inner();
    let _ = inference_model.forward(xi.clone()).into_data(); // warm-up
    profile::enable(true);
    let t = Instant::now();
    for _ in 0..steps {
        let _ = inference_model.forward(xi.clone()).into_data();
    }
    let infer = ms(t);
    profile::enable(false);
    let inference = profile::take();
    let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps as f64;
    let mut rows = Vec::new();
    let (mut in_fwd, mut in_bwd, mut in_inf) = (0.0, 0.0, 0.0);
    for ((op, d), (_, di)) in train.into_iter().zip(inference) {
        let (t, i) = (per_step(d), per_step(di));
        if op.nested() {
        } else if op.backward() {
            in_bwd += t;
        } else {
            in_fwd += t;
        }
        if !op.nested() {
            in_inf += i;
        }
        rows.push((op.name().to_string(), t, i));
    }
    rows.push((
        "rest of forward (burn: classifier, loss, ...)".into(),
        fwd - in_fwd,
        infer - in_inf,
    ));
    rows.push((
        "rest of backward (burn: autodiff, classifier, ...)".into(),
        bwd - in_bwd,
        0.0,
    ));
    rows.push(("optimizer step".into(), opt, 0.0));
    rows.push(("whole step".into(), fwd + bwd + opt, infer));
    rows
}

fn print_profile(models: &[&Model], steps: usize) {
    for m in models {
        let (name, rows) = (m.name, profile_rows(m, steps));
        let (train, infer) = rows.last().map(|r| (r.1, r.2)).unwrap_or((1.0, 1.0));
        println!("\n{name}, batch {BATCH}, mean of {steps} steps:\n");
        println!("| op | train ms/step | share | inference ms/batch | share |");
        println!("|---|---|---|---|---|");
        for (op, t, i) in rows {
            println!(
                "| {op} | {t:.1} | {:.0}% | {i:.1} | {:.0}% |",
                100.0 * t / train,
                100.0 * i / infer
            );
        }
    }
}

/// Whether model `name` is run: `=NAME` selects it alone, anything else any name
/// containing it.
fn selected(name: &str, filter: &str) -> bool {
    match filter.strip_prefix('=') {
        Some(exact) => name == exact,
        None => name.contains(filter),
    }
}

fn main() {
    rankprune::model::keep_freed_memory(); // as the `rankprune` binary does
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .peekable();
    let profile = args.next_if(|a| a == "profile").is_some();
    let steps: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let filter = args.next().unwrap_or_default();
    let base = ArchSpec::parse("vgg19_bn").unwrap().build(100);
    let quarter = ArchSpec::parse("vgg19_bn@0.25").unwrap().build(10);
    let resnet20 = ResNetSpec::parse("resnet20")
        .expect("a resnet")
        .and_then(|spec| spec.build(10, 32).map_err(|e| e.to_string()))
        .expect("resnet20 builds");
    let models = [
        Model::vgg("vgg19_bn", base.clone()),
        Model::vgg(
            "reference-config compressed",
            config_arch(&base, "experiments/reference-search-config.json"),
        ),
        Model::vgg(
            "fmnist simple flow (vgg19_bn@0.25, 8.1x)",
            config_arch(
                &quarter,
                "experiments/results/fmnist-vgg19_bn-0.25-fidelity/fd-pruning.json",
            ),
        ),
        Model {
            name: "resnet20 (10 classes)",
            graph: resnet20,
            arch: None,
        },
    ];
    let chosen: Vec<&Model> = models
        .iter()
        .filter(|m| selected(m.name, &filter))
        .collect();
    if profile {
        print_profile(&chosen, steps);
        return;
    }
    println!(
        "| model | batch | steps | train images/s | inference images/s | train images/s, Vgg module | train images/s, burn's layers | first step s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    // A third argument measures only part: `train`, `vgg` (training through the Vgg
    // module) or `inference` (for timing the whole process from outside), or `ours`
    // (train and inference, without the Vgg module and burn's layers); the other columns
    // then read 0.
    let part = args.next().unwrap_or_default();
    let train = matches!(part.as_str(), "" | "train" | "ours");
    let infer = matches!(part.as_str(), "" | "inference" | "ours");
    let vgg_too = matches!(part.as_str(), "" | "vgg");
    let before_too = part.is_empty();
    for m in chosen {
        let name = m.name;
        let rate = |on: bool, f: &dyn Fn() -> (f64, f64)| if on { f() } else { (0.0, 0.0) };
        let (train_rate, warm_up) = rate(train, &|| train_images_per_s(m, steps, Path::Graph));
        let (vgg, _) = rate(vgg_too, &|| train_images_per_s(m, steps, Path::Vgg));
        let (before, _) = rate(before_too, &|| {
            train_images_per_s(m, steps, Path::Reference)
        });
        let (infer, _) = rate(infer, &|| {
            (inference_images_per_s(m, INFERENCE_BATCHES * steps), 0.0)
        });
        println!(
            "| {name} | {BATCH} | {steps} | {train_rate:.1} | {infer:.1} | {vgg:.1} | {before:.1} | {warm_up:.1} |"
        );
    }
}
