//! Integration tests, linked into one binary: each test file used to be its own binary
//! of about 550 MB with debug info, and twelve of them filled CI's disk.

mod architectures;
mod bad_configs;
mod bad_input;
mod bad_search_files;
mod chaos;
mod cli;
mod common;
mod daemon;
mod dashboard;
mod decomposition;
mod fidelity;
mod folder;
mod graph_net;
mod group_prune;
mod layers;
mod onnx_export;
mod pruning;
mod pytorch_fixture;
mod repair;
mod residual_search;
mod search;
mod search_space;
mod strategies;
mod training;
mod workers;
