//! Subcommands of the binary that have grown their own files.

pub mod train;
