//! Structured filter pruning by L2 norm, with one dependency mechanism: removing a
//! conv's output channels removes them from every consumer the architecture names
//! (the BN after it, the next conv's or sub-conv's inputs, the classifier's features).

use crate::arch::{Arch, Consumer, ConvPos, Unit};
use crate::config::{LayerConfig, kept_filters};
use crate::weights::{TensorF32, Weights};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// L2 norm of each filter (output channel) of a conv weight `[out, in, k, k]`.
pub fn filter_norms(w: &TensorF32) -> Vec<f64> {
    let per = w.data.len() / w.shape[0];
    w.data
        .chunks(per)
        .map(|f| {
            f.iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

/// Indices (ascending) of the `kept` filters with the largest norms; ties keep the lower index.
pub fn kept_indices(norms: &[f64], kept: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..norms.len()).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
    let mut keep = order[..kept.min(norms.len())].to_vec();
    keep.sort_unstable();
    keep
}

/// Keeps only `idx` along `axis` of a row-major tensor.
pub fn select(t: &TensorF32, axis: usize, idx: &[usize]) -> TensorF32 {
    let outer: usize = t.shape[..axis].iter().product();
    let dim = t.shape[axis];
    let inner: usize = t.shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let start = (o * dim + i) * inner;
            data.extend_from_slice(&t.data[start..start + inner]);
        }
    }
    let mut shape = t.shape.clone();
    shape[axis] = idx.len();
    TensorF32::new(shape, data)
}

fn take(weights: &mut Weights, key: &str) -> TensorF32 {
    weights
        .tensors
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("weights matched to the arch have {key}"))
}

/// Removes every output channel of the conv at `pos` not in `keep` (ascending), from the
/// conv, its BN, and the consumer of its outputs, in `weights` and in `arch` alike.
pub fn remove_filters(arch: &mut Arch, weights: &mut Weights, pos: ConvPos, keep: &[usize]) {
    let conv = arch.conv(pos).clone();
    for field in ["weight", "bias"] {
        let key = format!("{}.{field}", conv.name);
        if weights.tensors.contains_key(&key) {
            let t = select(&take(weights, &key), 0, keep);
            weights.tensors.insert(key, t);
        }
    }
    if let Some(bn) = arch.bn_after(pos) {
        for field in ["weight", "bias", "running_mean", "running_var"] {
            let key = format!("{bn}.{field}");
            let t = select(&take(weights, &key), 0, keep);
            weights.tensors.insert(key, t);
        }
    }
    match arch.consumer(pos) {
        Some(Consumer::Conv(next)) => {
            let key = format!("{}.weight", arch.conv(next).name);
            let t = select(&take(weights, &key), 1, keep);
            weights.tensors.insert(key, t);
        }
        Some(Consumer::Linear { unit, per_channel }) => {
            let Unit::Linear(l) = &arch.units[unit] else {
                unreachable!("consumer is a Linear unit")
            };
            let key = format!("{}.weight", l.name);
            let cols: Vec<usize> = keep
                .iter()
                .flat_map(|&c| c * per_channel..(c + 1) * per_channel)
                .collect();
            let t = select(&take(weights, &key), 1, &cols);
            weights.tensors.insert(key, t);
        }
        None => {}
    }
    arch.set_out_channels(pos, keep.len());
}

/// The output channels each pruned layer keeps (ascending), by layer name.
pub type Kept = BTreeMap<String, Vec<usize>>;

/// Prunes `arch` (already decomposed as the config says) by the config's ratios. Filters
/// are chosen by L2 norm on the weights as given, before any removal, so the result does
/// not depend on the order of the ratios. Checks the result against `config.apply(base)`.
/// Also returns which channels each pruned layer kept.
pub fn prune_model(
    base: &Arch,
    arch: &Arch,
    weights: &Weights,
    config: &LayerConfig,
    file: &str,
) -> Result<(Arch, Weights, Kept)> {
    let target = config.apply(base, file)?;
    let mut out_arch = arch.clone();
    let mut out = weights.clone().matched_to(arch, file)?;
    let mut kept = Kept::new();
    let Some(pruning) = &config.pruning else {
        return Ok((out_arch, out, kept));
    };
    for (name, &ratio) in &pruning.ratios {
        let w = &out.tensors[&format!("{name}.weight")];
        let keep = kept_indices(&filter_norms(w), kept_filters(w.shape[0], ratio));
        kept.insert(name.clone(), keep);
    }
    for (name, keep) in &kept {
        let pos = arch
            .find_conv(name)
            .ok_or_else(|| Error::BadInput(format!("{file}: no conv {name}")))?;
        remove_filters(&mut out_arch, &mut out, pos, keep);
    }
    assert_eq!(
        out_arch, target,
        "weight surgery and the config disagree on the pruned architecture"
    );
    let out = out.matched_to(&out_arch, file)?;
    Ok((out_arch, out, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_indices_by_norm() {
        assert_eq!(kept_indices(&[3.0, 1.0, 2.0, 5.0], 2), vec![0, 3]);
        assert_eq!(kept_indices(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
    }

    #[test]
    fn select_along_axes() {
        let t = TensorF32::new(vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(select(&t, 1, &[0, 2]).data, vec![0.0, 2.0, 3.0, 5.0]);
        assert_eq!(select(&t, 0, &[1]).data, vec![3.0, 4.0, 5.0]);
        let w = TensorF32::new(vec![2, 1, 1, 2], vec![3.0, 4.0, 0.0, 1.0]);
        assert_eq!(filter_norms(&w), vec![5.0, 1.0]);
    }
}
