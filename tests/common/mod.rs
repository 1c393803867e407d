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
