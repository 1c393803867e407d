//! Deploying a model outside rankprune: BatchNorm folded into the convs for inference
//! ([`fold`]), the network as an ONNX graph ([`onnx`]), and ONNX graphs read back
//! ([`onnx_import`]).

pub mod fold;
pub mod onnx;
pub mod onnx_import;
