//! Subcommands of the binary that have grown their own files.

pub mod compress;
pub mod daemon;
pub mod dashboard;
pub mod data;
pub mod deploy;
pub mod fidelity;
pub mod latency;
pub mod search;
pub mod train;

use clap::Args;
use rankprune::arch::Arch;
use rankprune::graph::Graph;
use rankprune::network::Network;
use rankprune::{Error, Result};

pub use rankprune::network::{graph_weights, weights_file};

/// The base (uncompressed) architecture a command works on.
#[derive(Args)]
pub struct BaseArgs {
    /// Architecture: vgg11|vgg13|vgg16|vgg19 with optional _bn and @WIDTH (vgg19_bn@0.25),
    /// or a custom plan cfg_bn:16,M,32,M
    #[arg(long, default_value = "vgg19_bn")]
    pub arch: String,
    /// Number of classes of the classifier
    #[arg(long, default_value_t = 100)]
    pub num_classes: usize,
    /// Side of the square images the model takes (32 for the CIFAR and IDX layouts;
    /// folder images are centre-cropped to it)
    #[arg(long, default_value_t = 32)]
    pub input_size: usize,
}

impl BaseArgs {
    /// The network `--arch` names: a VGG plan, a residual network or an ONNX file.
    pub fn network(&self) -> Result<Network> {
        let (arch, classes, side) = (&self.arch, self.num_classes, self.input_size);
        rankprune::network::resolve(arch, classes, side, &rankprune::network::FLAGS)
    }

    /// The graph of a residual network (`resnet20`, `resnet18@0.5`) or of an ONNX file
    /// (`--arch model.onnx`); `None` for a VGG plan.
    pub fn graph(&self) -> Result<Option<Graph>> {
        let net = self.network()?;
        Ok(net.plan.is_none().then_some(net.graph))
    }

    /// The VGG plan `--arch` names; another network is an error.
    pub fn build(&self) -> Result<Arch> {
        self.network()?
            .plan
            .ok_or_else(|| Error::BadInput(format!("--arch {}: not a VGG plan", self.arch)))
    }
}

/// `--flag 0: must be at least 1` for a count that must not be zero.
pub fn at_least_one(flag: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::BadInput(format!("{flag} 0: must be at least 1")));
    }
    Ok(())
}

/// [`at_least_one`] for an optional count.
pub fn at_least_one_if_set(flag: &str, v: Option<usize>) -> Result<()> {
    v.map_or(Ok(()), |v| at_least_one(flag, v))
}

/// A number that must be finite and satisfy `ok`; `allowed` says the range in the error
/// (`--momentum 9: allowed [0, 1)`).
pub fn in_range(flag: &str, v: f64, ok: impl Fn(f64) -> bool, allowed: &str) -> Result<()> {
    if !(v.is_finite() && ok(v)) {
        return Err(Error::BadInput(format!("{flag} {v}: allowed {allowed}")));
    }
    Ok(())
}
