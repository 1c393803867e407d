//! Checks of a budget against its search space, made when a study starts or is submitted,
//! before any slow work (the base model's training, VBMF ranks, trials): the space is
//! written for the budget's model, its cost target is within the space's reach, and the
//! files the search writes name none of its inputs.

use super::anchored::cheapest_cost;
use super::problem::{Problem, Target, check_reach};
use super::space::SpaceFile;
use crate::budget::Budget;
use crate::compress::decompose::RankRecommendation;
use crate::graph::cost::count;
use crate::graph::{Graph, Op};
use crate::outpath::same_file;
use crate::{Error, Result};
use std::path::Path;

/// Checks `space_file` (the budget's `search.space`) against `budget`.
pub fn check_space(budget: &Budget, space_file: &SpaceFile) -> Result<()> {
    let base = budget.base_network()?;
    let file = budget.search.space.display().to_string();
    space_file.check_arch(&budget.model.arch, &file)?;
    // VBMF ranks need the base weights, which may not exist yet: every VBMF rank at its
    // lowest (1) gives the cheapest model any weights could give.
    let lowest = space_file
        .needs_vbmf()
        .then(|| lowest_vbmf_ranks(&base.graph));
    let base_cost = count(&base.graph);
    let target = Target::from_objective(&base_cost, &budget.objective);
    let reach = match &space_file.anchored {
        Some(section) => {
            let calibration = budget.final_stage.control_calibration;
            let lowest = lowest.as_deref().unwrap_or_default();
            let c = cheapest_cost(section, &base.graph, lowest, calibration, &file)?;
            crate::search::anchored::check_target(&target, &file)?;
            check_reach(&target, &c, &base_cost, &budget.objective, &file)
        }
        None => {
            let space = space_file.resolve(&base.graph, lowest.as_deref(), &file)?;
            Problem::new(base.clone(), space, target).check_reachable(&budget.objective, &file)
        }
    };
    reach.map_err(|m| Error::BadInput(format!("study {}: {m}", budget.study.name)))?;
    if budget.search.repair > 0 && base.plan.is_none() {
        return Err(Error::BadInput(format!(
            "search.repair = {}: the least-squares repair works on VGG plans only; set it to 0 for {}",
            budget.search.repair, budget.model.arch
        )));
    }
    // The gate's evidence names the base weights: it is checked in full when they
    // exist, and for being there before they are trained.
    if let Some(path) = &budget.proxy.gate_evidence {
        if budget.model.weights.exists() {
            super::gate::decide(budget)?;
        } else if !path.is_file() {
            return Err(Error::BadInput(format!(
                "proxy.gate_evidence = {}: no such file",
                path.display()
            )));
        }
    }
    check_warm_configs(budget)?;
    check_outputs(budget)
}

/// Every `search.warm_configs` file reads as a layer config, for a strategy that
/// proposes warm starts.
fn check_warm_configs(budget: &Budget) -> Result<()> {
    if budget.search.warm_configs.is_empty() {
        return Ok(());
    }
    if budget.search.strategy == crate::budget::StrategyName::Random {
        return Err(Error::BadInput(
            "search.warm_configs: the random strategy proposes no warm starts; use evolution or bayes".into(),
        ));
    }
    for path in &budget.search.warm_configs {
        crate::config::LayerConfig::load(path)
            .map_err(|e| Error::BadInput(format!("search.warm_configs: {e}")))?;
    }
    Ok(())
}

/// Rank 1 for both sides of every conv a space may decompose.
fn lowest_vbmf_ranks(base: &Graph) -> Vec<RankRecommendation> {
    base.nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Conv(c) if c.in_channels > 3 && c.kernel > 1 => Some(RankRecommendation {
                layer: n.name.clone(),
                full: [c.in_channels, c.out_channels],
                vbmf: [1, 1],
                chosen: [1, 1],
            }),
            _ => None,
        })
        .collect()
}

/// Refuses a budget whose inputs (base weights, space, data) are files the search writes
/// beside its store: the winner's config `NAME.best.json`, the re-trained weights
/// (`NAME-trialN-seedS.safetensors`, `NAME-control-seedS.safetensors`) and their checkpoints
/// (`.ckpt`).
fn check_outputs(budget: &Budget) -> Result<()> {
    let name = &budget.study.name;
    let best = budget.output_path(&format!("{name}.best.json"));
    let folder = best.parent().unwrap_or(Path::new("."));
    let mut inputs = vec![
        ("model.weights", budget.model.weights.clone()),
        ("search.space", budget.search.space.clone()),
    ];
    for split in [crate::data::Split::Train, crate::data::Split::Test] {
        let files = budget.source().files(split);
        inputs.extend(files.into_iter().flatten().map(|f| ("data.dir", f)));
    }
    for (key, input) in &inputs {
        let trial_file = input
            .file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| is_trial_output(f, name));
        let beside = input.parent().is_some_and(|d| {
            let d = if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            };
            same_file(d, folder)
        });
        let written = same_file(input, &best) || (trial_file && beside);
        if written {
            return Err(Error::BadInput(format!(
                "study {name}: {key} = {}: the search writes a file of that name beside its store; rename the file or give the study another study.name",
                input.display()
            )));
        }
    }
    Ok(())
}

/// Whether `file` is one the final stage writes: `NAME-trialN-seedS` or
/// `NAME-control-seedS` (and `NAME-trialN`, the name before paired seeds), as
/// `.safetensors` or `.ckpt`.
fn is_trial_output(file: &str, name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((stem, ext)) = file.rsplit_once('.') else {
        return false;
    };
    let Some(rest) = stem.strip_prefix(name) else {
        return false;
    };
    let subject = match rest.rsplit_once("-seed") {
        Some((subject, seed)) if digits(seed) => subject,
        _ => rest,
    };
    let known = subject == "-control" || subject.strip_prefix("-trial").is_some_and(digits);
    known && matches!(ext, "safetensors" | "ckpt")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Inline tables: the one-line form of each section.
    const BUDGET: &str = r#"
study = { name = "tiny", db = "runs/s.sqlite" }
model = { arch = "cfg_bn:8,M,16,M,32,M", num_classes = 10, weights = "w.safetensors" }
data = { dataset = "cifar100", dir = "data" }
search = { space = "space.toml", strategy = "random" }
objective = { kind = "constrained", target_flops_reduction = 2.0 }
limits = { max_trials = 1 }
"#;

    fn check(target: &str, space: &str) -> Result<()> {
        let text = BUDGET.replace("target_flops_reduction = 2.0", target);
        let budget = Budget::from_toml(&text, "b.toml").unwrap();
        check_space(&budget, &SpaceFile::from_toml(space, "space.toml").unwrap())
    }

    #[test]
    fn a_target_beyond_the_cheapest_point_is_refused_naming_key_and_figure() {
        let prune = "[pruning]\nlayers = \"all\"\nmax = 0.5\nstep = 0.25\n";
        check("target_flops_reduction = 2.0", prune).unwrap();
        let e = check("target_flops_reduction = 50.0", prune)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("study tiny: objective.target_flops_reduction = 50: ")
                && e.contains("out of reach of the search space space.toml")
                && e.contains("reaches 3."),
            "{e}"
        );
        let e = check("target_params_reduction = 50.0", prune)
            .unwrap_err()
            .to_string();
        assert!(e.contains("objective.target_params_reduction = 50"), "{e}");
        // VBMF ranks are not known before the weights are read: the lowest stand in, so
        // a target that some weights could reach passes.
        let vbmf = "[decomposition]\nrank = \"vbmf\"\nmin = -1.0\nmax = 0.0\n";
        check("target_flops_reduction = 3.0", vbmf).unwrap();
        assert!(check("target_flops_reduction = 1000.0", vbmf).is_err());
    }

    #[test]
    fn a_space_of_another_model_is_refused() {
        let space = "arch = \"vgg19_bn\"\n[pruning]\nlayers = \"all\"\n";
        let e = check("target_flops_reduction = 2.0", space)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("space.toml: arch = \"vgg19_bn\"")
                && e.contains("model.arch = \"cfg_bn:8,M,16,M,32,M\""),
            "{e}"
        );
        let same = "arch = \"cfg_bn:8,M,16,M,32,M\"\n[pruning]\nlayers = \"all\"\n";
        check("target_flops_reduction = 2.0", same).unwrap();
    }

    #[test]
    fn trial_outputs_are_recognised() {
        assert!(is_trial_output("tiny-trial3.safetensors", "tiny"));
        assert!(is_trial_output("tiny-trial12.ckpt", "tiny"));
        assert!(is_trial_output("tiny-trial3-seed2.safetensors", "tiny"));
        assert!(is_trial_output("tiny-control-seed100.ckpt", "tiny"));
        assert!(is_trial_output("tiny-control.safetensors", "tiny"));
        assert!(!is_trial_output("tiny-control-seedx.safetensors", "tiny"));
        assert!(!is_trial_output("tiny-trial3-seed.safetensors", "tiny"));
        assert!(!is_trial_output("tiny-trial.safetensors", "tiny"));
        assert!(!is_trial_output("tiny-trial3x.safetensors", "tiny"));
        assert!(!is_trial_output("other-trial3.safetensors", "tiny"));
        assert!(!is_trial_output("tiny-trial3.json", "tiny"));
    }
}
