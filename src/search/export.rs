//! Reading a finished (or running) study: choosing a study, the best trial, and the
//! exported winner config (reference format plus `metrics` and `provenance`).

use super::problem::Target;
use super::verdict::stored_verdict;
use crate::budget::Budget;
use crate::compress::graph_config::config_cost;
use crate::config::LayerConfig;
use crate::cost::Cost;
use crate::store::{FinalResult, FinalRun, StudyRow, Subject, Trial, TrialState, TrialStore};
use crate::{Error, Result};

/// The study called `name`, or the only study of the file when `name` is `None`.
pub fn pick_study(store: &TrialStore, db: &str, name: Option<&str>) -> Result<StudyRow> {
    let studies = store.studies()?;
    let names = || {
        studies
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => studies
            .iter()
            .find(|s| s.name == n)
            .cloned()
            .ok_or_else(|| Error::BadInput(format!("{db}: no study {n:?} (studies: {})", names()))),
        None => match studies.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::BadInput(format!("{db}: holds no study yet"))),
            _ => Err(Error::BadInput(format!(
                "{db}: holds several studies ({}): choose one with --study",
                names()
            ))),
        },
    }
}

/// The base model's cost (from the budget text stored with the study) and the study's
/// stored target (computed from that text for a study that has none stored).
pub fn study_base(study: &StudyRow) -> Option<(Cost, Target)> {
    let b = Budget::of_study(study).ok()?;
    let c = crate::graph::cost::count(&study_network(study).ok()?.graph);
    let stored = study
        .target
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok());
    let target = stored.unwrap_or_else(|| Target::from_objective(&c, &b.objective));
    Some((c, target))
}

/// The best trial: highest validation accuracy after the final re-training (its mean over
/// the final stage's seeds) among re-trained trials if any, else the highest proxy
/// accuracy among completed trials that meet the target.
pub fn best_trial(
    store: &TrialStore,
    study: &StudyRow,
) -> Result<Option<(Trial, Option<FinalResult>)>> {
    let target = study_base(study).map(|(_, t)| t).unwrap_or_default();
    let mut best: Option<(Trial, Option<FinalResult>)> = None;
    // Re-trained trials first, by validation accuracy; then the rest by proxy accuracy.
    // The test accuracy never chooses.
    let key = |t: &Trial, f: &Option<FinalResult>| match f.as_ref().and_then(|f| f.val_top1) {
        Some(v) => (true, v),
        None => (false, t.proxy_acc.unwrap_or(0.0)),
    };
    for t in store.trials(study.id)? {
        if !target.admits(&t.cost) {
            continue;
        }
        let f = store.final_result(t.id)?;
        // A warm start stopped early at a rung may be a finalist (see `finalists`): once
        // re-trained it competes like the rest.
        if t.state != TrialState::Complete && f.is_none() {
            continue;
        }
        let better = best.as_ref().is_none_or(|(bt, bf)| {
            let (a, b) = (key(&t, &f), key(bt, bf));
            (a.0 && !b.0) || (a.0 == b.0 && a.1 > b.1)
        });
        if better {
            best = Some((t, f));
        }
    }
    Ok(best)
}

/// Trials as `rankprune trials --json` prints them: each trial's stored fields plus its
/// final re-training (`final`: the mean over its seeds, null if none), each seed's run
/// (`final_runs`) and its rung scores (`rung_scores`).
pub fn trials_json(store: &TrialStore, trials: &[Trial]) -> Result<serde_json::Value> {
    let runs = match trials.first() {
        Some(t) => store.final_runs(t.study_id)?,
        None => Vec::new(),
    };
    let rows = trials
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).expect("a trial serializes");
            v["final"] = serde_json::to_value(store.final_result(t.id)?).expect("a result");
            let mine: Vec<&FinalRun> = runs
                .iter()
                .filter(|r| r.subject == Subject::Trial(t.id))
                .collect();
            v["final_runs"] = serde_json::to_value(mine).expect("runs serialize");
            v["rung_scores"] = serde_json::to_value(store.reports(t.id)?).expect("pairs");
            Ok(v)
        })
        .collect::<Result<_>>()?;
    Ok(serde_json::Value::Array(rows))
}

/// FNV-1a (64 bit) of the budget text, as provenance.
pub fn fnv1a64(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The winner config of `trial`: its layer config plus metrics and provenance.
pub fn export_config(
    store: &TrialStore,
    study: &StudyRow,
    trial: &Trial,
    db: &str,
) -> Result<LayerConfig> {
    let mut config =
        LayerConfig::from_json(&trial.config, &format!("{db}: trial {}", trial.number))?;
    let f = store.final_result(trial.id)?;
    let base = study_base(study).map(|(c, _)| c);
    let base = base.as_ref();
    config.metrics = Some(serde_json::json!({
        "state": trial.state,
        "proxy_acc": trial.proxy_acc,
        "proxy_loss": trial.proxy_loss,
        "final_val_top1": f.as_ref().and_then(|f| f.val_top1),
        "final_top1": f.as_ref().map(|f| f.top1),
        "final_top5": f.as_ref().map(|f| f.top5),
        "final_epochs": f.as_ref().map(|f| f.epochs),
        "final_weights": f.as_ref().and_then(|f| f.weights_path.clone()),
        "flops": trial.cost.flops,
        "params": trial.cost.params,
        "size_bytes": trial.cost.size_bytes,
        "latency_ms": trial.cost.latency_us.map(|us| us as f64 / 1e3),
        "rung_scores": store.reports(trial.id)?,
        "final_runs": runs_of(store, study, Subject::Trial(trial.id))?,
        "flops_reduction": base.map(|b| b.flops as f64 / trial.cost.flops.max(1) as f64),
        "params_reduction": base.map(|b| b.params as f64 / trial.cost.params.max(1) as f64),
    }));
    // An anchored space's knobs, which the trial's config carries, stay with it.
    let knobs = config.provenance.take();
    config.provenance = Some(serde_json::json!({
        "db": db,
        "study": study.name,
        "trial": trial.number,
        "search_space": knobs,
        "trial_id": trial.id,
        "budget_fnv1a64": fnv1a64(&study.budget),
        "rung_fidelity": store.rung_fidelity(study.id)?,
        "verdict": stored_verdict(study),
        "gate": stored_gate(study),
        "rankprune": env!("CARGO_PKG_VERSION"),
    }));
    Ok(config)
}

/// The final stage's runs of `subject` (seed, validation and test accuracy, weights).
fn runs_of(store: &TrialStore, study: &StudyRow, subject: Subject) -> Result<Vec<FinalRun>> {
    let mut runs = store.final_runs(study.id)?;
    runs.retain(|r| r.subject == subject);
    Ok(runs)
}

/// The control's config (the one-shot heuristic at the study's target, re-trained by the
/// final stage) with its re-training results and provenance; an error naming why when
/// the study has none (no final stage yet, or no cost target).
pub fn export_control(store: &TrialStore, study: &StudyRow, db: &str) -> Result<LayerConfig> {
    let Some(text) = study.control.as_deref() else {
        return Err(Error::BadInput(format!(
            "{db}: study {} has no control config: its final stage has not started, or its objective has no cost target",
            study.name
        )));
    };
    let mut config = LayerConfig::from_json(text, &format!("{db}: study {} control", study.name))?;
    let cost = config_cost(&study_network(study)?.graph, &config).ok();
    let base = study_base(study).map(|(c, _)| c);
    let runs = runs_of(store, study, Subject::Control)?;
    config.metrics = Some(serde_json::json!({
        "final_runs": runs,
        "flops": cost.as_ref().map(|c| c.flops),
        "params": cost.as_ref().map(|c| c.params),
        "flops_reduction": cost.as_ref().zip(base.as_ref()).map(|(c, b)| b.flops as f64 / c.flops.max(1) as f64),
        "params_reduction": cost.as_ref().zip(base.as_ref()).map(|(c, b)| b.params as f64 / c.params.max(1) as f64),
    }));
    config.provenance = Some(serde_json::json!({
        "db": db,
        "study": study.name,
        "control": format!(
            "VBMF ranks (calibration {}) and SLAMP ratios at the study's target",
            Budget::of_study(study)?.final_stage.control_calibration
        ),
        "budget_fnv1a64": fnv1a64(&study.budget),
        "verdict": stored_verdict(study),
        "gate": stored_gate(study),
        "rankprune": env!("CARGO_PKG_VERSION"),
    }));
    Ok(config)
}

/// The study's step-0 gate decision, as stored (None before it ran, or without a rung 0).
fn stored_gate(study: &StudyRow) -> Option<serde_json::Value> {
    study
        .gate
        .as_deref()
        .and_then(|g| serde_json::from_str(g).ok())
}

/// The study's base network (from its stored budget).
fn study_network(study: &StudyRow) -> Result<crate::network::Network> {
    let b = Budget::of_study(study)?;
    b.base_network()
        .map_err(|e| Error::BadInput(format!("{}: {e}", study.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CandidateCost;

    #[test]
    fn the_winner_is_chosen_by_validation_never_by_test_accuracy() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TrialStore::open(&dir.path().join("s.sqlite")).unwrap();
        // Not a budget: no target, every trial is admitted.
        let study = store.study("s", "free text").unwrap();
        let cost = CandidateCost {
            flops: 1,
            params: 1,
            size_bytes: 4,
            latency_us: None,
        };
        let mut ids = Vec::new();
        for (i, proxy) in [0.9, 0.5, 0.7].into_iter().enumerate() {
            store
                .enqueue(study, &format!("{{\"n\":{i}}}"), cost)
                .unwrap();
            let t = store.claim(study, "cpu0").unwrap().unwrap();
            store.complete(t.id, proxy, 0.1).unwrap();
            ids.push(t.id);
        }
        let row = pick_study(&store, "s.sqlite", Some("s")).unwrap();
        // Without re-training: the best proxy.
        assert_eq!(best_trial(&store, &row).unwrap().unwrap().0.id, ids[0]);
        let result = |val: f64, test: f64| FinalResult {
            val_top1: Some(val),
            top1: test,
            top5: 1.0,
            loss: 0.1,
            epochs: 3,
            weights_path: None,
            reason: Some("top_k".into()),
        };
        store.record_final(ids[1], &result(0.80, 0.99)).unwrap();
        store.record_final(ids[2], &result(0.85, 0.60)).unwrap();
        let (t, f) = best_trial(&store, &row).unwrap().unwrap();
        assert_eq!(t.id, ids[2]);
        assert_eq!(f, Some(result(0.85, 0.60)));
    }
}
