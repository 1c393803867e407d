//! Whether a study's step-0 gate (the rung at step 0: after building the candidate and
//! recalibrating its BNs, before any fine-tuning) may stop trials. A gate earns its place
//! only where its signal, measured in this regime (base weights, search space, cost
//! target) by `rankprune fidelity` against the mean of several re-trainings, ranks
//! candidates with a Kendall tau whose 95% interval lies above 0 (`[proxy]
//! gate_evidence`). Otherwise trials are still scored at step 0 (for later fidelity
//! figures) but never stopped there. `[proxy] gate = "always"` keeps the gate unmeasured.

use super::identity::sha256_file;
use super::problem::Target;
use crate::budget::{Budget, GateMode, Rung0Score};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a fidelity run measured on: the study's inputs that decide which candidates it
/// meets and how they score. Written into `fidelity.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regime {
    pub weights_sha256: String,
    pub space_sha256: String,
    pub target: Target,
}

impl Regime {
    pub fn of(budget: &Budget) -> Result<Self> {
        let base = budget.base_network()?.graph;
        Ok(Self {
            weights_sha256: sha256_file(&budget.model.weights)?,
            space_sha256: sha256_file(&budget.search.space)?,
            target: Target::from_objective(&crate::graph::cost::count(&base), &budget.objective),
        })
    }
}

/// The decision, stored with the study (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    /// Whether the step-0 rung may stop trials.
    pub stops: bool,
    /// The step-0 signal as `rankprune fidelity` names it (`recon:2 kl`, `bn:2 acc`).
    pub signal: String,
    /// Its Kendall tau against the multi-seed mean, and the tau's 95% interval.
    pub tau: Option<f64>,
    pub tau_95: Option<[f64; 2]>,
    /// The fidelity summary it was read from.
    pub evidence: Option<String>,
    /// Why, in words.
    pub reason: String,
}

impl GateDecision {
    /// One line for logs and tables.
    pub fn describe(&self) -> String {
        let verb = if self.stops {
            "stops trials"
        } else {
            "stops none"
        };
        format!("step-0 gate {verb}: {}", self.reason)
    }
}

/// The fidelity row (probe, score) of a study's step-0 signal.
fn signal(budget: &Budget) -> (String, &'static str) {
    let bn = budget.proxy.bn_recalibration;
    match budget.proxy.rung0_score {
        Rung0Score::Kl => (format!("recon:{bn}"), "kl"),
        Rung0Score::Accuracy if bn > 0 => (format!("bn:{bn}"), "acc"),
        Rung0Score::Accuracy => ("compressed".into(), "acc"),
    }
}

/// The study's gate decision (None when it has no step-0 rung). An evidence file that
/// cannot be read, lacks the signal, or was measured in another regime is bad input.
pub fn decide(budget: &Budget) -> Result<Option<GateDecision>> {
    if !budget.proxy.rungs.contains(&0) {
        return Ok(None);
    }
    let (probe, score) = signal(budget);
    let name = format!("{probe} {score}");
    let evidence = budget.proxy.gate_evidence.as_deref();
    let Some(path) = evidence else {
        let (stops, reason) = match budget.proxy.gate {
            GateMode::Always => (true, "unmeasured; proxy.gate = \"always\"".to_string()),
            GateMode::Measured => (
                false,
                "unmeasured (no proxy.gate_evidence): trials are scored at step 0, never stopped there".into(),
            ),
        };
        return Ok(Some(GateDecision {
            stops,
            signal: name,
            tau: None,
            tau_95: None,
            evidence: None,
            reason,
        }));
    };
    let file = path.display().to_string();
    let rows = measured(path, &Regime::of(budget)?)?;
    judge(budget, &rows, &file)
        .map(Some)
        .map_err(|m| Error::BadInput(format!("proxy.gate_evidence = {file}: {m}")))
}

/// The gate decision that fidelity `rows` (as `fidelity.json` stores them), measured in
/// the study's regime, give the budget's step-0 signal; `evidence` names them. An error
/// when the rows lack the signal or its tau.
pub fn judge(
    budget: &Budget,
    rows: &serde_json::Value,
    evidence: &str,
) -> std::result::Result<GateDecision, String> {
    let (probe, score) = signal(budget);
    let name = format!("{probe} {score}");
    let row = rows
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["probe"] == probe.as_str() && r["score"] == score)
        })
        .ok_or_else(|| {
            format!("no row for the step-0 signal {name} (run fidelity with --probes {probe})")
        })?;
    let num = |x: &serde_json::Value| x.as_f64();
    let (tau, tau_95) = match (
        num(&row["kendall_tau"]),
        num(&row["tau_95"][0]),
        num(&row["tau_95"][1]),
    ) {
        (Some(t), Some(lo), Some(hi)) => (t, [lo, hi]),
        _ => {
            return Err(format!(
                "{name}: no tau (the signal was constant over the candidates)"
            ));
        }
    };
    let above = tau_95[0] > 0.0;
    let stops = above || budget.proxy.gate == GateMode::Always;
    let mut reason = format!(
        "{name} ranks candidates at Kendall tau {tau:+.2}, 95% [{:+.2}, {:+.2}] against the multi-seed mean ({})",
        tau_95[0],
        tau_95[1],
        if above {
            "above 0"
        } else {
            "not above 0: it cannot be trusted to stop trials"
        }
    );
    if !above && stops {
        reason.push_str("; kept by proxy.gate = \"always\"");
    }
    Ok(GateDecision {
        stops,
        signal: name,
        tau: Some(tau),
        tau_95: Some(tau_95),
        evidence: Some(evidence.to_string()),
        reason,
    })
}

/// The rows of the fidelity summary at `path`, which must have been measured in
/// `regime`.
fn measured(path: &Path, regime: &Regime) -> Result<serde_json::Value> {
    let file = path.display();
    let bad = |m: String| Error::BadInput(format!("proxy.gate_evidence = {file}: {m}"));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let theirs: Regime = serde_json::from_value(v["regime"].clone()).map_err(|_| {
        bad("no \"regime\": not a fidelity.json of `rankprune fidelity` (re-run its --report-only to add it)".into())
    })?;
    for (what, same) in [
        (
            "base weights",
            theirs.weights_sha256 == regime.weights_sha256,
        ),
        ("search space", theirs.space_sha256 == regime.space_sha256),
        ("cost target", theirs.target == regime.target),
    ] {
        if !same {
            return Err(bad(format!(
                "measured with other {what} than this study's: the gate's fidelity holds in one regime only"
            )));
        }
    }
    Ok(v["rows"].take())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(dir: &Path, proxy: &str) -> Budget {
        std::fs::write(dir.join("w.safetensors"), b"weights").unwrap();
        std::fs::write(dir.join("s.toml"), b"[pruning]").unwrap();
        let text = format!(
            "[study]\nname = \"g\"\ndb = \"g.sqlite\"\n[model]\narch = \"cfg_bn:4,M,8\"\nnum_classes = 3\nweights = \"w.safetensors\"\n[data]\ndataset = \"cifar10\"\ndir = \"data\"\n[search]\nspace = \"s.toml\"\nstrategy = \"random\"\n[objective]\nkind = \"constrained\"\ntarget_flops_reduction = 2.0\n[limits]\nmax_trials = 1\n[proxy]\n{proxy}"
        );
        let path = dir.join("b.toml");
        std::fs::write(&path, text).unwrap();
        Budget::load(&path).unwrap()
    }

    fn evidence(dir: &Path, regime: &Regime, tau: f64, lo: f64) {
        let v = serde_json::json!({
            "regime": regime,
            "rows": [
                {"probe": "bn:2", "score": "acc", "kendall_tau": 0.9, "tau_95": [0.5, 1.0]},
                {"probe": "recon:2", "score": "kl", "kendall_tau": tau, "tau_95": [lo, 0.6]},
            ]
        });
        std::fs::write(dir.join("fidelity.json"), v.to_string()).unwrap();
    }

    const KL_GATE: &str = "rungs = [0]\nbn_recalibration = 2\nrung0_score = \"kl\"";

    #[test]
    fn the_gate_stops_only_where_its_interval_is_above_zero() {
        let dir = tempfile::tempdir().unwrap();
        let b = budget(
            dir.path(),
            &format!("{KL_GATE}\ngate_evidence = \"fidelity.json\""),
        );
        let regime = Regime::of(&b).unwrap();
        evidence(dir.path(), &regime, 0.3, 0.05);
        let d = decide(&b).unwrap().unwrap();
        assert!(d.stops, "{d:?}");
        assert_eq!(
            (d.signal.as_str(), d.tau, d.tau_95),
            ("recon:2 kl", Some(0.3), Some([0.05, 0.6]))
        );
        // The measurement: tau -0.17, 95% [-0.53, +0.22].
        evidence(dir.path(), &regime, -0.17, -0.53);
        let d = decide(&b).unwrap().unwrap();
        assert!(!d.stops && d.reason.contains("not above 0"), "{d:?}");
        // Unless the budget insists.
        let b = budget(
            dir.path(),
            &format!("{KL_GATE}\ngate_evidence = \"fidelity.json\"\ngate = \"always\""),
        );
        let d = decide(&b).unwrap().unwrap();
        assert!(d.stops && d.reason.contains("always"), "{d:?}");
    }

    #[test]
    fn an_unmeasured_gate_stops_nothing_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let d = decide(&budget(dir.path(), KL_GATE)).unwrap().unwrap();
        assert!(
            !d.stops && d.tau.is_none() && d.reason.contains("unmeasured"),
            "{d:?}"
        );
        let d = decide(&budget(
            dir.path(),
            &format!("{KL_GATE}\ngate = \"always\""),
        ))
        .unwrap()
        .unwrap();
        assert!(d.stops, "{d:?}");
        assert_eq!(decide(&budget(dir.path(), "rungs = [50]")).unwrap(), None);
    }

    #[test]
    fn evidence_from_another_regime_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = budget(
            dir.path(),
            &format!("{KL_GATE}\ngate_evidence = \"fidelity.json\""),
        );
        let mut regime = Regime::of(&b).unwrap();
        regime.target.max_flops = regime.target.max_flops.map(|m| m / 2);
        evidence(dir.path(), &regime, 0.3, 0.05);
        let e = decide(&b).unwrap_err().to_string();
        assert!(
            e.contains("fidelity.json") && e.contains("cost target"),
            "{e}"
        );
        let b = budget(
            dir.path(),
            "rungs = [0]\nbn_recalibration = 8\ngate_evidence = \"fidelity.json\"",
        );
        evidence(dir.path(), &Regime::of(&b).unwrap(), 0.3, 0.05);
        let e = decide(&b).unwrap_err().to_string();
        assert!(e.contains("no row for the step-0 signal bn:8 acc"), "{e}");
    }
}
