//! The network a user names (`model.arch` of a budget, `--arch` of a command): a VGG plan
//! (`vgg19_bn@0.25`, `cfg_bn:16,M,32`), a residual network (`resnet20`, `resnet18@0.5`)
//! or an ONNX file, always as a [`Graph`]; and its weights file, checked against it.

use crate::arch::{Arch, ArchSpec};
use crate::graph::Graph;
use crate::graph::build::{ResNetSpec, of_arch};
use crate::model::graph_weight_shapes;
use crate::weights::Weights;
use crate::{Error, Result};
use std::path::Path;

/// A named network: its graph, and the VGG plan it is the graph of, if it is one (the
/// plan-only tools read it: the Tucker cache, the least-squares repair, anchored spaces).
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub graph: Graph,
    pub plan: Option<Arch>,
}

impl From<Arch> for Network {
    /// A VGG plan as a network.
    fn from(plan: Arch) -> Self {
        Network {
            graph: of_arch(&plan),
            plan: Some(plan),
        }
    }
}

/// The network `arch` names, for `num_classes` classes and `side`-pixel images. Errors
/// are bad input (exit 2) that say what is allowed; `key` names the setting (`--arch`,
/// `model.arch`).
pub fn resolve(arch: &str, num_classes: usize, side: usize, key: &str) -> Result<Network> {
    let bad = |m: String| Error::BadInput(format!("{key} = {arch:?}: {m}"));
    if num_classes == 0 {
        return Err(bad("0 classes: allowed 1 or more".into()));
    }
    if arch.ends_with(".onnx") {
        let graph = import_onnx(Path::new(arch))?.0;
        return Ok(Network { graph, plan: None });
    }
    if let Some(spec) = ResNetSpec::parse(arch) {
        let spec = spec.map_err(bad)?;
        if side < 8 {
            return Err(bad(format!("input size {side}: allowed 8 or more")));
        }
        let graph = spec
            .build(num_classes, side)
            .map_err(|e| bad(e.to_string()))?;
        return Ok(Network { graph, plan: None });
    }
    let spec = ArchSpec::parse(arch).map_err(|e| bad(e.to_string()))?;
    if side < spec.min_side() {
        return Err(bad(format!(
            "input size {side}: allowed {} or more (every max-pool halves the maps)",
            spec.min_side()
        )));
    }
    Ok(spec.build_sized(num_classes, side).into())
}

/// The graph and weights of an ONNX file; a file that cannot be imported is bad input
/// (exit 2), named with the node and op at fault.
pub fn import_onnx(path: &Path) -> Result<(Graph, Weights)> {
    crate::deploy::onnx_import::import(path).map_err(|e| Error::BadInput(e.to_string()))
}

/// The tensors of a weights file: an ONNX file's initializers, or safetensors / a
/// PyTorch state dict (by extension), unchecked.
pub fn weights_file(path: &Path) -> Result<Weights> {
    Ok(match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => import_onnx(path)?.1,
        _ => Weights::load(path)?,
    })
}

impl Network {
    /// Fresh weights: torchvision's VGG init for a plan, the ResNet init otherwise
    /// ([`crate::model::GraphNet::init_weights`]).
    pub fn init_weights(&self, seed: u64) -> Weights {
        match &self.plan {
            Some(plan) => Weights::init(plan, seed),
            None => crate::model::GraphNet::init_weights(&self.graph, seed),
        }
    }
}

/// Weights for a graph: [`weights_file`], checked against the graph.
pub fn graph_weights(graph: &Graph, path: &Path) -> Result<Weights> {
    let expected = graph_weight_shapes(graph);
    Ok(weights_file(path)?.matched_to_shapes(expected, &path.display().to_string())?)
}
