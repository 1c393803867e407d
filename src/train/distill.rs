//! Logit distillation from the uncompressed model (Hinton, Vinyals and Dean, "Distilling
//! the Knowledge in a Neural Network", 2015):
//! loss = (1 - alpha) CE(student, labels) + alpha T^2 KL(softmax(teacher/T) || softmax(student/T)),
//! the KL averaged over the batch. Defaults T = 4, alpha = 0.9 are the KD baseline of
//! Tian, Krishnan and Isola's distillation benchmark (CRD, ICLR 2020).

use crate::model::GraphNet;
use burn::nn::loss::CrossEntropyLoss;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// The distillation loss's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distill {
    /// Softmax temperature T (> 0).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Weight of the distillation term, in [0, 1]; 1 - alpha weighs cross-entropy.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

fn default_temperature() -> f64 {
    4.0
}

fn default_alpha() -> f64 {
    0.9
}

impl Default for Distill {
    fn default() -> Self {
        Self {
            temperature: default_temperature(),
            alpha: default_alpha(),
        }
    }
}

/// The teacher (on the inference device) and how to learn from it.
pub struct Teacher {
    pub model: GraphNet,
    pub distill: Distill,
}

/// The batch's mean distillation loss; `teacher` carries no gradient.
pub fn kd_loss(
    student: Tensor<2>,
    teacher: Tensor<2>,
    labels: Tensor<1, Int>,
    d: &Distill,
    ce: &CrossEntropyLoss,
) -> Tensor<1> {
    let t = d.temperature;
    let [batch, _] = student.dims();
    let hard = ce.forward(student.clone(), labels);
    let p_teacher = softmax(teacher.clone().div_scalar(t), 1);
    let log_ratio = log_softmax(teacher.div_scalar(t), 1) - log_softmax(student.div_scalar(t), 1);
    let kl = (p_teacher * log_ratio)
        .sum()
        .div_scalar(batch as f64)
        .reshape([1]);
    hard.mul_scalar(1.0 - d.alpha) + kl.mul_scalar(d.alpha * t * t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::{Device, TensorData};

    /// Softmax of `row / t` in f64.
    fn soft(row: &[f64], t: f64) -> Vec<f64> {
        let e: Vec<f64> = row.iter().map(|v| (v / t).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|v| v / z).collect()
    }

    #[test]
    fn matches_a_hand_computation() {
        let device = Device::flex();
        let s = [[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]];
        let t = [[0.5, 0.0, 3.0], [2.0, -1.0, 0.0]];
        let labels = [2i64, 1];
        let d = Distill {
            temperature: 2.0,
            alpha: 0.7,
        };
        let tensor = |m: [[f64; 3]; 2]| {
            let flat: Vec<f32> = m.iter().flatten().map(|&v| v as f32).collect();
            Tensor::<2>::from_data(TensorData::new(flat, [2, 3]), &device)
        };
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [2]), &device);
        let ce = CrossEntropyLossConfig::new().init(&device);
        let got = kd_loss(tensor(s), tensor(t), y, &d, &ce).into_scalar::<f32>();

        let mut want = 0.0;
        for i in 0..2 {
            let hard = -soft(&s[i], 1.0)[labels[i] as usize].ln();
            let (pt, ps) = (soft(&t[i], 2.0), soft(&s[i], 2.0));
            let kl: f64 = pt.iter().zip(&ps).map(|(p, q)| p * (p / q).ln()).sum();
            want += (0.3 * hard + 0.7 * 4.0 * kl) / 2.0;
        }
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn alpha_zero_is_plain_cross_entropy_and_equal_logits_add_nothing() {
        let device = Device::flex();
        let s = Tensor::<2>::from_data(
            TensorData::new(vec![0.2f32, 1.0, -0.3, 0.0], [2, 2]),
            &device,
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &device);
        let ce = CrossEntropyLossConfig::new().init(&device);
        let plain = ce.forward(s.clone(), y.clone()).into_scalar::<f32>();
        let zero = Distill {
            alpha: 0.0,
            ..Distill::default()
        };
        let a = kd_loss(s.clone(), s.clone() * 5.0, y.clone(), &zero, &ce).into_scalar::<f32>();
        assert!((a - plain).abs() < 1e-6);
        let d = Distill::default();
        let b = kd_loss(s.clone(), s, y, &d, &ce).into_scalar::<f32>();
        assert!((b - 0.1 * plain).abs() < 1e-6, "{b} vs {}", 0.1 * plain);
    }
}
