//! Named f32 tensors with PyTorch-style keys, and their files: safetensors (read and
//! written) and PyTorch state_dict `.pt`/`.pth` (read, through burn-store's reader).
//!
//! Keys: `features.0.weight`, `features.0.bias`, `features.1.weight` (BN gamma),
//! `features.1.bias` (beta), `features.1.running_mean`, `features.1.running_var`,
//! `features.3_tucker_0.weight`, `classifier.weight` (`[out, in]`), `classifier.bias`.

use crate::arch::{Arch, Unit};
use burn::store::pytorch_reader::{DType, PytorchReader};
use indexmap::IndexMap;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use std::path::Path;

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorF32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorF32 {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not fit {} values",
            data.len()
        );
        Self { shape, data }
    }

    pub fn filled(shape: Vec<usize>, value: f32) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![value; n],
        }
    }
}

/// Errors reading, writing or matching weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}: missing tensor {key:?} (expected shape {shape:?})")]
    Missing {
        file: String,
        key: String,
        shape: Vec<usize>,
    },
    #[error("{file}: tensor {key:?} has shape {found:?}, the architecture needs {expected:?}")]
    Shape {
        file: String,
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{file}: unexpected tensor {key:?}: the architecture has no such parameter")]
    Unexpected { file: String, key: String },
}

/// All tensors of a model, in architecture order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    pub tensors: IndexMap<String, TensorF32>,
}

/// Keys and PyTorch-layout shapes of every tensor `arch` has, in order.
pub fn expected_shapes(arch: &Arch) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for unit in &arch.units {
        match unit {
            Unit::Conv(c) => {
                for conv in c.body.convs() {
                    let k = conv.kernel;
                    out.push((
                        format!("{}.weight", conv.name),
                        vec![conv.out_channels, conv.in_channels, k, k],
                    ));
                    if conv.bias {
                        out.push((format!("{}.bias", conv.name), vec![conv.out_channels]));
                    }
                }
                if let Some(bn) = &c.bn {
                    let n = c.body.out_channels();
                    for field in ["weight", "bias", "running_mean", "running_var"] {
                        out.push((format!("{bn}.{field}"), vec![n]));
                    }
                }
            }
            Unit::MaxPool { .. } => {}
            Unit::Linear(l) => {
                out.push((
                    format!("{}.weight", l.name),
                    vec![l.out_features, l.in_features],
                ));
                out.push((format!("{}.bias", l.name), vec![l.out_features]));
            }
        }
    }
    out
}

fn file_err(path: &Path, message: impl Into<String>) -> WeightsError {
    WeightsError::File {
        file: path.display().to_string(),
        message: message.into(),
    }
}

impl Weights {
    /// Fresh weights for `arch`, as torchvision initialises VGG: convs Kaiming-normal
    /// (fan-out, ReLU gain), biases 0, BN gamma 1 and beta 0, linear N(0, 0.01).
    pub fn init(arch: &Arch, seed: u64) -> Self {
        Self::init_shapes(expected_shapes(arch), seed)
    }

    /// [`Self::init`] for tensors given by key and PyTorch shape: 4-D are conv weights,
    /// 2-D linear weights, `*.weight` of 1-D BN gammas, `*running_var` BN variances.
    pub fn init_shapes(expected: Vec<(String, Vec<usize>)>, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tensors = IndexMap::new();
        for (key, shape) in expected {
            let n: usize = shape.iter().product();
            let normal = |std: f64, rng: &mut StdRng| {
                let d = Normal::new(0.0, std).expect("a positive std");
                (0..n).map(|_| d.sample(rng) as f32).collect::<Vec<_>>()
            };
            let data = if key.ends_with("running_var") {
                vec![1.0; n]
            } else if shape.len() == 4 {
                let fan_out = shape[0] * shape[2] * shape[3];
                normal((2.0 / fan_out as f64).sqrt(), &mut rng)
            } else if shape.len() == 2 {
                normal(0.01, &mut rng)
            } else if key.ends_with(".weight") {
                vec![1.0; n] // BN gamma
            } else {
                vec![0.0; n]
            };
            tensors.insert(key, TensorF32::new(shape, data));
        }
        Self { tensors }
    }

    pub fn get(&self, key: &str) -> Option<&TensorF32> {
        self.tensors.get(key)
    }

    /// Checks that these weights have exactly the tensors `arch` needs; `file` names the
    /// source in errors. Returns them reordered to architecture order.
    pub fn matched_to(self, arch: &Arch, file: &str) -> Result<Self, WeightsError> {
        self.matched_to_shapes(expected_shapes(arch), file)
    }

    /// [`Self::matched_to`] for tensors given by key and PyTorch shape.
    pub fn matched_to_shapes(
        mut self,
        expected: Vec<(String, Vec<usize>)>,
        file: &str,
    ) -> Result<Self, WeightsError> {
        let mut tensors = IndexMap::new();
        for (key, shape) in expected {
            let Some(t) = self.tensors.shift_remove(&key) else {
                return Err(WeightsError::Missing {
                    file: file.to_string(),
                    key,
                    shape,
                });
            };
            if t.shape != shape {
                return Err(WeightsError::Shape {
                    file: file.to_string(),
                    key,
                    found: t.shape,
                    expected: shape,
                });
            }
            tensors.insert(key, t);
        }
        if let Some(key) = self.tensors.keys().next() {
            return Err(WeightsError::Unexpected {
                file: file.to_string(),
                key: key.clone(),
            });
        }
        Ok(Self { tensors })
    }

    /// Reads `.safetensors`, or `.pt`/`.pth` (PyTorch state_dict), by extension.
    /// [`Self::load`], then [`Self::matched_to`] `arch`.
    pub fn load_for(path: &Path, arch: &Arch) -> Result<Self, WeightsError> {
        Self::load(path)?.matched_to(arch, &path.display().to_string())
    }

    pub fn load(path: &Path) -> Result<Self, WeightsError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("pt" | "pth") => Self::load_pytorch(path),
            Some("safetensors") => Self::load_safetensors(path),
            _ => Err(file_err(
                path,
                "unknown weights format: expected .safetensors, .pt or .pth",
            )),
        }
    }

    pub fn load_safetensors(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| file_err(path, format!("not a safetensors file: {e}")))?;
        // Keep the writer's order (the metadata lists keys in architecture order).
        let order: Vec<String> = match st_order(&bytes) {
            Some(o) => o,
            None => st.names().into_iter().map(String::from).collect(),
        };
        let mut tensors = IndexMap::new();
        for name in order {
            let view = st
                .tensor(&name)
                .map_err(|e| file_err(path, format!("{name}: {e}")))?;
            let data = to_f32(view.data(), st_dtype(view.dtype())).ok_or_else(|| {
                file_err(
                    path,
                    format!("{name}: unsupported dtype {:?}", view.dtype()),
                )
            })?;
            tensors.insert(name, TensorF32::new(view.shape().to_vec(), data));
        }
        Ok(Self { tensors })
    }

    /// Writes safetensors atomically (temporary file, then rename).
    pub fn save_safetensors(&self, path: &Path) -> Result<(), WeightsError> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    t.shape.clone(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(k, b, s)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (k.as_str(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err(path, e.to_string()))?;
        let order = self.tensors.keys().cloned().collect::<Vec<_>>().join(",");
        let meta = std::collections::HashMap::from([("rankprune.order".to_string(), order)]);
        let data =
            safetensors::serialize(views, Some(meta)).map_err(|e| file_err(path, e.to_string()))?;
        crate::outpath::write_atomic(path, &data)
            .map_err(|e| file_err(path, format!("cannot write: {e}")))
    }

    /// Reads a PyTorch state_dict (a dict of tensors, possibly under `state_dict`).
    /// Integer tensors (`num_batches_tracked`) are skipped.
    pub fn load_pytorch(path: &Path) -> Result<Self, WeightsError> {
        // A training checkpoint keeps the weights under "state_dict"; a bare state_dict is the dict.
        let reader = PytorchReader::with_top_level_key(path, "state_dict")
            .or_else(|_| PytorchReader::new(path))
            .map_err(|e| file_err(path, format!("not a PyTorch checkpoint: {e}")))?;
        let mut keys = reader.keys();
        keys.sort_by(|a, b| natural_cmp(a, b));
        let mut tensors = IndexMap::new();
        for key in keys {
            let t = reader.get(&key).expect("key listed by the reader");
            let Some(data) = t.read().ok().and_then(|b| to_f32(&b, Some(t.dtype()))) else {
                if matches!(t.dtype(), DType::I64 | DType::I32) {
                    continue;
                }
                return Err(file_err(
                    path,
                    format!("{key}: cannot read a {:?} tensor", t.dtype()),
                ));
            };
            tensors.insert(key, TensorF32::new(t.shape().to_vec(), data));
        }
        Ok(Self { tensors })
    }
}

/// Orders `features.10.x` after `features.3.x` (numbers compared as numbers).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> Vec<Result<u64, String>> {
        s.split('.')
            .flat_map(|p| p.split('_'))
            .map(|p| p.parse::<u64>().map_err(|_| p.to_string()))
            .collect()
    };
    split(a).cmp(&split(b))
}

fn st_order(bytes: &[u8]) -> Option<Vec<String>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    let order = meta.metadata().as_ref()?.get("rankprune.order")?;
    Some(order.split(',').map(String::from).collect())
}

fn st_dtype(d: safetensors::Dtype) -> Option<DType> {
    Some(match d {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F64 => DType::F64,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        _ => return None,
    })
}

/// Little-endian floats of any width to f32; `None` for non-float types.
fn to_f32(bytes: &[u8], dtype: Option<DType>) -> Option<Vec<f32>> {
    Some(match dtype? {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;

    #[test]
    fn natural_order_of_pytorch_keys() {
        let mut keys = vec![
            "features.10.weight",
            "features.3.bias",
            "features.3_tucker_0.weight",
            "classifier.bias",
        ];
        keys.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            keys,
            [
                "classifier.bias",
                "features.3.bias",
                "features.3_tucker_0.weight",
                "features.10.weight"
            ]
        );
    }

    #[test]
    fn init_matches_expected_shapes_and_is_seeded() {
        let arch = ArchSpec::parse("cfg_bn:4,M,8").unwrap().build(3);
        let a = Weights::init(&arch, 7);
        let b = Weights::init(&arch, 7);
        assert_eq!(a, b);
        assert_ne!(a, Weights::init(&arch, 8));
        let a = a.matched_to(&arch, "mem").unwrap();
        assert_eq!(a.get("features.1.weight").unwrap().data, vec![1.0; 4]);
        assert_eq!(
            a.get("classifier.weight").unwrap().shape,
            vec![3, 8 * 16 * 16]
        );
    }

    #[test]
    fn mismatches_are_named() {
        let arch = ArchSpec::parse("cfg_bn:4").unwrap().build(3);
        let mut w = Weights::init(&arch, 0);
        w.tensors.get_mut("features.0.weight").unwrap().shape = vec![4, 3, 9, 1];
        let e = w.clone().matched_to(&arch, "f").unwrap_err().to_string();
        assert!(
            e.contains("features.0.weight") && e.contains("[4, 3, 3, 3]"),
            "{e}"
        );
        w.tensors.shift_remove("features.0.weight");
        let e = w.clone().matched_to(&arch, "f").unwrap_err().to_string();
        assert!(e.contains("missing tensor \"features.0.weight\""), "{e}");
        let mut w = Weights::init(&arch, 0);
        w.tensors
            .insert("features.9.weight".into(), TensorF32::filled(vec![1], 0.0));
        let e = w.matched_to(&arch, "f").unwrap_err().to_string();
        assert!(e.contains("unexpected tensor \"features.9.weight\""), "{e}");
    }
}
