//! An ONNX model read into a [`Graph`] and its [`Weights`]: `Conv`, `BatchNormalization`,
//! `Relu`, `MaxPool`, `AveragePool`, `GlobalAveragePool`, `Add`, `Flatten`, `Gemm` and
//! `Identity`, weights from the initializers (operator definitions:
//! <https://onnx.ai/onnx/operators/>).
//!
//! A layer is named after its weight initializer (`layer1.0.conv1.weight` names the
//! conv `layer1.0.conv1`, as `torch.onnx.export` keeps PyTorch's keys when constant
//! folding is off); other nodes keep their ONNX names. Anything else (an unsupported op
//! or attribute, a shape that does not fit) is an error naming the node and the op.

use crate::graph::{Conv, Graph, GraphError, INPUT, NodeDef, Op, Window};
use crate::weights::{TensorF32, Weights};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{Message, ModelProto, NodeProto, TensorProto};
use std::collections::HashMap;
use std::path::Path;

/// An ONNX file that cannot be imported.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ImportError {
    pub file: String,
    pub message: String,
}

/// The values a node's inputs name: the image, another node's output, or a constant.
enum Source {
    Image,
    Node(String),
    Constant(TensorF32),
}

fn floats(t: &TensorProto) -> Result<TensorF32, String> {
    if t.data_type != DataType::FLOAT as i32 {
        return Err(format!("initializer {:?} is not float32", t.name));
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    if data.len() != shape.iter().product::<usize>() {
        return Err(format!("initializer {:?} has the wrong size", t.name));
    }
    Ok(TensorF32::new(shape, data))
}

/// The integer attribute `name` of `node`, or `default`.
fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}

fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

fn float(node: &NodeProto, name: &str, default: f32) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.f)
}

/// One value for a square window attribute (`[k, k]`, `[p, p, p, p]`), or why not.
fn square(node: &NodeProto, name: &str, default: i64) -> Result<usize, String> {
    match ints(node, name) {
        None => Ok(default as usize),
        Some(v) if !v.is_empty() && v.iter().all(|&x| x == v[0] && x >= 0) => Ok(v[0] as usize),
        Some(v) => Err(format!(
            "{name} {v:?}: only square windows with equal padding on every side are supported"
        )),
    }
}

/// Reads `path`.
pub fn import(path: &Path) -> Result<(Graph, Weights), ImportError> {
    let file = path.display().to_string();
    let err = |message: String| ImportError {
        file: file.clone(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let model =
        ModelProto::parse_from_bytes(&bytes).map_err(|e| err(format!("not an ONNX model: {e}")))?;
    let name = path.file_stem().unwrap_or_default().to_string_lossy();
    from_model(&model, &name).map_err(err)
}

/// The graph and weights of `model`; errors name the node and its op.
pub fn from_model(model: &ModelProto, name: &str) -> Result<(Graph, Weights), String> {
    let g = &model.graph;
    let mut sources: HashMap<String, Source> = HashMap::new();
    for t in &g.initializer {
        sources.insert(t.name.clone(), Source::Constant(floats(t)?));
    }
    let inputs: Vec<_> = g
        .input
        .iter()
        .filter(|i| !sources.contains_key(&i.name))
        .collect();
    let [image] = inputs.as_slice() else {
        return Err(format!(
            "the graph has {} image inputs: one is supported",
            inputs.len()
        ));
    };
    let dims: Vec<i64> = image
        .type_
        .tensor_type()
        .shape
        .dim
        .iter()
        .map(|d| d.dim_value())
        .collect();
    let input = match dims.as_slice() {
        [_, c, h, w] if *c > 0 && *h > 0 && *w > 0 => [*c as usize, *h as usize, *w as usize],
        _ => {
            return Err(format!(
                "input {:?} has shape {dims:?}: expected [batch, C, H, W] with fixed C, H, W",
                image.name
            ));
        }
    };
    sources.insert(image.name.clone(), Source::Image);
    let mut defs = Vec::new();
    let mut weights = Weights::default();
    for node in &g.node {
        let at = |m: String| format!("node {} ({}): {m}", node.name, node.op_type);
        let constant = |k: usize| -> Result<&TensorF32, String> {
            match node.input.get(k).and_then(|n| sources.get(n)) {
                Some(Source::Constant(t)) => Ok(t),
                _ => Err(at(format!("input {k} must be an initializer"))),
            }
        };
        let data_input = |k: usize| -> Result<String, String> {
            match node.input.get(k).and_then(|n| sources.get(n)) {
                Some(Source::Image) => Ok(INPUT.to_string()),
                Some(Source::Node(n)) => Ok(n.clone()),
                Some(Source::Constant(_)) => Err(at(format!("input {k} is a constant"))),
                None => Err(at(format!("input {k} is not produced by any node"))),
            }
        };
        // The layer's name: its weight initializer's without ".weight".
        let layer = |k: usize| -> String {
            let w = &node.input[k];
            w.strip_suffix(".weight").unwrap_or(w).to_string()
        };
        let mut put = |key: String, t: &TensorF32| {
            weights.tensors.insert(key, t.clone());
        };
        let (node_name, op, reads) = match node.op_type.as_str() {
            "Identity" => {
                let out = match node.input.first().and_then(|n| sources.get(n)) {
                    Some(Source::Constant(t)) => Source::Constant(t.clone()),
                    Some(Source::Image) => Source::Image,
                    Some(Source::Node(n)) => Source::Node(n.clone()),
                    None => return Err(at("reads nothing".into())),
                };
                sources.insert(node.output[0].clone(), out);
                continue;
            }
            "Conv" => {
                let w = constant(1)?;
                if w.shape.len() != 4 || w.shape[2] != w.shape[3] {
                    return Err(at(format!(
                        "weight shape {:?}: square 2-D kernels only",
                        w.shape
                    )));
                }
                if int(node, "group", 1) != 1 {
                    return Err(at(
                        "group > 1 (grouped or depthwise convs) is not supported".into(),
                    ));
                }
                if ints(node, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
                    return Err(at("dilation is not supported".into()));
                }
                let auto_pad = node.attribute.iter().find(|a| a.name == "auto_pad");
                if auto_pad.is_some_and(|a| a.s != b"NOTSET") {
                    return Err(at("auto_pad is not supported: give explicit pads".into()));
                }
                let name = layer(1);
                put(format!("{name}.weight"), w);
                let bias = node.input.len() > 2 && !node.input[2].is_empty();
                if bias {
                    put(format!("{name}.bias"), constant(2)?);
                }
                let op = Op::Conv(Conv {
                    in_channels: w.shape[1],
                    out_channels: w.shape[0],
                    kernel: w.shape[2],
                    stride: square(node, "strides", 1).map_err(at)?,
                    padding: square(node, "pads", 0).map_err(at)?,
                    bias,
                });
                (name, op, vec![data_input(0)?])
            }
            "BatchNormalization" => {
                let eps = float(node, "epsilon", 1e-5);
                if (eps - 1e-5).abs() > 1e-9 {
                    return Err(at(format!(
                        "epsilon {eps}: only 1e-5 (PyTorch's) is supported"
                    )));
                }
                let name = layer(1);
                for (k, field) in [
                    (1, "weight"),
                    (2, "bias"),
                    (3, "running_mean"),
                    (4, "running_var"),
                ] {
                    put(format!("{name}.{field}"), constant(k)?);
                }
                let channels = constant(1)?.data.len();
                (name, Op::BatchNorm { channels }, vec![data_input(0)?])
            }
            "Relu" => (node.name.clone(), Op::Relu, vec![data_input(0)?]),
            "MaxPool" | "AveragePool" => {
                if int(node, "ceil_mode", 0) != 0 {
                    return Err(at("ceil_mode is not supported".into()));
                }
                let w = Window {
                    kernel: square(node, "kernel_shape", 1).map_err(at)?,
                    stride: square(node, "strides", 1).map_err(at)?,
                    padding: square(node, "pads", 0).map_err(at)?,
                };
                let op = if node.op_type == "MaxPool" {
                    Op::MaxPool(w)
                } else {
                    if w.padding > 0 && int(node, "count_include_pad", 0) == 0 {
                        return Err(at(
                            "padding without count_include_pad is not supported".into()
                        ));
                    }
                    Op::AvgPool(w)
                };
                (node.name.clone(), op, vec![data_input(0)?])
            }
            "GlobalAveragePool" => (node.name.clone(), Op::GlobalAvgPool, vec![data_input(0)?]),
            "Add" => {
                let reads = (0..node.input.len())
                    .map(data_input)
                    .collect::<Result<_, _>>()?;
                (node.name.clone(), Op::Add, reads)
            }
            "Flatten" => {
                if int(node, "axis", 1) != 1 {
                    return Err(at("only axis = 1 is supported".into()));
                }
                (node.name.clone(), Op::Flatten, vec![data_input(0)?])
            }
            "Gemm" => {
                let w = constant(1)?;
                let plain = int(node, "transA", 0) == 0
                    && int(node, "transB", 0) == 1
                    && float(node, "alpha", 1.0) == 1.0
                    && float(node, "beta", 1.0) == 1.0;
                if !plain || w.shape.len() != 2 || node.input.len() < 3 {
                    return Err(at(
                        "only x * W^T + b (transB = 1, alpha = beta = 1, with a bias) is supported"
                            .into(),
                    ));
                }
                let name = layer(1);
                put(format!("{name}.weight"), w);
                put(format!("{name}.bias"), constant(2)?);
                let op = Op::Linear {
                    in_features: w.shape[1],
                    out_features: w.shape[0],
                };
                (name, op, vec![data_input(0)?])
            }
            other => {
                return Err(at(format!(
                    "unsupported op {other}: supported are Conv, BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, Add, Flatten, Gemm and Identity"
                )));
            }
        };
        for out in &node.output {
            sources.insert(out.clone(), Source::Node(node_name.clone()));
        }
        defs.push(NodeDef {
            name: node_name,
            op,
            inputs: reads,
        });
    }
    let graph = Graph::new(name, input, defs).map_err(|e: GraphError| e.to_string())?;
    let last = &graph.nodes.last().ok_or("the graph has no nodes")?.name;
    let out = g.output.first().ok_or("the graph has no output")?;
    match sources.get(&out.name) {
        Some(Source::Node(n)) if n == last => Ok((graph, weights)),
        _ => Err(format!(
            "output {:?} is not the last node's ({last}): every node must lead to the logits",
            out.name
        )),
    }
}
