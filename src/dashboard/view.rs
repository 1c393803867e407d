//! What the dashboard's pages show, read from the store: plain data, no HTML.

use crate::config::LayerConfig;
use crate::graph::Op;
use crate::graph::groups::groups;
use crate::search::pareto::pareto_front;
use crate::search::summary::{budget_of, summary};
use crate::store::{FinalResult, RungFidelity, StudyRow, Trial, TrialState, TrialStore};
use std::collections::HashMap;

pub use crate::search::summary::{StudySummary, studies};
use crate::{Error, Result};

/// A trial with what was recorded about it.
#[derive(Debug, Clone)]
pub struct TrialRow {
    pub trial: Trial,
    pub fin: Option<FinalResult>,
    /// Rung scores: (step, validation value).
    pub reports: Vec<(i64, f64)>,
}

/// One layer of the best trial against the base model.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerBar {
    pub name: String,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Tucker-2 ranks (input, output), if decomposed.
    pub ranks: Option<[usize; 2]>,
    /// Fraction of the layer's output filters pruned (of its last Tucker conv if
    /// decomposed), if pruned.
    pub ratio: Option<f64>,
}

/// Everything the study page draws.
#[derive(Debug, Clone)]
pub struct StudyView {
    pub summary: StudySummary,
    pub trials: Vec<TrialRow>,
    /// Indices into `trials` of the completed trials on the accuracy-vs-FLOPs front.
    pub front: Vec<usize>,
    pub fidelity: Vec<RungFidelity>,
    pub layers: Vec<LayerBar>,
}

/// The study with id `id`, or None.
pub fn find_study(store: &TrialStore, id: i64) -> Result<Option<StudyRow>> {
    Ok(store.study_row(id)?)
}

pub fn trial_row(store: &TrialStore, trial: Trial) -> Result<TrialRow> {
    Ok(TrialRow {
        fin: store.final_result(trial.id)?,
        reports: store.reports(trial.id)?,
        trial,
    })
}

/// The study page's data.
pub fn study(store: &TrialStore, row: StudyRow) -> Result<StudyView> {
    let summary = summary(store, row)?;
    let trials = store
        .trials(summary.row.id)?
        .into_iter()
        .map(|t| trial_row(store, t))
        .collect::<Result<Vec<_>>>()?;
    let complete: Vec<usize> = (0..trials.len())
        .filter(|&i| trials[i].trial.state == TrialState::Complete)
        .collect();
    let points: Vec<(f64, u64)> = complete
        .iter()
        .map(|&i| {
            let t = &trials[i].trial;
            (t.proxy_acc.unwrap_or(0.0), t.cost.flops)
        })
        .collect();
    let front = pareto_front(&points)
        .into_iter()
        .map(|j| complete[j])
        .collect();
    let layers = match &summary.best {
        Some((t, _)) => layer_bars(&summary.row, &t.config)?,
        None => Vec::new(),
    };
    Ok(StudyView {
        fidelity: store.rung_fidelity(summary.row.id)?,
        summary,
        trials,
        front,
        layers,
    })
}

/// A trial's ranks and output-filter ratios beside the base model's channel counts
/// (empty when the study's budget cannot be read).
pub fn layer_bars(study: &StudyRow, config: &str) -> Result<Vec<LayerBar>> {
    let Some(budget) = budget_of(study) else {
        return Ok(Vec::new());
    };
    let base = budget.base_network()?.graph;
    let config = LayerConfig::from_json(config, "best trial").map_err(Error::from)?;
    // A conv's ratio is its group's, named by the group's first conv (its Tucker chain's
    // last conv when that one is decomposed).
    let group_of: HashMap<usize, String> = groups(&base)
        .into_iter()
        .flat_map(|g| {
            let name = g.name.clone();
            g.members.into_iter().map(move |m| (m, name.clone()))
        })
        .collect();
    Ok(base
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            Op::Conv(c) => Some(LayerBar {
                name: n.name.clone(),
                in_channels: c.in_channels,
                out_channels: c.out_channels,
                ranks: config
                    .decomposition
                    .as_ref()
                    .and_then(|d| d.ranks.get(&n.name).copied()),
                ratio: config.pruning.as_ref().and_then(|p| {
                    let group = group_of.get(&i).unwrap_or(&n.name);
                    let last = format!("{group}_tucker_2");
                    p.ratios.get(group).or(p.ratios.get(&last)).copied()
                }),
            }),
            _ => None,
        })
        .collect())
}

/// The proxy accuracy and the validation accuracy after re-training of each re-trained
/// trial, with the trial number.
pub fn retrained(view: &StudyView) -> Vec<(i64, f64, f64)> {
    view.trials
        .iter()
        .filter_map(|r| {
            let val = r.fin.as_ref()?.val_top1?;
            Some((r.trial.number, r.trial.proxy_acc?, val))
        })
        .collect()
}

/// Best proxy accuracy so far among completed trials that meet the target, after each
/// trial number.
pub fn best_so_far(view: &StudyView) -> Vec<(i64, f64)> {
    let target = view.summary.target.unwrap_or_default();
    let mut best: Option<f64> = None;
    let mut out = Vec::new();
    for r in &view.trials {
        let t = &r.trial;
        if t.state == TrialState::Complete && target.admits(&t.cost) {
            let a = t.proxy_acc.unwrap_or(0.0);
            best = Some(best.map_or(a, |b: f64| b.max(a)));
        }
        if let Some(b) = best {
            out.push((t.number, b));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::problem::Target;

    fn row(number: i64, state: TrialState, acc: f64, flops: u64) -> TrialRow {
        TrialRow {
            trial: Trial {
                config: "{}".into(),
                ..Trial::fixture(number + 1, state, Some(acc), flops)
            },
            fin: None,
            reports: Vec::new(),
        }
    }

    /// Study 1, "s", with nothing else stored.
    fn study_row() -> StudyRow {
        StudyRow {
            id: 1,
            name: "s".into(),
            budget: String::new(),
            created_at: 0.0,
            target: None,
            state: None,
            stop_reason: None,
            state_at: None,
            budget_dir: None,
            submitted_at: None,
            stop_requested_at: None,
            identity: None,
            control: None,
            verdict: None,
            gate: None,
        }
    }

    #[test]
    fn best_so_far_counts_only_completed_trials_that_meet_the_target() {
        let study = study_row();
        let view = StudyView {
            summary: StudySummary {
                row: study,
                state: "ended".into(),
                done: 5,
                total: 5,
                limit: None,
                best: None,
                base: None,
                target: Some(Target {
                    max_flops: Some(100),
                    max_params: None,
                    max_latency_us: None,
                }),
                wall_s: 0.0,
                controller: None,
                verdict: None,
            },
            trials: vec![
                row(0, TrialState::EarlyStopped, 0.9, 50),
                row(1, TrialState::Complete, 0.5, 50),
                row(2, TrialState::Complete, 0.8, 500),
                row(3, TrialState::Complete, 0.4, 50),
                row(4, TrialState::Complete, 0.7, 100),
            ],
            front: Vec::new(),
            fidelity: Vec::new(),
            layers: Vec::new(),
        };
        assert_eq!(
            best_so_far(&view),
            vec![(1, 0.5), (2, 0.5), (3, 0.5), (4, 0.7)]
        );
    }

    /// A running study whose controller's lease expired shows it lost, on the studies
    /// page too; a live one shows alive; a finished study shows none.
    #[test]
    fn the_controller_shows_alive_or_lost() {
        let t = crate::store::now();
        let lease = |expires_at: f64| crate::store::Lease {
            id: 1,
            scope: "study:1".into(),
            holder: "serve on h (pid 7)".into(),
            acquired_at: t - 100.0,
            renewed_at: expires_at - 10.0,
            expires_at,
            released_at: None,
        };
        let summary = |state: &str, l| StudySummary {
            row: study_row(),
            state: state.into(),
            done: 0,
            total: 0,
            limit: None,
            best: None,
            base: None,
            target: None,
            wall_s: 0.0,
            controller: Some(l),
            verdict: None,
        };
        let lost = summary("running", lease(t - 42.0));
        assert!(!lost.controller_alive());
        assert_eq!(lost.controller_status(), "lost 42 s ago");
        let html = super::super::pages::studies_table(&[lost]).into_string();
        assert!(
            html.contains("lost 42 s ago") && html.contains("serve on h (pid 7)"),
            "{html}"
        );
        let live = summary("running", lease(t + 5.0));
        assert!(live.controller_alive());
        assert_eq!(live.controller_status(), "alive");
        assert_eq!(
            summary("finished", lease(t - 42.0)).controller_status(),
            "-"
        );
    }

    /// A residual network's chart: a bar per conv of the base network, its ranks where
    /// the config decomposes it, and its dependency group's ratio (a stream's members
    /// share the stem's; a decomposed group's ratio is keyed by its chain's last conv).
    #[test]
    fn a_residual_networks_bars_show_each_convs_group_ratio() {
        let budget = r#"
[study]
name = "s"
db = "s.sqlite"
[model]
arch = "resnet8@0.5"
num_classes = 4
weights = "w.safetensors"
[data]
dataset = "cifar100"
dir = "d"
[search]
space = "space.toml"
strategy = "random"
[objective]
kind = "constrained"
target_flops_reduction = 2
[limits]
max_trials = 1
[proxy]
steps = 1
[workers]
cpu = 1
"#;
        let study = StudyRow {
            budget: budget.into(),
            ..study_row()
        };
        let config = r#"{"decomposition": {"method": "tucker2", "ranks": {"layer1.0.conv2": [3, 4]}},
            "pruning": {"method": "l2_norm", "ratios": {"conv1": 0.5, "layer2.0.conv1": 0.25}}}"#;
        let bars = layer_bars(&study, config).unwrap();
        let bar = |name: &str| bars.iter().find(|b| b.name == name).unwrap();
        assert_eq!(
            bars.len(),
            9,
            "stem, 3 blocks x 2, 2 projections, no classifier"
        );
        // The first stage's stream: the stem and the block's last conv (decomposed).
        assert_eq!(bar("conv1").ratio, Some(0.5));
        assert_eq!(bar("layer1.0.conv2").ratio, Some(0.5));
        assert_eq!(bar("layer1.0.conv2").ranks, Some([3, 4]));
        assert_eq!(bar("layer2.0.conv1").ratio, Some(0.25));
        assert_eq!(bar("layer1.0.conv1").ratio, None);
        assert_eq!(bar("layer2.0.conv2").ratio, None);
    }
}
