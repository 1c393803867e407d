//! What the benches share.

use rankprune::arch::Arch;
use rankprune::config::LayerConfig;

/// `base` after the layer config at `path` (relative to the repository).
pub fn config_arch(base: &Arch, path: &str) -> Arch {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    LayerConfig::from_json(&text, &path)
        .unwrap()
        .apply(base, &path)
        .unwrap()
}
