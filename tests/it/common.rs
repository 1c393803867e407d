//! Helpers shared by the integration tests.

use rankprune::arch::{Arch, ArchSpec};
use rankprune::config::LayerConfig;
use rankprune::data::{IMAGE_BYTES, ImageSet};
use std::path::PathBuf;

/// Runs the `rankprune` binary with `args` and waits for it.
pub fn rankprune(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rankprune"))
        .args(args)
        .output()
        .unwrap()
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The ResNet `text` names (`resnet20@0.5`) for `classes` classes and `side`-pixel inputs.
pub fn resnet(text: &str, classes: usize, side: usize) -> rankprune::graph::Graph {
    rankprune::graph::build::ResNetSpec::parse(text)
        .expect("a resnet name")
        .unwrap()
        .build(classes, side)
        .unwrap()
}

pub fn vgg19_bn() -> Arch {
    ArchSpec::parse("vgg19_bn").unwrap().build(100)
}

pub fn reference_config() -> LayerConfig {
    LayerConfig::load(&repo_path("experiments/reference-search-config.json")).unwrap()
}

/// Torchvision-style init plus non-zero biases and BN running means, so that every
/// parameter influences the output.
pub fn random_weights(arch: &Arch, seed: u64) -> rankprune::weights::Weights {
    let mut w = rankprune::weights::Weights::init(arch, seed);
    for (k, t) in w.tensors.iter_mut() {
        if k.ends_with(".bias") || k.ends_with("running_mean") {
            for (i, v) in t.data.iter_mut().enumerate() {
                *v = ((i as f32) * 0.37 + seed as f32).sin() * 0.1;
            }
        }
    }
    w
}

/// A module's parameter count without its BatchNorms' running statistics, which burn
/// counts among a module's parameters and the cost counter does not.
fn trainable_params(num_params: usize, bns: &[burn::nn::BatchNorm]) -> u64 {
    let running: usize = bns
        .iter()
        .map(|bn| 2 * bn.running_mean.value().dims()[0])
        .sum();
    (num_params - running) as u64
}

/// The model's own parameter count equals the cost counter's.
pub fn assert_counter_matches_model(model: &rankprune::model::Vgg, arch: &Arch) {
    use burn::module::Module;
    assert_eq!(
        trainable_params(model.num_params(), &model.bns),
        rankprune::cost::count(arch).params,
        "{}",
        arch.model
    );
}

/// The graph model's parameter count equals the graph cost counter's.
pub fn assert_graph_counter_matches_model(model: &rankprune::model::GraphNet) {
    use burn::module::Module;
    assert_eq!(
        trainable_params(model.num_params(), &model.bns),
        rankprune::graph::cost::count(&model.graph).params,
        "{}",
        model.graph.model
    );
}

/// Class c = a bright horizontal stripe in band c of the image, plus pixel noise.
pub fn stripes(n: usize, classes: usize, seed: u64) -> ImageSet {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 58) as u8
    };
    let mut set = ImageSet::default();
    for i in 0..n {
        let label = (i % classes) as u32;
        let band = 32 / classes;
        for c in 0..3 {
            for y in 0..32 {
                for _x in 0..32 {
                    let on = (y / band) as u32 == label;
                    set.pixels
                        .push(if on { 180 } else { 40 } + noise() + c as u8);
                }
            }
        }
        set.labels.push(label);
    }
    assert_eq!(set.pixels.len(), n * IMAGE_BYTES);
    set
}

/// Writes `set` in the CIFAR-100 binary layout (coarse label 0, fine label, pixels).
pub fn write_cifar100(set: &ImageSet, path: &std::path::Path) {
    let mut bytes = Vec::with_capacity(set.len() * (IMAGE_BYTES + 2));
    for i in 0..set.len() {
        bytes.push(0);
        bytes.push(set.labels[i] as u8);
        bytes.extend_from_slice(set.image(i));
    }
    std::fs::write(path, bytes).unwrap();
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct Killed(pub std::process::Child);

impl Killed {
    /// Sends SIGTERM, the graceful stop (SIGKILL is `self.0.kill()`).
    pub fn terminate(&self) {
        std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
    }
}

/// Starts the binary with `args`, its stderr going to the file `log` (a chatty child
/// never blocks on a full pipe) and its stdout nowhere.
pub fn spawn_logged(args: &[&str], log: &std::path::Path) -> Killed {
    let log = std::fs::File::create(log).unwrap();
    Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_rankprune"))
            .env("RUST_LOG", "info")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
