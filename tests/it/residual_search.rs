//! Search on a residual network: a study of resnet8@0.25 runs end to end (warm starts
//! from VBMF + group SLAMP, trials, final stage against the heuristic's control, export),
//! an anchored space runs on it, and the repair, which works on VGG plans only, is
//! refused with exit code 2.

use crate::search::{FAST_PROXY, Study, edit_budget, export, run, state_count, study, text};
use rankprune::compress::graph_config::config_cost;
use rankprune::config::LayerConfig;
use rankprune::graph::groups::groups;
use rankprune::store::TrialState;

/// The tiny study moved to resnet8@0.25 (4 classes) with the residual space.
fn residual_study(max_trials: usize, extra: &str) -> Study {
    let s = study(max_trials, FAST_PROXY, extra);
    edit_budget(&s, "arch = \"cfg_bn:8,M,16,M\"", "arch = \"resnet8@0.25\"");
    edit_budget(&s, "strategy = \"random\"", "strategy = \"evolution\"");
    std::fs::copy(
        crate::common::repo_path("search_spaces/resnet.toml"),
        s.path("space.toml"),
    )
    .unwrap();
    s
}

#[test]
fn a_residual_networks_study_runs_end_to_end_and_exports_group_ratios() {
    let s = residual_study(4, "[final]\ntop_k = 1\nwarm_starts = 0\nepochs = 1");
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    // Every trial trained and scored (none failed building or training the network).
    let store = s.store();
    let complete = state_count(&store, TrialState::Complete);
    let early = state_count(&store, TrialState::EarlyStopped);
    assert_eq!(complete + early, 4, "{}", text(&o));
    assert!(complete >= 1 && store.final_runs(1).unwrap().len() == 2);
    let base = crate::common::resnet("resnet8@0.25", 4, 32);
    let base_flops = rankprune::graph::cost::count(&base).flops as f64;
    let db = s.db();
    for which in ["--best", "--control"] {
        let json = export(&db, &[which], &s.path("c.json"));
        let config = LayerConfig::from_json(&json.to_string(), which).unwrap();
        // The config applies to the network and meets the target (1.2x fewer FLOPs).
        let cost = config_cost(&base, &config).unwrap();
        assert!(cost.flops as f64 <= base_flops / 1.2, "{which}: {json}");
        // Its ratios name dependency groups of the decomposed network: a stage's
        // stream is one group, named by its first conv.
        let layout = rankprune::compress::graph_tucker::decomposed_layout(
            &base,
            &rankprune::compress::graph_config::ranks(&config),
        )
        .unwrap();
        let names: Vec<String> = groups(&layout).into_iter().map(|g| g.name).collect();
        let ratios = config.pruning.as_ref().map(|p| p.ratios.clone());
        for r in ratios.iter().flat_map(|r| r.keys()) {
            assert!(names.contains(r), "{which}: {r} is no group of {names:?}");
        }
    }
    // The control's ranks are VBMF's at calibration 0, as `recommend decomposition`
    // gives them for the same weights.
    let control = export(&db, &["--control"], &s.path("control.json"));
    let vbmf = s.path("vbmf.json");
    let weights = s.path("runs/base.safetensors");
    let o = run(&[
        "recommend",
        "decomposition",
        "--arch",
        "resnet8@0.25",
        "--num-classes",
        "4",
        "--weights",
        weights.to_str().unwrap(),
        "--calibration",
        "0",
        "--out",
        vbmf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&vbmf).unwrap()).unwrap();
    assert_eq!(
        control["decomposition"]["ranks"], v["decomposition"]["ranks"],
        "{control}"
    );
    // The winner compresses and evaluates through the ordinary commands.
    let best = s.path("best.json");
    export(&db, &["--best"], &best);
    let out = s.path("best.safetensors");
    let o = run(&[
        "compress",
        "--arch",
        "resnet8@0.25",
        "--num-classes",
        "4",
        "--weights",
        weights.to_str().unwrap(),
        "--config",
        best.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // The cheap probes score it: BN recalibration, the CKA and KL against the base (on
    // every BatchNorm's output), a short fine-tune; the repair probe is plan-only.
    let budget = s.budget();
    let (budget, best) = (budget.to_str().unwrap(), best.to_str().unwrap());
    let o = run(&[
        "score",
        budget,
        "--config",
        best,
        "--probes",
        "bn:1,recon:1,ft:2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let score = |probe: &str, name: &str| {
        lines
            .iter()
            .find(|l| l["probe"] == probe)
            .and_then(|l| l["scores"][name].as_f64())
            .unwrap_or_else(|| panic!("{probe} {name}: {lines:?}"))
    };
    assert!((0.0..=1.0).contains(&score("bn:1", "acc")));
    let cka = score("recon:1", "cka");
    assert!(cka > 0.0 && cka <= 1.0 + 1e-9, "{cka}");
    assert!(score("recon:1", "kl") >= -1e-9);
    assert!(score("ft:2", "loss").is_finite());
    let o = run(&["score", budget, "--config", best, "--probes", "repair:1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("works on VGG plans only"), "{}", text(&o));
}

/// An anchored space (the heuristic's knobs per stage) runs on a residual network: its
/// stages are the map sizes, and every trial lands on the target.
#[test]
fn an_anchored_study_runs_on_a_residual_network() {
    let s = residual_study(3, "[final]\ntop_k = 1\nwarm_starts = 0\nepochs = 1");
    std::fs::copy(
        crate::common::repo_path("search_spaces/anchored.toml"),
        s.path("space.toml"),
    )
    .unwrap();
    // Wider, so that SLAMP's steps (a channel of a group) are fine enough to land within
    // 5% of the target; VBMF alone cuts this network's FLOPs about 8.5x: the target lies
    // beyond.
    edit_budget(&s, "resnet8@0.25", "resnet8@0.5");
    edit_budget(
        &s,
        "target_flops_reduction = 1.2",
        "target_flops_reduction = 10",
    );
    let o = run(&["search", s.budget().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let store = s.store();
    let trials = store.trials(1).unwrap();
    assert_eq!(trials.len(), 3);
    let best = export(&s.db(), &["--best"], &s.path("best.json"));
    let knobs = &best["provenance"]["search_space"]["knobs"];
    assert!(knobs.get("calibration.stage2").is_some(), "{best}");
    let base = crate::common::resnet("resnet8@0.5", 4, 32);
    let config = LayerConfig::from_json(&best.to_string(), "best").unwrap();
    let flops = config_cost(&base, &config).unwrap().flops as f64;
    let base_flops = rankprune::graph::cost::count(&base).flops as f64;
    // On the target: at most 1/10 of the base's FLOPs, at least 0.95 of that.
    assert!(
        flops <= base_flops / 10.0 && flops >= 0.95 * base_flops / 10.0,
        "{flops}"
    );
}

#[test]
fn search_repair_on_a_residual_network_exits_2() {
    let s = residual_study(2, "");
    edit_budget(&s, "seed = 1", "seed = 1\nrepair = 2");
    let o = run(&["search", s.budget().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("search.repair = 2: the least-squares repair works on VGG plans only"),
        "{}",
        text(&o)
    );
}
