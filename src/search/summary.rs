//! Each study of a store at a glance: state, progress, best trial, wall time.

use super::export::{best_trial, study_base};
use super::problem::Target;
use super::verdict::{Verdict, stored_verdict};
use crate::Result;
use crate::budget::Budget;
use crate::cost::Cost;
use crate::store::{FinalResult, Lease, StudyRow, Trial, TrialState, TrialStore, now, study_scope};

/// One study at a glance: what `rankprune studies` and the dashboard's studies page show.
#[derive(Debug, Clone)]
pub struct StudySummary {
    pub row: StudyRow,
    /// The stored state, or for studies from before schema v5 one read off the trials.
    pub state: String,
    /// Trials that ended (complete, early-stopped or failed).
    pub done: usize,
    pub total: usize,
    /// `limits.max_trials` of the study's budget.
    pub limit: Option<usize>,
    pub best: Option<(Trial, Option<FinalResult>)>,
    pub base: Option<Cost>,
    pub target: Option<Target>,
    /// From the study's creation to its last recorded event (now, while it runs).
    pub wall_s: f64,
    /// The study's latest controller lease (None if no controller ever held one).
    pub controller: Option<Lease>,
    /// The final stage's verdict on the winner against the one-shot heuristic.
    pub verdict: Option<Verdict>,
}

impl StudySummary {
    /// Validation accuracy of the best trial: after re-training if it was, else its proxy's.
    pub fn best_val(&self) -> Option<f64> {
        let (t, f) = self.best.as_ref()?;
        f.as_ref().and_then(|f| f.val_top1).or(t.proxy_acc)
    }

    pub fn best_test(&self) -> Option<f64> {
        self.best.as_ref()?.1.as_ref().map(|f| f.top1)
    }

    /// Base FLOPs over `flops`.
    pub fn reduction(&self, flops: u64) -> Option<f64> {
        self.base
            .as_ref()
            .map(|b| b.flops as f64 / flops.max(1) as f64)
    }

    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "running" | "final_stage")
    }

    /// Whether a controller holds the study now.
    pub fn controller_alive(&self) -> bool {
        self.controller.as_ref().is_some_and(|l| l.live_at(now()))
    }

    /// The controller's liveness for people: `alive`, `lost N s ago` (a study left
    /// running or in its final stage by a controller that died), or `-`.
    pub fn controller_status(&self) -> String {
        match &self.controller {
            Some(_) if self.controller_alive() => "alive".into(),
            Some(l) if self.is_live() => {
                format!("lost {:.0} s ago", (now() - l.expires_at).max(0.0))
            }
            _ => "-".into(),
        }
    }
}

impl StudySummary {
    /// As `rankprune studies --json` and the dashboard's `/api/studies` give it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.row.id,
            "name": self.row.name,
            "state": self.state,
            "stop_reason": self.row.stop_reason,
            "trials": self.total,
            "done": self.done,
            "max_trials": self.limit,
            "best_trial": self.best.as_ref().map(|(t, _)| t.number),
            "best_val": self.best_val(),
            "best_test": self.best_test(),
            "flops_reduction": self.best.as_ref().and_then(|(t, _)| self.reduction(t.cost.flops)),
            "created_at": self.row.created_at,
            "wall_seconds": self.wall_s,
            "controller": self.controller.as_ref().map(|l| serde_json::json!({
                "holder": l.holder,
                "alive": self.controller_alive(),
                "renewed_at": l.renewed_at,
                "expires_at": l.expires_at,
                "released_at": l.released_at,
            })),
            "controller_status": self.controller_status(),
            "verdict": self.verdict,
            "detectable_margin_points": self.verdict.as_ref().and_then(|v| v.detectable_points()),
        })
    }
}

pub(crate) fn budget_of(row: &StudyRow) -> Option<Budget> {
    Budget::of_study(row).ok()
}

pub(crate) fn summary(store: &TrialStore, row: StudyRow) -> Result<StudySummary> {
    let trials = store.trials(row.id)?;
    let ended = |s: TrialState| {
        matches!(
            s,
            TrialState::Complete | TrialState::EarlyStopped | TrialState::Failed
        )
    };
    let done = trials.iter().filter(|t| ended(t.state)).count();
    let state = match row.state {
        Some(s) => s.as_str().to_string(),
        None if trials.iter().any(|t| t.state == TrialState::Running) => "running".into(),
        None => "ended".into(),
    };
    let last = trials
        .iter()
        .flat_map(|t| [Some(t.queued_at), t.started_at, t.finished_at])
        .flatten()
        .chain(row.state_at)
        .fold(row.created_at, f64::max);
    let (base, target) = study_base(&row).unzip();
    let controller = store.leases(&study_scope(row.id))?.pop();
    let mut s = StudySummary {
        best: best_trial(store, &row)?,
        verdict: stored_verdict(&row),
        limit: budget_of(&row).map(|b| b.limits.max_trials),
        done,
        total: trials.len(),
        base,
        target,
        wall_s: last - row.created_at,
        controller,
        state,
        row,
    };
    if s.is_live() {
        s.wall_s = s.wall_s.max(now() - s.row.created_at);
    }
    Ok(s)
}

/// Every study of the store, oldest first.
pub fn studies(store: &TrialStore) -> Result<Vec<StudySummary>> {
    store
        .studies()?
        .into_iter()
        .map(|row| summary(store, row))
        .collect()
}
