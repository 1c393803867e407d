//! Scoring a compressed candidate cheaply, and measuring how well each cheap score
//! ranks candidates like the full re-training does (fidelity).
//!
//! A [`Probe`] is one way to score a candidate built from the base weights: as it is,
//! after BatchNorm recalibration, by layer-wise similarity to the base model, after a
//! short plain or distilled fine-tune, or after the final recipe. Every candidate scored
//! with the same probe sees the same training batches and validation images.

pub mod cka;
pub mod context;
pub mod fidelity;
pub mod recipes;

pub use context::{Built, Context};

use crate::data::batches::Batch;
use crate::graph::Graph;
use crate::model::GraphNet;
use crate::train::distill::Teacher;
use crate::train::recalibrate::recalibrate_bn;
use crate::train::repair::repair;
use crate::train::{Control, LrSchedule, TrainConfig, evaluate, images_tensor, train_with};
use crate::weights::Weights;
use crate::{Error, Result};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// One way to score a candidate. Written `compressed`, `bn:K`, `recon:K`, `repair:K`, `ft:S`,
/// `ftd:S`, `kd:S`, `final:E` or `final:E@S` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Probe {
    /// Validation accuracy and loss straight after compression.
    Compressed,
    /// The same after recalibrating every BN from K training batches.
    BnRecal { batches: usize },
    /// After BN recalibration from K batches: mean linear CKA of every conv unit's output
    /// against the base model's, and the mean KL divergence of the base model's softmax
    /// from the candidate's, on those batches' images (no labels used).
    Reconstruction { batches: usize },
    /// Validation accuracy and loss after least-squares repair of every unit's last conv
    /// from K training batches ([`crate::train::repair`]), and the mean KL divergence of
    /// the base model's softmax from the candidate's on them.
    Repair { batches: usize },
    /// Validation accuracy and loss after S fine-tune steps with cross-entropy: the
    /// proxy's fine-tune (batch size, learning rate and schedule of `[proxy]`), S steps long.
    FineTune { steps: usize },
    /// The same with the learning rate decayed linearly to zero over the S steps
    /// ([`LrSchedule::Linear`]), so the score is read from an annealed network.
    FineTuneDecayed { steps: usize },
    /// The same as `FineTune` with logit distillation from the base model.
    Distilled { steps: usize },
    /// Best validation accuracy of E epochs of the full recipe, on the context's final
    /// schedule (the reference), trained with the context's seed plus `seed` (`final:E@S`;
    /// `final:E` is seed 0). Every candidate re-trained with seed S sees the same data
    /// order and augmentations: the re-trainings are paired by seed.
    Final { epochs: usize, seed: u64 },
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Compressed => write!(f, "compressed"),
            Probe::BnRecal { batches } => write!(f, "bn:{batches}"),
            Probe::Reconstruction { batches } => write!(f, "recon:{batches}"),
            Probe::Repair { batches } => write!(f, "repair:{batches}"),
            Probe::FineTune { steps } => write!(f, "ft:{steps}"),
            Probe::FineTuneDecayed { steps } => write!(f, "ftd:{steps}"),
            Probe::Distilled { steps } => write!(f, "kd:{steps}"),
            Probe::Final { epochs, seed: 0 } => write!(f, "final:{epochs}"),
            Probe::Final { epochs, seed } => write!(f, "final:{epochs}@{seed}"),
        }
    }
}

impl std::str::FromStr for Probe {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some((epochs, seed)) = s.strip_prefix("final:").and_then(|r| r.split_once('@')) {
            let epochs =
                epochs.parse().ok().filter(|&e| e > 0).ok_or_else(|| {
                    format!("probe {s:?}: {epochs:?} is not a count of epochs >= 1")
                })?;
            let seed = seed
                .parse()
                .map_err(|_| format!("probe {s:?}: seed {seed:?} is not a number >= 0"))?;
            return Ok(Probe::Final { epochs, seed });
        }
        let (name, n) = match s.split_once(':') {
            Some((name, n)) => {
                let n: usize = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("probe {s:?}: {n:?} is not a count >= 1"))?;
                (name, Some(n))
            }
            None => (s, None),
        };
        match (name, n) {
            ("compressed", None) => Ok(Probe::Compressed),
            ("bn", Some(batches)) => Ok(Probe::BnRecal { batches }),
            ("recon", Some(batches)) => Ok(Probe::Reconstruction { batches }),
            ("repair", Some(batches)) => Ok(Probe::Repair { batches }),
            ("ft", Some(steps)) => Ok(Probe::FineTune { steps }),
            ("ftd", Some(steps)) => Ok(Probe::FineTuneDecayed { steps }),
            ("kd", Some(steps)) => Ok(Probe::Distilled { steps }),
            ("final", Some(epochs)) => Ok(Probe::Final { epochs, seed: 0 }),
            _ => Err(format!(
                "probe {s:?}: allowed compressed, bn:K, recon:K, repair:K, ft:S, ftd:S, kd:S, final:E, final:E@S (K batches, S steps, E epochs, S a seed offset)"
            )),
        }
    }
}

impl From<Probe> for String {
    fn from(s: Probe) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Probe {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// Whether a larger value of the named score means a better candidate.
pub fn higher_is_better(score: &str) -> bool {
    !matches!(score, "loss" | "kl" | "tse")
}

/// A probe's scores for one candidate, with what they cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// `acc`, `loss`, `cka`, `kl`, `tse` as the probe gives them.
    pub scores: BTreeMap<String, f64>,
    /// Wall and process CPU seconds.
    pub wall_s: f64,
    pub cpu_s: f64,
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn scores(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

impl Probe {
    /// The training run of a probe that trains, `n` steps or epochs long: the proxy's
    /// fine-tune on the proxy's schedule (`ftd`: decayed linearly), validated only at its
    /// end; or the final recipe with the probe's seed.
    fn train_config(&self, ctx: &Context, n: usize) -> TrainConfig {
        match *self {
            Probe::Final { seed, .. } => TrainConfig {
                seed: ctx.seed.wrapping_add(seed),
                ..ctx.final_config(n)
            },
            _ => TrainConfig {
                epochs: n,
                max_steps: Some(n),
                eval_at: Vec::new(),
                schedule: match self {
                    Probe::FineTuneDecayed { .. } => LrSchedule::Linear,
                    _ => ctx.proxy.schedule,
                },
                ..ctx.proxy_config()
            },
        }
    }
}

/// Scores the candidate with `probe` on `device`.
pub fn score(probe: Probe, ctx: &Context, candidate: Built, device: &Device) -> Result<Scored> {
    let Built {
        graph,
        weights,
        plan,
    } = candidate;
    let (wall, cpu) = (Instant::now(), process_cpu_seconds());
    let model = |w: Weights| GraphNet::from_weights(&graph, w, "<candidate>", device);
    let base = || ctx.base_model(device);
    let recalibrated = |w: Weights, batches| -> Result<GraphNet> {
        let m = model(w)?;
        Ok(recalibrate_bn(
            m,
            &ctx.train,
            batches,
            ctx.proxy.batch_size,
            ctx.seed,
            device,
        ))
    };
    let eval = |m: &GraphNet, limit| evaluate(m, &ctx.val, ctx.proxy.batch_size, limit, device);
    let samples = Some(ctx.proxy.eval_samples);
    let scores = match probe {
        Probe::Compressed => {
            let v = eval(&model(weights)?, samples)?;
            scores(&[("acc", v.top1), ("loss", v.loss)])
        }
        Probe::BnRecal { batches } => {
            let v = eval(&recalibrated(weights, batches)?, samples)?;
            scores(&[("acc", v.top1), ("loss", v.loss)])
        }
        Probe::Reconstruction { batches } => {
            let m = recalibrated(weights, batches)?;
            let (cka, kl) = similarity(&base()?, &m, &ctx.calibration(batches), device);
            scores(&[("cka", cka), ("kl", kl)])
        }
        Probe::Repair { batches } => {
            let (Some((arch, kept)), Some(base_plan)) = (&plan, &ctx.base.plan) else {
                return Err(Error::BadInput(format!(
                    "probe {probe}: the least-squares repair works on VGG plans only"
                )));
            };
            let calibration = ctx.calibration(batches);
            let w = ctx.weights.as_ref();
            let (w, _) = repair(
                base_plan,
                w,
                arch,
                weights,
                kept,
                &calibration,
                ctx.seed,
                device,
            )?;
            let m = model(w)?;
            let v = eval(&m, samples)?;
            let (_, kl) = similarity(&base()?, &m, &calibration, device);
            scores(&[("acc", v.top1), ("loss", v.loss), ("kl", kl)])
        }
        Probe::FineTune { steps }
        | Probe::FineTuneDecayed { steps }
        | Probe::Distilled { steps } => {
            let teacher = match probe {
                Probe::Distilled { .. } => {
                    Some(ctx.teacher(ctx.proxy.distill.unwrap_or_default(), device)?)
                }
                _ => None,
            };
            let cfg = probe.train_config(ctx, steps);
            let (out, tse) = train_candidate(ctx, &graph, weights, &cfg, teacher.as_ref(), device)?;
            let v = eval(&model(out.weights)?, samples)?;
            scores(&[("acc", v.top1), ("loss", v.loss), ("tse", tse)])
        }
        Probe::Final { epochs, .. } => {
            let cfg = probe.train_config(ctx, epochs);
            let (out, _) = train_candidate(ctx, &graph, weights, &cfg, None, device)?;
            let v = out
                .best_val
                .ok_or_else(|| Error::Failure("the final training ran no epoch".into()))?;
            scores(&[("acc", v.top1), ("loss", v.loss)])
        }
    };
    Ok(Scored {
        scores,
        wall_s: wall.elapsed().as_secs_f64(),
        cpu_s: process_cpu_seconds() - cpu,
    })
}

/// Trains the candidate on the context's data with `cfg` (and `teacher`); the caller
/// scores the outcome. Also returns the mean training loss over the run's steps (of
/// its last epoch, for a run longer than one): the training-speed estimate of Ru et al.
/// ("Speedy Performance Estimation for Neural Architecture Search", NeurIPS 2021), which
/// costs nothing beyond the fine-tune. A short fine-tune never validates on the way
/// when the training set holds more than `max_steps` batches (the step limit ends it
/// inside the first epoch); a smaller set validates at each epoch end, which only
/// costs time.
fn train_candidate(
    ctx: &Context,
    graph: &Graph,
    weights: Weights,
    cfg: &TrainConfig,
    teacher: Option<&Teacher>,
    device: &Device,
) -> Result<(crate::train::TrainOutcome, f64)> {
    let mut tse = f64::NAN;
    let out = train_with(
        graph,
        weights,
        ctx.train.clone(),
        ctx.val.clone(),
        cfg,
        teacher,
        device,
        |r| {
            tse = r.train_loss;
            Control::Continue
        },
    )?;
    Ok((out, tse))
}

/// Logits of `m`, pushing the Gram matrix of every conv unit's output (after its BN,
/// before the ReLU) to `grams`.
fn forward_grams(m: &GraphNet, x: Tensor<4>, grams: &mut Vec<(usize, Vec<f64>)>) -> Tensor<2> {
    m.forward_with(x, |bn, x| {
        let y = match bn {
            Some((_, bn)) => bn.forward(x),
            None => x,
        };
        grams.push(cka::gram(y.clone()));
        y
    })
}

/// Mean linear CKA over conv units and batches, and mean KL(base || candidate) of the
/// softmax outputs per image.
pub fn similarity(
    base: &GraphNet,
    candidate: &GraphNet,
    batches: &[Batch],
    device: &Device,
) -> (f64, f64) {
    let (mut cka_sum, mut cka_n, mut kl_sum, mut images) = (0.0, 0usize, 0.0, 0usize);
    for b in batches {
        let x = images_tensor(b, device);
        let (mut kb, mut kc) = (Vec::new(), Vec::new());
        let p = log_softmax(forward_grams(base, x.clone(), &mut kb), 1);
        let q = log_softmax(forward_grams(candidate, x, &mut kc), 1);
        for ((n, k), (_, l)) in kb.iter().zip(&kc) {
            let v = cka::linear_cka(*n, k, l);
            if v.is_finite() {
                cka_sum += v;
                cka_n += 1;
            }
        }
        kl_sum += f64::from((p.clone().exp() * (p - q)).sum().into_scalar::<f32>());
        images += b.len();
    }
    (cka_sum / cka_n.max(1) as f64, kl_sum / images.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_parse_and_print_alike() {
        for s in [
            "compressed",
            "bn:8",
            "recon:2",
            "repair:2",
            "ft:60",
            "ftd:100",
            "kd:200",
            "final:3",
            "final:3@2",
        ] {
            assert_eq!(s.parse::<Probe>().unwrap().to_string(), s);
        }
        let e = "bn".parse::<Probe>().unwrap_err();
        assert!(e.contains("allowed compressed, bn:K"), "{e}");
        assert_eq!(
            "final:3@0".parse::<Probe>().unwrap(),
            Probe::Final { epochs: 3, seed: 0 }
        );
        assert!("final:0@1".parse::<Probe>().is_err() && "final:2@x".parse::<Probe>().is_err());
        let e = "ft:0".parse::<Probe>().unwrap_err();
        assert!(e.contains("\"0\" is not a count >= 1"), "{e}");
        assert!(higher_is_better("acc") && higher_is_better("cka"));
        assert!(!higher_is_better("loss") && !higher_is_better("kl") && !higher_is_better("tse"));
    }
}
