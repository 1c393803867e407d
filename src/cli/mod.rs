//! Subcommands of the binary that have grown their own files.

pub mod compress;
pub mod daemon;
pub mod dashboard;
pub mod deploy;
pub mod fidelity;
pub mod search;
pub mod train;

use clap::Args;
use rankprune::arch::{Arch, ArchSpec};
use rankprune::{Error, Result};

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
}

impl BaseArgs {
    pub fn build(&self) -> Result<Arch> {
        if self.num_classes == 0 {
            return Err(Error::BadInput("--num-classes must be at least 1".into()));
        }
        let spec =
            ArchSpec::parse(&self.arch).map_err(|e| Error::BadInput(format!("--arch: {e}")))?;
        Ok(spec.build(self.num_classes))
    }
}
