//! Top-1 / top-5 accuracy and mean cross-entropy on a data set.

use crate::data::ImageSet;
use crate::data::batches::{EpochPlan, stream};
use crate::model::Classifier;
use crate::{Error, Result};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Fractions in [0, 1].
    pub top1: f64,
    pub top5: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    pub samples: usize,
}

/// How many rows of `logits` (row-major, `labels.len()` rows) have their label among the
/// `k` largest entries (ties count against the label).
pub fn top_k_correct(logits: &[f32], labels: &[i64], k: usize) -> usize {
    top_k_each(logits, labels, k).filter(|&c| c).count()
}

/// For each row of `logits`, whether its label is among the `k` largest entries.
pub fn top_k_each<'a>(
    logits: &'a [f32],
    labels: &'a [i64],
    k: usize,
) -> impl Iterator<Item = bool> + 'a {
    let classes = logits.len() / labels.len().max(1);
    labels.iter().enumerate().map(move |(i, &l)| {
        let row = &logits[i * classes..(i + 1) * classes];
        let target = row[l as usize];
        row.iter().filter(|&&v| v >= target).count() <= k
    })
}

/// Sum over rows of -log softmax(row)[label], computed stably in f64.
pub fn cross_entropy_sum(logits: &[f32], labels: &[i64]) -> f64 {
    let classes = logits.len() / labels.len().max(1);
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let row = &logits[i * classes..(i + 1) * classes];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            lse - row[l as usize] as f64
        })
        .sum()
}

/// Evaluates `model` (inference mode: BN uses running statistics) on the first `limit`
/// images of `set`.
pub fn evaluate(
    model: &impl Classifier,
    set: &Arc<ImageSet>,
    batch_size: usize,
    limit: Option<usize>,
    device: &Device,
) -> Result<EvalResult> {
    evaluate_each(model, set, batch_size, limit, device).map(|(r, _)| r)
}

/// [`evaluate`], with each image's top-1 correctness in the set's order.
pub fn evaluate_each(
    model: &impl Classifier,
    set: &Arc<ImageSet>,
    batch_size: usize,
    limit: Option<usize>,
    device: &Device,
) -> Result<(EvalResult, Vec<bool>)> {
    let (mut top5, mut loss, mut n) = (0usize, 0.0f64, 0usize);
    let mut correct = Vec::new();
    let plan = EpochPlan {
        batch_size,
        seed: None,
        limit,
    };
    for b in stream(set.clone(), plan) {
        let logits = model
            .logits(super::images_tensor(&b, device))
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Failure(format!("{e:?}")))?;
        correct.extend(top_k_each(&logits, &b.labels, 1));
        top5 += top_k_correct(&logits, &b.labels, 5);
        loss += cross_entropy_sum(&logits, &b.labels);
        n += b.len();
    }
    if n == 0 {
        return Err(Error::BadInput("evaluation set is empty".into()));
    }
    let top1 = correct.iter().filter(|&&c| c).count();
    let result = EvalResult {
        top1: top1 as f64 / n as f64,
        top5: top5 as f64 / n as f64,
        loss: loss / n as f64,
        samples: n,
    };
    Ok((result, correct))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_metrics() {
        let logits = [0.0, 2.0, 1.0, 3.0, 0.0, 0.0];
        assert_eq!(top_k_correct(&logits, &[1, 1], 1), 1);
        assert_eq!(top_k_correct(&logits, &[1, 1], 2), 1);
        // Row 0, label 2 (logit 1) is second best: in the top 2. Row 1, label 1 ties with
        // label 2 below label 0: three logits >= it, so not in the top 2.
        assert_eq!(top_k_correct(&logits, &[2, 1], 2), 1);
        assert_eq!(top_k_correct(&logits, &[2, 0], 2), 2);
        // Uniform logits over 2 classes: loss ln 2 per row.
        assert!((cross_entropy_sum(&[1.0, 1.0], &[0]) - 2f64.ln()).abs() < 1e-12);
    }
}
