//! Subcommands of the binary that have grown their own files.

pub mod compress;
pub mod fidelity;
pub mod search;
pub mod train;
