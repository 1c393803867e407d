//! The final stage: the finalists re-trained with the full recipe on the configured
//! long-run device, and the rung fidelity stored after it.

use super::shutdown::{bar, blocking, epoch_progress};
use super::{Controller, Signals};
use crate::config::LayerConfig;
use crate::data::{ImageSet, Split};
use crate::device::parse_device;
use crate::model::Vgg;
use crate::search::budget::Budget;
use crate::search::finalists::finalists;
use crate::search::trial::TrialContext;
use crate::store::{FinalResult, Trial};
use crate::train::{TrainConfig, evaluate, train};
use crate::{Error, Result};
use std::sync::Arc;

/// Re-trains the finalists (top-k completed trials by proxy accuracy, then the best
/// warm starts by proxy; see `finalists`) with the full recipe; records their best
/// validation accuracy (which picks the winner) and the test accuracy of those weights
/// (reported only). Trials already re-trained are skipped; an interrupted re-training
/// resumes from its checkpoint. Returns false when a signal interrupted it.
pub(super) async fn final_stage(
    ctl: &mut Controller,
    ctx: &TrialContext,
    budget: &Budget,
    signals: &mut Signals,
    progress: bool,
) -> Result<bool> {
    let trials = ctl.store.trials(ctl.study)?;
    let warm_starts = ctl.problem.warm_starts.clone();
    let seed_ids: Vec<i64> = trials
        .iter()
        .filter(|t| ctl.point_of(t).is_some_and(|p| warm_starts.contains(&p)))
        .map(|t| t.id)
        .collect();
    let top: Vec<(Trial, &str)> = finalists(
        &trials,
        &ctl.problem.target,
        budget.final_stage.top_k,
        &seed_ids,
        budget.final_stage.warm_starts,
    )
    .into_iter()
    .map(|(t, why)| (t.clone(), why))
    .collect();
    let test = Arc::new(
        ImageSet::load(
            &budget.data.dir,
            budget.data.dataset,
            Split::Test,
            budget.model.num_classes,
        )
        .map_err(|e| Error::BadInput(format!("data: {e}")))?,
    );
    for (t, why) in top {
        if ctl.store.final_result(t.id)?.is_some() {
            continue;
        }
        let stem = budget.output_path(&format!("{}-trial{}", budget.study.name, t.number));
        let ckpt = stem.with_extension("ckpt");
        let out = stem.with_extension("safetensors");
        let (epochs, schedule) = (budget.final_stage.epochs, budget.final_stage.schedule);
        tracing::info!(trial = t.number, epochs, "final re-training starts");
        let pb = bar(
            epochs as u64,
            &format!(
                "final #{} {{bar:30}} epoch {{pos}}/{{len}} {{msg}} [{{elapsed}}<{{eta}}]",
                t.number
            ),
            progress,
        );
        let (context, bar, stop) = (ctx.clone(), pb.clone(), ctl.stop.clone());
        let (test_set, config, weights_out) = (test.clone(), t.config.clone(), out.clone());
        let seed = budget.search.seed;
        let device = parse_device(&budget.workers.long_run_device())?;
        let (res, signalled) = blocking(signals, &ctl.stop, move || -> Result<FinalResult> {
            let config = LayerConfig::from_json(&config, "<stored trial>")?;
            let crate::compress::Compressed {
                arch, weights: w, ..
            } = context.build(&config, &device)?;
            let resume = ckpt.join(crate::train::checkpoint::STATE_FILE).exists();
            let cfg = TrainConfig {
                epochs,
                seed,
                checkpoint_dir: Some(ckpt),
                resume,
                schedule,
                ..TrainConfig::default()
            };
            let o = train(
                &arch,
                w,
                context.train.clone(),
                context.val.clone(),
                &cfg,
                &device,
                epoch_progress(&bar, &stop),
            )?;
            o.best_weights.save_safetensors(&weights_out)?;
            let m = Vgg::from_weights(&arch, o.best_weights, "<final>", &device)?;
            let e = evaluate(&m, &test_set, 256, None, &device)?;
            Ok(FinalResult {
                val_top1: o.best_val.map(|v| v.top1),
                top1: e.top1,
                top5: e.top5,
                loss: e.loss,
                epochs: o.epochs_run,
                weights_path: Some(weights_out.display().to_string()),
                reason: Some(why.to_string()),
            })
        })
        .await?;
        pb.finish_and_clear();
        if signalled {
            return Ok(false);
        }
        match res {
            Ok(f) => {
                ctl.lease.check()?;
                tracing::info!(
                    trial = t.number,
                    test_top1 = f.top1,
                    "final re-training done"
                );
                ctl.store.record_final(t.id, &f)?;
            }
            Err(e) => tracing::warn!(trial = t.number, "final re-training failed: {e}"),
        }
    }
    record_rung_fidelity(ctl, budget)?;
    Ok(true)
}

/// Stores how well each rung ranked the re-trained trials (see `promotion::rung_fidelity`).
fn record_rung_fidelity(ctl: &mut Controller, budget: &Budget) -> Result<()> {
    let mut retrained = Vec::new();
    for t in ctl.store.trials(ctl.study)? {
        if let Some(val) = ctl.store.final_result(t.id)?.and_then(|f| f.val_top1) {
            retrained.push(crate::search::promotion::Retrained {
                reports: ctl.store.reports(t.id)?,
                proxy_acc: t.proxy_acc,
                val,
            });
        }
    }
    let rows = crate::search::promotion::rung_fidelity(&budget.proxy, &retrained);
    for r in &rows {
        tracing::info!(step = r.step, n = r.n, tau = r.kendall_tau, "rung fidelity");
    }
    ctl.store.record_rung_fidelity(ctl.study, &rows)?;
    Ok(())
}
