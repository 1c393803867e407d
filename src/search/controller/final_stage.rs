//! The final stage: the finalists, and the one-shot heuristic's config as the control,
//! re-trained with the full recipe on the configured long-run device, each with the same
//! `[final] seeds` training seeds (paired; `"auto"`: as many as the measured noise says
//! resolve `[final] margin`); then each finalist's mean, the verdict on the
//! winner against the control, and the rung fidelity are stored.

use super::shutdown::{bar, blocking, epoch_progress};
use super::{Controller, Signals};
use crate::budget::Budget;
use crate::budget::{AUTO_MIN_SEEDS, Seeds};
use crate::compress::decompose::recommend_graph_ranks;
use crate::config::LayerConfig;
use crate::data::{ImageSet, Split};
use crate::device::parse_device;
use crate::ladder::{Built, Context};
use crate::model::GraphNet;
use crate::search::finalists::finalists;
use crate::search::heuristic::heuristic_config;
use crate::search::verdict::{Sizing, Verdict, seeds_needed, verdict};
use crate::store::{FinalResult, FinalRun, StudyJson, Subject, Trial};
use crate::train::{Control, TrainConfig, evaluate_each, train};
use crate::{Error, Result};
use burn::tensor::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One subject of the final stage: a finalist (with why it was chosen) or the control.
struct Entry {
    subject: Subject,
    /// `trialN` or `control`: its label and its files' names.
    label: String,
    config: String,
    why: &'static str,
}

/// Re-trains the finalists (top-k completed trials by proxy accuracy, then the best warm
/// starts by proxy; see `finalists`) and the control with the full recipe, seed by seed;
/// records each run (best validation weights, scored on validation and test), each
/// finalist's mean over its seeds (its validation mean picks the winner; the test
/// accuracy is reported only) and the verdict. Runs already stored are skipped; an
/// interrupted run resumes from its checkpoint. Returns false when a signal interrupted it.
pub(super) async fn final_stage(
    ctl: &mut Controller,
    ctx: &Context,
    budget: &Budget,
    signals: &mut Signals,
    progress: bool,
) -> Result<bool> {
    let top = pick_finalists(ctl, budget)?;
    if top.is_empty() {
        record_rung_fidelity(ctl, budget)?;
        return Ok(true);
    }
    let stage = Stage {
        entries: subjects(ctl, ctx, budget, &top)?,
        first: budget.final_stage.seed.unwrap_or(ctx.seed),
        ctx,
        budget,
        test: Arc::new(
            budget
                .source()
                .load(Split::Test, budget.model.num_classes)
                .map_err(|e| Error::BadInput(format!("data: {e}")))?,
        ),
        progress,
    };
    let f = &budget.final_stage;
    let (mut planned, cap) = match f.seeds {
        Seeds::Fixed(n) => (n, n),
        Seeds::Auto => (AUTO_MIN_SEEDS.min(f.max_seeds), f.max_seeds),
    };
    let finalists: Vec<&Trial> = top.iter().map(|(t, _)| t).collect();
    let mut sizing = None;
    let mut i = 0;
    while i < planned {
        if !stage.round(ctl, signals, i, planned).await? {
            return Ok(false);
        }
        i += 1;
        if f.seeds == Seeds::Auto && i >= planned {
            let runs = stage.runs(ctl, i)?;
            sizing = seeds_needed(&runs, &finalists, f.margin, cap);
            if let Some(s) = &sizing {
                tracing::info!(
                    needed = s.needed,
                    pair_sd = s.pair_sd,
                    set_se = s.set_se,
                    "final stage: seeds sized from the measured noise"
                );
                planned = s.seeds();
            }
        }
    }
    let runs = stage.runs(ctl, planned)?;
    record_means(ctl, &stage.entries, &runs)?;
    record_verdict(ctl, &finalists, sizing, &runs)?;
    record_rung_fidelity(ctl, budget)?;
    Ok(true)
}

/// The finalists, then the control (when the study has one).
fn subjects(
    ctl: &mut Controller,
    ctx: &Context,
    budget: &Budget,
    top: &[(Trial, &'static str)],
) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = top
        .iter()
        .map(|(t, why)| Entry {
            subject: Subject::Trial(t.id),
            label: format!("trial{}", t.number),
            config: t.config.clone(),
            why,
        })
        .collect();
    if let Some(config) = control_config(ctl, ctx, budget.final_stage.control_calibration)? {
        entries.push(Entry {
            subject: Subject::Control,
            label: "control".into(),
            config,
            why: "control",
        });
    }
    Ok(entries)
}

/// What every re-training of a final stage shares.
struct Stage<'a> {
    entries: Vec<Entry>,
    /// The first training seed (`[final] seed`, else `search.seed`).
    first: u64,
    ctx: &'a Context,
    budget: &'a Budget,
    test: Arc<ImageSet>,
    progress: bool,
}

impl Stage<'_> {
    /// The stored runs with this stage's first `n` seeds (a store may hold runs of other
    /// seeds, from a stage run before with another `[final] seed`).
    fn runs(&self, ctl: &Controller, n: usize) -> Result<Vec<FinalRun>> {
        let first = self.first as i64;
        let mut runs = ctl.store.final_runs(ctl.study)?;
        runs.retain(|r| (first..first + n as i64).contains(&r.seed));
        Ok(runs)
    }

    /// The run with `seed` of another subject that builds the same model as `e` (an
    /// anchored space's heuristic point among the finalists, and the control), with
    /// that subject's label.
    fn twin_run(&self, e: &Entry, seed: u64, done: &[FinalRun]) -> Option<(String, FinalRun)> {
        self.entries
            .iter()
            .filter(|o| o.subject != e.subject && same_model(&o.config, &e.config))
            .find_map(|o| {
                let run = done
                    .iter()
                    .find(|r| r.subject == o.subject && r.seed == seed as i64)?;
                Some((o.label.clone(), run.clone()))
            })
    }

    /// Re-trains every subject with the `i`-th seed (of `planned`), skipping the runs
    /// already stored: false when a signal interrupted it.
    async fn round(
        &self,
        ctl: &mut Controller,
        signals: &mut Signals,
        i: usize,
        planned: usize,
    ) -> Result<bool> {
        let (f, name) = (&self.budget.final_stage, &self.budget.study.name);
        let seed = self.first + i as u64;
        let mut done = ctl.store.final_runs(ctl.study)?;
        for e in &self.entries {
            if done
                .iter()
                .any(|r| r.subject == e.subject && r.seed == seed as i64)
            {
                continue;
            }
            if let Some((label, run)) = self.twin_run(e, seed, &done) {
                tracing::info!(
                    subject = e.label,
                    seed,
                    twin = label,
                    "final re-training reused: the same model as another subject, with the same seed"
                );
                let run = FinalRun {
                    subject: e.subject,
                    ..run
                };
                ctl.store.record_final_run(ctl.study, &run)?;
                done.push(run);
                continue;
            }
            let job = Retraining {
                ctx: self.ctx.clone(),
                subject: e.subject,
                config: e.config.clone(),
                stem: self.budget.output_path(&output_stem(name, &e.label, seed)),
                epochs: f.epochs,
                seed,
                device: parse_device(&self.budget.workers.long_run_device())?,
                test: self.test.clone(),
            };
            let what = format!("final {} seed {}/{planned}", e.label, i + 1);
            let Some(res) = run_one(&ctl.stop, signals, job, &what, self.progress).await? else {
                return Ok(false);
            };
            match res {
                Ok(run) => {
                    ctl.lease.check()?;
                    tracing::info!(
                        subject = e.label,
                        seed,
                        val_top1 = run.val_top1,
                        test_top1 = run.top1,
                        "final re-training done"
                    );
                    ctl.store.record_final_run(ctl.study, &run)?;
                    done.push(run);
                }
                Err(err) => {
                    tracing::warn!(subject = e.label, seed, "final re-training failed: {err}")
                }
            }
        }
        Ok(true)
    }
}

/// Whether two configs (JSON) build the same model: the same ranks and ratios, whatever
/// their provenance.
fn same_model(a: &str, b: &str) -> bool {
    let model = |c: &str| {
        LayerConfig::from_json(c, "<final stage>")
            .ok()
            .map(|c| (c.decomposition, c.pruning))
    };
    matches!((model(a), model(b)), (Some(x), Some(y)) if x == y)
}

/// The weights and checkpoint names of a subject's run with training seed `seed`,
/// without extension: `NAME-trialN-seedS` or `NAME-control-seedS` (by the seed's value,
/// so that a stage resumed with another `[final] seed` never takes up another seed's
/// checkpoint).
pub fn output_stem(study: &str, label: &str, seed: u64) -> String {
    format!("{study}-{label}-seed{seed}")
}

/// `stem.ext`: appended, never replacing what follows a dot in the stem (a study called
/// `bayes-10.5x` has no extension `5x-trial3-seed100`: all its runs would share one
/// checkpoint).
fn with_suffix(stem: &Path, ext: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// Runs one re-training on a blocking thread with a progress bar: None when a signal
/// interrupted it.
async fn run_one(
    stop: &Arc<std::sync::atomic::AtomicBool>,
    signals: &mut Signals,
    job: Retraining,
    what: &str,
    progress: bool,
) -> Result<Option<Result<FinalRun>>> {
    tracing::info!(what, epochs = job.epochs, "final re-training starts");
    let pb = bar(
        job.epochs as u64,
        &format!("{what} {{bar:30}} epoch {{pos}}/{{len}} {{msg}} [{{elapsed}}<{{eta}}]"),
        progress,
    );
    let (bar, flag) = (pb.clone(), stop.clone());
    let (res, signalled) =
        blocking(signals, stop, move || job.run(epoch_progress(&bar, &flag))).await?;
    pb.finish_and_clear();
    Ok((!signalled).then_some(res))
}

/// The control's config (JSON): stored with the study the first time, so that a resumed
/// study re-trains the same one. None when the study has no cost target.
fn control_config(ctl: &mut Controller, ctx: &Context, calibration: f64) -> Result<Option<String>> {
    if let Some(c) = ctl.store.study_row(ctl.study)?.and_then(|r| r.control) {
        return Ok(Some(c));
    }
    let vbmf = recommend_graph_ranks(&ctl.problem.base.graph, &ctx.weights, 0.0, |_| {})?;
    let Some(config) = heuristic_config(&ctl.problem, &ctx.weights, &vbmf, calibration)? else {
        tracing::warn!("no control: the study has no cost target, or SLAMP cannot meet it");
        return Ok(None);
    };
    let json = serde_json::to_string(&config).expect("a config serializes");
    ctl.store
        .set_study_json(ctl.study, StudyJson::Control, &json)?;
    Ok(Some(json))
}

/// Each finalist's final result: the mean over its seeds (the weights of its best seed by
/// validation).
fn record_means(ctl: &mut Controller, entries: &[Entry], runs: &[FinalRun]) -> Result<()> {
    for e in entries {
        let Subject::Trial(id) = e.subject else {
            continue;
        };
        let mine: Vec<&FinalRun> = runs.iter().filter(|r| r.subject == e.subject).collect();
        let Some(best) = mine.iter().max_by(|a, b| a.val_top1.total_cmp(&b.val_top1)) else {
            continue;
        };
        let avg =
            |f: fn(&FinalRun) -> f64| mine.iter().map(|r| f(r)).sum::<f64>() / mine.len() as f64;
        let result = FinalResult {
            val_top1: Some(avg(|r| r.val_top1)),
            top1: avg(|r| r.top1),
            top5: avg(|r| r.top5),
            loss: avg(|r| r.loss),
            epochs: best.epochs,
            weights_path: best.weights_path.clone(),
            reason: Some(e.why.to_string()),
        };
        ctl.store.record_final(id, &result)?;
    }
    Ok(())
}

/// Stores the verdict on the study's winner (the best re-trained trial; see
/// `export::best_trial`) against the control.
fn record_verdict(
    ctl: &mut Controller,
    finalists: &[&Trial],
    sizing: Option<Sizing>,
    runs: &[FinalRun],
) -> Result<()> {
    let Some(row) = ctl.store.study_row(ctl.study)? else {
        return Ok(());
    };
    let winner = crate::search::export::best_trial(&ctl.store, &row)?
        .filter(|(_, f)| f.is_some())
        .map(|(t, _)| t);
    let v = Verdict {
        sizing,
        ..verdict(runs, finalists, winner.as_ref())
    };
    for line in v.lines() {
        tracing::info!("{line}");
    }
    let json = serde_json::to_string(&v).expect("a verdict serializes");
    ctl.store
        .set_study_json(ctl.study, StudyJson::Verdict, &json)?;
    Ok(())
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

/// One re-training of a subject with one seed, run on a blocking thread.
struct Retraining {
    ctx: Context,
    subject: Subject,
    /// The subject's config (JSON).
    config: String,
    /// Its checkpoint folder (`.ckpt`) and weights (`.safetensors`), without extension.
    stem: PathBuf,
    epochs: usize,
    seed: u64,
    device: Device,
    test: Arc<ImageSet>,
}

impl Retraining {
    /// Builds the candidate, trains it (resuming from its checkpoint when there is one),
    /// writes its best weights and scores them on the validation and test images.
    fn run(self, on_epoch: impl FnMut(&crate::train::Report) -> Control) -> Result<FinalRun> {
        let config = LayerConfig::from_json(&self.config, "<stored config>")?;
        let Built { graph, weights, .. } = self.ctx.build(&config, "<final>", &self.device)?;
        let ckpt = with_suffix(&self.stem, "ckpt");
        let out = with_suffix(&self.stem, "safetensors");
        let cfg = TrainConfig {
            resume: ckpt.join(crate::train::checkpoint::STATE_FILE).exists(),
            checkpoint_dir: Some(ckpt),
            seed: self.seed,
            ..self.ctx.final_config(self.epochs)
        };
        let o = train(
            &graph,
            weights,
            self.ctx.train.clone(),
            self.ctx.val.clone(),
            &cfg,
            &self.device,
            on_epoch,
        )?;
        o.best_weights.save_safetensors(&out)?;
        let m = GraphNet::from_weights(&graph, o.best_weights, "<final>", &self.device)?;
        let (v, val_correct) = evaluate_each(&m, &self.ctx.val, 256, None, &self.device)?;
        let (e, test_correct) = evaluate_each(&m, &self.test, 256, None, &self.device)?;
        Ok(FinalRun {
            subject: self.subject,
            seed: self.seed as i64,
            val_top1: v.top1,
            top1: e.top1,
            top5: e.top5,
            loss: e.loss,
            epochs: o.epochs_run,
            weights_path: Some(out.display().to_string()),
            val_correct,
            test_correct,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotted_study_name_keeps_every_run_apart() {
        let stem = |label| PathBuf::from(output_stem("bayes-s0-10.5x", label, 100));
        let ckpt = with_suffix(&stem("trial3"), "ckpt");
        assert_eq!(ckpt, PathBuf::from("bayes-s0-10.5x-trial3-seed100.ckpt"));
        assert_ne!(ckpt, with_suffix(&stem("control"), "ckpt"));
        assert_eq!(
            with_suffix(&stem("control"), "safetensors"),
            PathBuf::from("bayes-s0-10.5x-control-seed100.safetensors")
        );
    }
}
