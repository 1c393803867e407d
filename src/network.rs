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
/// least-squares repair reads plans).
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

/// The settings that name a network, its classes and its input side, as errors cite
/// them (`--input-size 4: ...`, `model.input_size = 4: ...`).
pub struct Keys {
    pub arch: &'static str,
    pub classes: &'static str,
    pub side: &'static str,
    /// Between a key and its value in messages.
    pub assign: &'static str,
}

/// The command-line flags.
pub const FLAGS: Keys = Keys {
    arch: "--arch",
    classes: "--num-classes",
    side: "--input-size",
    assign: " ",
};

/// A budget's `[model]` keys.
pub const BUDGET: Keys = Keys {
    arch: "model.arch",
    classes: "model.num_classes",
    side: "model.input_size",
    assign: " = ",
};

/// What a network name names, its class count and input side checked.
enum Named {
    Onnx,
    ResNet(ResNetSpec),
    Vgg(ArchSpec),
}

/// Reads the name `arch` for `classes` classes and `side`-pixel images (an ONNX file is
/// not opened here); the error says which key is wrong and what it allows.
fn named(
    arch: &str,
    classes: usize,
    side: usize,
    keys: &Keys,
) -> std::result::Result<Named, String> {
    let Keys {
        arch: arch_key,
        classes: classes_key,
        side: side_key,
        assign,
    } = keys;
    if classes == 0 {
        return Err(format!("{classes_key}{assign}0: allowed 1 or more"));
    }
    if arch.ends_with(".onnx") {
        return Ok(Named::Onnx);
    }
    if let Some(spec) = ResNetSpec::parse(arch) {
        let spec = spec.map_err(|e| format!("{arch_key}: {e}"))?;
        if side < 8 {
            return Err(format!("{side_key}{assign}{side}: allowed 8 or more"));
        }
        return Ok(Named::ResNet(spec));
    }
    let spec = ArchSpec::parse(arch).map_err(|e| format!("{arch_key}: {e}"))?;
    if side < spec.min_side() {
        return Err(format!(
            "{side_key}{assign}{side}: allowed {} or more (every max-pool of {arch} halves the maps)",
            spec.min_side()
        ));
    }
    Ok(Named::Vgg(spec))
}

/// Whether `arch` names a network `classes` classes and `side`-pixel images suit (an
/// ONNX file is read later, by [`resolve`]).
pub fn check(
    arch: &str,
    classes: usize,
    side: usize,
    keys: &Keys,
) -> std::result::Result<(), String> {
    named(arch, classes, side, keys).map(|_| ())
}

/// The network `arch` names, for `classes` classes and `side`-pixel images. Errors are
/// bad input (exit 2) that name the key at fault and say what it allows.
pub fn resolve(arch: &str, classes: usize, side: usize, keys: &Keys) -> Result<Network> {
    match named(arch, classes, side, keys).map_err(Error::BadInput)? {
        Named::Onnx => {
            let graph = import_onnx(Path::new(arch))?.0;
            Ok(Network { graph, plan: None })
        }
        Named::ResNet(spec) => {
            let graph = spec
                .build(classes, side)
                .map_err(|e| Error::BadInput(format!("{} {arch}: {e}", keys.arch)))?;
            Ok(Network { graph, plan: None })
        }
        Named::Vgg(spec) => Ok(spec.build_sized(classes, side).into()),
    }
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
