//! One error type for the crate; the CLI maps it to exit codes (2 bad input, 1 failure).

use crate::arch::ArchSpecError;
use crate::config::ConfigError;
use crate::weights::WeightsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Arch(#[from] ArchSpecError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Input that is wrong in some other way (an argument, a device name).
    #[error("{0}")]
    BadInput(String),
    /// Something went wrong that is not the user's input (I/O while writing, a crash).
    #[error("{0}")]
    Failure(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Process exit code: 2 for bad input, 1 for failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Failure(_) => 1,
            _ => 2,
        }
    }
}
