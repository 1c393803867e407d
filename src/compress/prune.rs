//! The pieces of L2-norm filter pruning: filter norms, the filters a ratio keeps, and
//! selecting channels of a tensor; [`super::group_prune`] removes them from every member
//! and reader of a dependency group.

use crate::weights::TensorF32;
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

/// The output channels each pruned layer keeps (ascending), by layer name.
pub type Kept = BTreeMap<String, Vec<usize>>;

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
