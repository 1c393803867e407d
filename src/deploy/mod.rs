//! Deploying a model outside rankprune: BatchNorm folded into the convs for inference
//! ([`fold`]), and the network as an ONNX graph ([`onnx`]).

pub mod fold;
pub mod onnx;
