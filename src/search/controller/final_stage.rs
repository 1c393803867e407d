//! The final stage: the finalists re-trained with the full recipe on the configured
//! long-run device, and the rung fidelity stored after it.

use super::shutdown::{bar, blocking, epoch_progress};
use super::{Controller, Signals};
use crate::budget::Budget;
use crate::compress::Compressed;
use crate::config::LayerConfig;
use crate::data::{ImageSet, Split};
use crate::device::parse_device;
use crate::ladder::Context;
use crate::model::Vgg;
use crate::search::finalists::finalists;
use crate::store::{FinalResult, Trial};
use crate::train::{Control, TrainConfig, evaluate, train};
use crate::{Error, Result};
use burn::tensor::Device;
use std::path::PathBuf;
use std::sync::Arc;

/// Re-trains the finalists (top-k completed trials by proxy accuracy, then the best
/// warm starts by proxy; see `finalists`) with the full recipe; records their best
/// validation accuracy (which picks the winner) and the test accuracy of those weights
/// (reported only). Trials already re-trained are skipped; an interrupted re-training
/// resumes from its checkpoint. Returns false when a signal interrupted it.
pub(super) async fn final_stage(
    ctl: &mut Controller,
    ctx: &Context,
    budget: &Budget,
    signals: &mut Signals,
    progress: bool,
) -> Result<bool> {
    let top = pick_finalists(ctl, budget)?;
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
        let job = Retraining {
            ctx: ctx.clone(),
            config: t.config.clone(),
            stem: budget.output_path(&format!("{}-trial{}", budget.study.name, t.number)),
            epochs: budget.final_stage.epochs,
            device: parse_device(&budget.workers.long_run_device())?,
            test: test.clone(),
            why,
        };
        tracing::info!(
            trial = t.number,
            epochs = job.epochs,
            "final re-training starts"
        );
        let pb = bar(
            job.epochs as u64,
            &format!(
                "final #{} {{bar:30}} epoch {{pos}}/{{len}} {{msg}} [{{elapsed}}<{{eta}}]",
                t.number
            ),
            progress,
        );
        let (bar, stop) = (pb.clone(), ctl.stop.clone());
        let (res, signalled) = blocking(signals, &ctl.stop, move || {
            job.run(epoch_progress(&bar, &stop))
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

/// The finalists with why each was chosen.
fn pick_finalists(ctl: &mut Controller, budget: &Budget) -> Result<Vec<(Trial, &'static str)>> {
    let trials = ctl.store.trials(ctl.study)?;
    let warm_starts = ctl.problem.warm_starts.clone();
    let seed_ids: Vec<i64> = trials
        .iter()
        .filter(|t| ctl.point_of(t).is_some_and(|p| warm_starts.contains(&p)))
        .map(|t| t.id)
        .collect();
    Ok(finalists(
        &trials,
        &ctl.problem.target,
        budget.final_stage.top_k,
        &seed_ids,
        budget.final_stage.warm_starts,
    )
    .into_iter()
    .map(|(t, why)| (t.clone(), why))
    .collect())
}

/// One finalist's re-training, run on a blocking thread.
struct Retraining {
    ctx: Context,
    /// The trial's stored config.
    config: String,
    /// Its checkpoint folder (`.ckpt`) and weights (`.safetensors`), without extension.
    stem: PathBuf,
    epochs: usize,
    device: Device,
    test: Arc<ImageSet>,
    why: &'static str,
}

impl Retraining {
    /// Builds the candidate, trains it (resuming from its checkpoint when there is one),
    /// writes its best weights and scores them on the test images.
    fn run(self, on_epoch: impl FnMut(&crate::train::Report) -> Control) -> Result<FinalResult> {
        let config = LayerConfig::from_json(&self.config, "<stored trial>")?;
        let Compressed { arch, weights, .. } = self.ctx.build(&config, "<trial>", &self.device)?;
        let ckpt = self.stem.with_extension("ckpt");
        let out = self.stem.with_extension("safetensors");
        let cfg = TrainConfig {
            resume: ckpt.join(crate::train::checkpoint::STATE_FILE).exists(),
            checkpoint_dir: Some(ckpt),
            ..self.ctx.final_config(self.epochs)
        };
        let o = train(
            &arch,
            weights,
            self.ctx.train.clone(),
            self.ctx.val.clone(),
            &cfg,
            &self.device,
            on_epoch,
        )?;
        o.best_weights.save_safetensors(&out)?;
        let m = Vgg::from_weights(&arch, o.best_weights, "<final>", &self.device)?;
        let e = evaluate(&m, &self.test, 256, None, &self.device)?;
        Ok(FinalResult {
            val_top1: o.best_val.map(|v| v.top1),
            top1: e.top1,
            top5: e.top5,
            loss: e.loss,
            epochs: o.epochs_run,
            weights_path: Some(out.display().to_string()),
            reason: Some(self.why.to_string()),
        })
    }
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
