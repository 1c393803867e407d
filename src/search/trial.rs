//! One trial on one worker: build the candidate from the base weights (decompose +
//! prune), proxy fine-tune, score on held-out validation images (never the test set).

use crate::budget::Rung0Score;
use crate::config::LayerConfig;
use crate::graph::Graph;
use crate::ladder::{Built, Context};
use crate::model::GraphNet;
use crate::train::recalibrate::recalibrate_bn;
use crate::train::{Control, evaluate, train_with};
use crate::weights::Weights;
use burn::tensor::Device;
use std::sync::atomic::{AtomicBool, Ordering};

/// How a trial ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialEnd {
    Complete {
        acc: f64,
        loss: f64,
    },
    /// Stopped by the early-stop rule, with the last validation accuracy.
    EarlyStopped {
        acc: f64,
    },
    Failed(String),
    /// Stopped by shutdown; to be run again.
    Interrupted,
}

/// The controller's answer to an intermediate report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Stop the trial early (the store calls it `early_stopped`).
    Stop,
}

/// The candidate's weights after BN recalibration (when the proxy asks for it) and, when
/// step 0 is a rung, its validation accuracy then.
fn first_rung(
    ctx: &Context,
    graph: &Graph,
    weights: Weights,
    device: &Device,
) -> crate::Result<(Weights, Option<f64>)> {
    let p = &ctx.proxy;
    if p.bn_recalibration == 0 && !p.rungs.contains(&0) {
        return Ok((weights, None));
    }
    let mut model = GraphNet::from_weights(graph, weights, "<trial>", device)?;
    if p.bn_recalibration > 0 {
        model = recalibrate_bn(
            model,
            &ctx.train,
            p.bn_recalibration,
            p.batch_size,
            ctx.seed,
            device,
        );
    }
    let acc = match (p.rungs.contains(&0), p.rung0_score) {
        (false, _) => None,
        (true, Rung0Score::Accuracy) => {
            Some(evaluate(&model, &ctx.val, p.batch_size, Some(p.eval_samples), device)?.top1)
        }
        (true, Rung0Score::Kl) => {
            let batches = ctx.calibration(p.bn_recalibration);
            Some(-crate::ladder::similarity(&ctx.base_model(device)?, &model, &batches, device).1)
        }
    };
    Ok((model.to_weights(), acc))
}

/// Runs one trial. `on_eval(step, accuracy)` sees each intermediate validation result;
/// `stop` ends the trial as interrupted at the next step.
pub fn run_trial(
    ctx: &Context,
    config: &LayerConfig,
    device: &Device,
    stop: &AtomicBool,
    mut on_eval: impl FnMut(usize, f64) -> Verdict,
) -> TrialEnd {
    let Built { graph, weights, .. } = match ctx.build(config, "<trial>", device) {
        Ok(x) => x,
        Err(e) => return TrialEnd::Failed(format!("building the candidate: {e}")),
    };
    if stop.load(Ordering::Relaxed) {
        return TrialEnd::Interrupted;
    }
    let p = &ctx.proxy;
    let (weights, rung0) = match first_rung(ctx, &graph, weights, device) {
        Ok(x) => x,
        Err(e) => return TrialEnd::Failed(format!("scoring the candidate at step 0: {e}")),
    };
    if let Some(acc) = rung0
        && on_eval(0, acc) == Verdict::Stop
    {
        return TrialEnd::EarlyStopped { acc };
    }
    let cfg = ctx.proxy_config();
    let teacher = match p.distill {
        Some(distill) => match ctx.teacher(distill, device) {
            Ok(teacher) => Some(teacher),
            Err(e) => return TrialEnd::Failed(format!("building the teacher: {e}")),
        },
        None => None,
    };
    let mut stopped_at = None;
    let outcome = train_with(
        &graph,
        weights,
        ctx.train.clone(),
        ctx.val.clone(),
        &cfg,
        teacher.as_ref(),
        device,
        |r| {
            if stop.load(Ordering::Relaxed) {
                return Control::Stop;
            }
            if let Some(v) = &r.val
                && on_eval(r.step, v.top1) == Verdict::Stop
            {
                stopped_at = Some(v.top1);
                return Control::Stop;
            }
            Control::Continue
        },
    );
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return TrialEnd::Failed(e.to_string()),
    };
    if let Some(acc) = stopped_at {
        return TrialEnd::EarlyStopped { acc };
    }
    if stop.load(Ordering::Relaxed) {
        return TrialEnd::Interrupted;
    }
    let scored = GraphNet::from_weights(&graph, outcome.weights, "<trial>", device)
        .map_err(crate::Error::from)
        .and_then(|m| evaluate(&m, &ctx.val, p.batch_size, Some(p.eval_samples), device));
    match scored {
        Ok(v) if v.loss.is_finite() => TrialEnd::Complete {
            acc: v.top1,
            loss: v.loss,
        },
        Ok(v) => TrialEnd::Failed(format!("validation loss is {} after fine-tuning", v.loss)),
        Err(e) => TrialEnd::Failed(e.to_string()),
    }
}
