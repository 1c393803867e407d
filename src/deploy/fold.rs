//! BatchNorm folded into the conv before it, for inference. In eval mode a BatchNorm is
//! the affine map `gamma (z - mean) / sqrt(var + eps) + beta` per channel, so with
//! `s = gamma / sqrt(var + eps)` the conv `z = W x + b` followed by it is the conv
//! `(s W) x + (s (b - mean) + beta)` (PyTorch's `torch.nn.utils.fusion.fuse_conv_bn_eval`
//! does the same). The tests check the folded network's logits against the original's.

use crate::arch::{Arch, Unit};
use crate::weights::{TensorF32, Weights, WeightsError};

/// The epsilon of every BatchNorm rankprune builds (PyTorch's default).
pub const BN_EPSILON: f64 = 1e-5;

/// `arch` and `weights` (checked against it first) with every BatchNorm folded into
/// the conv before it: the units lose their BatchNorm, that conv gains a bias, and the
/// BatchNorm's tensors are gone.
pub fn fold_batch_norms(
    arch: &Arch,
    weights: Weights,
    file: &str,
) -> Result<(Arch, Weights), WeightsError> {
    let mut w = weights.matched_to(arch, file)?;
    let mut folded = arch.clone();
    for unit in &mut folded.units {
        let Unit::Conv(c) = unit else { continue };
        let Some(bn) = c.bn.take() else { continue };
        let last = c.body.convs().len() - 1;
        let spec = &mut c.body.convs_mut()[last];
        let take = |w: &mut Weights, field: &str| {
            w.tensors
                .shift_remove(&format!("{bn}.{field}"))
                .expect("a checked model has its BatchNorm's tensors")
        };
        let (gamma, beta) = (take(&mut w, "weight"), take(&mut w, "bias"));
        let (mean, var) = (take(&mut w, "running_mean"), take(&mut w, "running_var"));
        let scale: Vec<f64> = gamma
            .data
            .iter()
            .zip(&var.data)
            .map(|(&g, &v)| f64::from(g) / (f64::from(v) + BN_EPSILON).sqrt())
            .collect();
        let weight = w
            .tensors
            .get_mut(&format!("{}.weight", spec.name))
            .expect("a checked model has its conv weights");
        let per_filter = weight.data.len() / scale.len();
        for (filter, &s) in weight.data.chunks_mut(per_filter).zip(&scale) {
            filter
                .iter_mut()
                .for_each(|v| *v = (f64::from(*v) * s) as f32);
        }
        let bias_key = format!("{}.bias", spec.name);
        let old_bias = match spec.bias {
            true => w.tensors[&bias_key].data.clone(),
            false => vec![0.0; scale.len()],
        };
        let bias = (0..scale.len())
            .map(|o| {
                let b = f64::from(old_bias[o]) - f64::from(mean.data[o]);
                (b * scale[o] + f64::from(beta.data[o])) as f32
            })
            .collect();
        w.tensors
            .insert(bias_key, TensorF32::new(vec![scale.len()], bias));
        spec.bias = true;
    }
    let w = w.matched_to(&folded, file)?;
    Ok((folded, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;
    use crate::model::Vgg;
    use burn::tensor::{Device, Distribution, Tensor};

    /// Weights with BatchNorm statistics and affine parameters far from the identity.
    fn with_batch_norm_spread(arch: &Arch, seed: u64) -> Weights {
        let mut w = Weights::init(arch, seed);
        for (k, (key, t)) in w.tensors.iter_mut().enumerate() {
            let field = key.rsplit('.').next().unwrap_or("");
            let is_bn = arch.units.iter().any(|u| match u {
                Unit::Conv(c) => {
                    c.bn.as_deref()
                        .is_some_and(|bn| key.starts_with(&format!("{bn}.")))
                }
                _ => false,
            });
            if !is_bn {
                continue;
            }
            for (i, v) in t.data.iter_mut().enumerate() {
                let x = ((i * 7 + k * 13) % 11) as f32 / 11.0; // 0..1, varied
                *v = match field {
                    "running_mean" => x - 0.5,
                    "running_var" => 0.5 + 2.0 * x,
                    "weight" => 0.5 + x,
                    _ => 0.3 * x - 0.1,
                };
            }
        }
        w
    }

    #[test]
    fn folded_network_gives_the_same_logits() {
        let device = Device::flex();
        let mut arch = ArchSpec::parse("cfg_bn:4,M,6,M,5").unwrap().build(3);
        arch.decompose("features.4", 2, 3).unwrap();
        let w = with_batch_norm_spread(&arch, 5);
        let (folded, fw) = fold_batch_norms(&arch, w.clone(), "mem").unwrap();
        assert!(
            folded
                .units
                .iter()
                .all(|u| !matches!(u, Unit::Conv(c) if c.bn.is_some()))
        );
        assert!(fw.tensors.keys().all(|k| !k.contains("running")));
        let x = Tensor::<4>::random([3, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let logits = |arch: &Arch, w: Weights| {
            let m = Vgg::from_weights(arch, w, "mem", &device).unwrap();
            crate::model::values(m.forward(x.clone())).data
        };
        let (a, b) = (logits(&arch, w), logits(&folded, fw));
        let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-4 * scale, "{p} vs folded {q}");
        }
    }
}
