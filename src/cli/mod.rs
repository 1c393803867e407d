//! Subcommands of the binary that have grown their own files.

pub mod compress;
pub mod daemon;
pub mod dashboard;
pub mod data;
pub mod deploy;
pub mod fidelity;
pub mod search;
pub mod train;

use clap::Args;
use rankprune::arch::{Arch, ArchSpec};
use rankprune::graph::Graph;
use rankprune::graph::build::ResNetSpec;
use rankprune::{Error, Result};
use std::path::Path;

pub use rankprune::network::{graph_weights, import_onnx, weights_file};

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
    pub fn network(&self) -> Result<rankprune::network::Network> {
        match self.graph()? {
            Some(graph) => Ok(rankprune::network::Network { graph, plan: None }),
            None => Ok(self.build()?.into()),
        }
    }

    /// The graph of a residual network (`resnet20`, `resnet18@0.5`) or of an ONNX file
    /// (`--arch model.onnx`); `None` for a VGG plan.
    pub fn graph(&self) -> Result<Option<Graph>> {
        if self.arch.ends_with(".onnx") {
            return Ok(Some(import_onnx(Path::new(&self.arch))?.0));
        }
        let Some(spec) = ResNetSpec::parse(&self.arch) else {
            return Ok(None);
        };
        let spec = spec.map_err(|e| Error::BadInput(format!("--arch {e}")))?;
        at_least_one("--num-classes", self.num_classes)?;
        if self.input_size < 8 {
            return Err(Error::BadInput(format!(
                "--input-size {}: allowed 8 or more",
                self.input_size
            )));
        }
        let graph = spec
            .build(self.num_classes, self.input_size)
            .map_err(|e| Error::BadInput(format!("--arch {}: {e}", self.arch)))?;
        Ok(Some(graph))
    }

    pub fn build(&self) -> Result<Arch> {
        if self.num_classes == 0 {
            return Err(Error::BadInput("--num-classes must be at least 1".into()));
        }
        let spec =
            ArchSpec::parse(&self.arch).map_err(|e| Error::BadInput(format!("--arch: {e}")))?;
        if self.input_size < spec.min_side() {
            return Err(Error::BadInput(format!(
                "--input-size {}: allowed {} or more (every max-pool of {} halves the maps)",
                self.input_size,
                spec.min_side(),
                self.arch
            )));
        }
        Ok(spec.build_sized(self.num_classes, self.input_size))
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
