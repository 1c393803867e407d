//! `--device cpu|wgpu:N`: the one place where a burn device is chosen.

use crate::{Error, Result};
use burn::tensor::Device;

/// Parses a device name: `cpu` (burn-flex) or, with the `wgpu` feature, `wgpu:N`
/// (the N-th discrete GPU).
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        other => match other.strip_prefix("wgpu:").map(str::parse::<usize>) {
            Some(Ok(index)) => wgpu_device(index),
            _ => Err(Error::BadInput(format!(
                "--device {other:?}: allowed values are cpu and wgpu:N"
            ))),
        },
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device(index: usize) -> Result<Device> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index)))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_index: usize) -> Result<Device> {
    Err(Error::BadInput(
        "--device wgpu:N needs a build with `--features wgpu` (cargo build --release --features wgpu)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_junk() {
        assert!(parse_device("cpu").is_ok());
        assert!(parse_device("gpu").is_err());
        assert!(parse_device("wgpu:x").is_err());
    }
}
