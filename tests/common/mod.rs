//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rankprune::arch::{Arch, ArchSpec};
use rankprune::config::LayerConfig;
use std::path::PathBuf;

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
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

/// The model's own parameter count equals the cost counter's. burn counts BN running
/// statistics among a module's parameters; the counter does not.
pub fn assert_counter_matches_model(model: &rankprune::model::Vgg, arch: &Arch) {
    use burn::module::Module;
    let running: usize = model
        .bns
        .iter()
        .map(|bn| 2 * bn.running_mean.value().dims()[0])
        .sum();
    assert_eq!(
        (model.num_params() - running) as u64,
        rankprune::cost::count(arch).params,
        "{}",
        arch.model
    );
}
