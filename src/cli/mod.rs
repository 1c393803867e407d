//! Subcommands of the binary that have grown their own files.

pub mod compress;
pub mod search;
pub mod train;
