use super::*;
use crate::arch::{Arch, ArchSpec};
use crate::budget::{Objective, ObjectiveKind, StrategyName};
use crate::compress::decompose::recommend_graph_ranks;
use crate::compress::graph_config::ranks as rank_map;
use crate::compress::graph_tucker::decompose_graph;
use crate::compress::group_prune::recommend_group_ratios;
use crate::config::{Decomposition, Pruning};
use crate::graph::build::of_arch;
use crate::search::heuristic::{heuristic_config, prune_target};
use crate::search::problem::{ON_TARGET, Observation, Problem};
use crate::search::space::{Space, SpaceFile};
use crate::search::strategy;

const REDUCTION: f64 = 3.0;
/// The control's calibration: off the grid's middle, so that the anchor is not level 0
/// or the centre by accident.
const CALIBRATION: f64 = 0.25;

fn section(text: &str) -> AnchoredSection {
    SpaceFile::from_toml(text, "t.toml")
        .unwrap()
        .anchored
        .unwrap()
}

/// Weights whose convs have decaying channel spectra (rank-one terms of falling size
/// plus noise), as trained convs do: VBMF finds ranks between 1 and full, and SLAMP
/// scores differ between layers. Kaiming-random weights give VBMF rank 1 everywhere.
fn structured(base: &Arch) -> Weights {
    with_spectra(Weights::init(base, 5))
}

/// `w` with every conv kernel replaced as [`structured`] says.
fn with_spectra(mut w: Weights) -> Weights {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (name, t) in w.tensors.iter_mut() {
        if t.shape.len() != 4 || !name.ends_with(".weight") {
            continue;
        }
        let [o, i, kh, kw] = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
        let kk = kh * kw;
        let layer_scale = rng.random_range(0.5..2.0);
        let mut g =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let mut data: Vec<f32> = g(o * i * kk).iter().map(|v| 0.05 * v).collect();
        for j in 0..o.min(i) {
            let size = layer_scale * 0.8f32.powi(j as i32);
            let (a, b, k) = (g(o), g(i), g(kk));
            for t in 0..o {
                for s in 0..i {
                    for q in 0..kk {
                        data[(t * i + s) * kk + q] += size * a[t] * b[s] * k[q];
                    }
                }
            }
        }
        t.data = data;
    }
    w
}

fn setup(text: &str) -> (Problem, Weights, Vec<RankRecommendation>) {
    let base = ArchSpec::parse("cfg_bn:16,M,24,24,M,32,32,M")
        .unwrap()
        .build(10);
    let weights = structured(&base);
    let vbmf = recommend_graph_ranks(&of_arch(&base), &weights, 0.0, |_| {}).unwrap();
    let a = Anchored::resolve(
        &section(text),
        &of_arch(&base),
        &weights,
        &vbmf,
        CALIBRATION,
        "t",
    )
    .unwrap();
    let objective = Objective {
        kind: ObjectiveKind::Constrained,
        target_flops_reduction: Some(REDUCTION),
        target_params_reduction: None,
        target_latency_reduction: None,
        latency_batch: 1,
        latency_table: None,
    };
    let target = Target::from_objective(&crate::cost::count(&base), &objective);
    (
        Problem::new(base.into(), Space::anchored(a), target),
        weights,
        vbmf,
    )
}

fn anchored(p: &Problem) -> &Anchored {
    p.space.anchored.as_deref().unwrap()
}

fn model(c: &LayerConfig) -> (Option<Decomposition>, Option<Pruning>) {
    (c.decomposition.clone(), c.pruning.clone())
}

#[test]
fn the_knobs_are_few_and_named_by_stage() {
    let (p, ..) = setup("[anchored]");
    let names: Vec<String> = p.space.knobs.iter().map(knob_name).collect();
    // Stage 1 has no decomposed conv (its one conv sees 3 channels): no calibration.
    assert_eq!(
        names,
        [
            "calibration.stage2",
            "calibration.stage3",
            "scale.stage1",
            "scale.stage2",
            "scale.stage3",
            "scale.tucker_0",
            "scale.tucker_2",
            "cost_exponent"
        ]
    );
    assert_eq!(
        p.space.decomposed,
        ["features.4", "features.7", "features.11", "features.14"]
    );
}

#[test]
fn the_heuristic_point_is_the_simple_flows_config() {
    let (p, weights, vbmf) = setup("[anchored]");
    let a = anchored(&p);
    let point = a.heuristic_point();
    let got = p.config(&point);
    // The simple flow, step by step: VBMF ranks at the calibration, Tucker-2, then SLAMP
    // on the decomposed weights for the study's target at the space's largest ratio.
    let graph = &p.base.graph;
    let recs = recommend_graph_ranks(graph, &weights, CALIBRATION, |_| {}).unwrap();
    let mut ranks = crate::compress::graph_config::empty_config(graph);
    ranks.set_ranks(recs.iter().map(|r| (r.layer.clone(), r.chosen)).collect());
    let (g, w) = decompose_graph(graph, &weights, &rank_map(&ranks)).unwrap();
    let target = prune_target(&p, 1.0).unwrap();
    let ratios = recommend_group_ratios(&g, &w, target, 0.8, &p.base_cost).unwrap();
    assert_eq!(got.decomposition, ranks.decomposition);
    assert_eq!(got.pruning.as_ref().unwrap().ratios, ratios);
    assert!(
        ratios.values().any(|&r| r > 0.0),
        "the target prunes something"
    );
    // The final stage's control is the same config.
    let control = heuristic_config(&p, &weights, &vbmf, CALIBRATION)
        .unwrap()
        .unwrap();
    assert_eq!(model(&control), model(&got));
    // And the warm start begins with it.
    let warm = crate::search::warm::warm_start(&p, &weights, &vbmf).unwrap();
    assert_eq!(warm[0], point);
    assert_eq!(
        warm.len(),
        3,
        "the heuristic and its calibrations one level up and down"
    );
}

#[test]
fn every_proposal_lands_on_the_target() {
    let (p, ..) = setup("[anchored]");
    let max = p.target.max_flops.unwrap();
    for name in [
        StrategyName::Random,
        StrategyName::Evolution,
        StrategyName::Bayes,
    ] {
        let mut s = strategy::make(name, 3, false);
        let mut seen = Vec::new();
        for round in 0..8 {
            let points = s.propose(5, &p);
            assert!(!points.is_empty(), "{name:?} proposes");
            for q in points {
                let c = p.cost(&q);
                // SLAMP's smallest threshold meeting the bound: removing the next
                // filters would undershoot, so the model sits just under the bound (one
                // filter of this net's 16-32 filter convs is up to about 4% of its
                // FLOPs). Points whose ranks alone undershoot are not proposed.
                assert!(c.flops <= max, "{name:?}: {} > {max}", c.flops);
                assert!(
                    c.flops as f64 >= ON_TARGET * max as f64,
                    "{name:?}: {} far under {max}",
                    c.flops
                );
                let acc = 0.5 + 0.01 * (round as f64) - 1e-3 * seen.len() as f64;
                s.observe(&Observation {
                    point: q.clone(),
                    acc: Some(acc),
                    flops: c.flops,
                    params: c.params,
                });
                seen.push(q);
            }
        }
        assert!(seen.len() >= 30, "{name:?}: {} proposals", seen.len());
    }
}

#[test]
fn a_config_names_its_point() {
    let (p, ..) = setup("[anchored]");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    for _ in 0..20 {
        let q = p.space.random_point(&mut rng);
        let c = p.config(&q);
        // Stored as JSON and read back (a resumed study), the config gives its point, or
        // the first point of the same model.
        let back = LayerConfig::from_json(&c.to_json(), "t").unwrap();
        let r = p.point_of(&back).unwrap();
        assert_eq!(model(&p.config(&r)), model(&c));
    }
    let h = anchored(&p).heuristic_point();
    let c = p.config(&h);
    assert_eq!(p.point_of(&c).unwrap(), h);
    assert!(p.point_of(&LayerConfig::for_arch(plan(&p))).is_err());
}

#[test]
fn a_stored_config_is_its_point_only_while_it_builds_the_same_model() {
    let (p, ..) = setup("[anchored]");
    let h = anchored(&p).heuristic_point();
    let c = p.config(&h);
    // As `export` writes it: the trial's provenance nested under `search_space`.
    let mut exported = c.clone();
    exported.provenance = Some(serde_json::json!({"study": "s", "search_space": c.provenance}));
    assert_eq!(p.point_of(&exported), Ok(h.clone()));
    // The same knobs at another target build another model: not that point any more.
    let mut other = p.clone();
    other.target.max_flops = other.target.max_flops.map(|m| m * 9 / 10);
    let e = other.point_of(&c).unwrap_err();
    assert!(e.contains("another model"), "{e}");
}

#[test]
fn the_scales_move_pruning_between_stages() {
    let (p, ..) = setup("[anchored]");
    let h = anchored(&p).heuristic_point();
    let i = p
        .space
        .knobs
        .iter()
        .position(|k| knob_name(k) == "scale.stage3")
        .unwrap();
    let stage3 = |q: &[usize]| -> f64 {
        let c = p.config(q);
        let r = c.pruning.unwrap().ratios;
        r.iter()
            .filter(|(n, _)| n.starts_with("features.11") || n.starts_with("features.14"))
            .map(|(_, v)| v)
            .sum()
    };
    let (mut up, mut down) = (h.clone(), h.clone());
    up[i] = p.space.knobs[i].levels - 1;
    down[i] = 0;
    // Higher scores keep more filters of stage 3; lower ones remove more.
    assert!(
        stage3(&up) < stage3(&h),
        "{} !< {}",
        stage3(&up),
        stage3(&h)
    );
    assert!(
        stage3(&down) > stage3(&h),
        "{} !> {}",
        stage3(&down),
        stage3(&h)
    );
}

#[test]
fn bad_sections_are_refused_with_their_key() {
    let base = ArchSpec::parse("cfg_bn:16,M,24,24,M").unwrap().build(10);
    let err = |text: &str| resolve_knobs(&section(text), &of_arch(&base), 0.0).unwrap_err();
    let e = err("[anchored]\ncalibration = { min = 0.1, max = 0.9, step = 0.2 }");
    assert!(
        e.contains("anchored.calibration") && e.contains("misses 0"),
        "{e}"
    );
    let e = err("[anchored]\nstage_scale = { min = 0.5, max = 2.0, step = 0.5 }");
    assert!(e.contains("anchored.stage_scale"), "{e}");
    let e = err("[anchored]\nmax_ratio = 1.0");
    assert!(e.contains("anchored.max_ratio = 1"), "{e}");
    let e = err("[anchored]\nlayers = [\"features.9\"]");
    assert!(
        e.contains("anchored.layers") && e.contains("features.9"),
        "{e}"
    );
    let e = SpaceFile::from_toml("[anchored]\n[pruning]\nmax = 0.5", "t.toml").unwrap_err();
    assert!(e.message.contains("one kind of space"), "{e}");
    let e = SpaceFile::from_toml("[anchored]\nstep = 2", "t.toml").unwrap_err();
    assert!(e.message.contains("step"), "{e}");
    let t = Target::default();
    let e = check_target(&t, "a.toml").unwrap_err().to_string();
    assert!(e.contains("objective.target_flops_reduction"), "{e}");
}

#[test]
fn the_cheapest_model_bounds_every_point() {
    let (p, weights, _) = setup("[anchored]");
    let lowest: Vec<RankRecommendation> =
        recommend_graph_ranks(&p.base.graph, &weights, 0.0, |_| {})
            .unwrap()
            .into_iter()
            .map(|r| RankRecommendation { vbmf: [1, 1], ..r })
            .collect();
    let c = cheapest_cost(
        &section("[anchored]"),
        &p.base.graph,
        &lowest,
        CALIBRATION,
        "t",
    )
    .unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(2);
    for _ in 0..10 {
        let q = p.space.random_point(&mut rng);
        assert!(p.cost(&q).flops >= c.flops);
    }
}

fn plan(p: &Problem) -> &Arch {
    p.base.plan.as_ref().expect("a VGG plan")
}

/// On a residual network the anchored space's stages are the map sizes, a stream group
/// gets its stage's scale, and the heuristic's own point is the simple flow's config:
/// VBMF ranks at the control's calibration, then group SLAMP on the decomposed weights.
#[test]
fn a_residual_networks_heuristic_point_is_its_simple_flow() {
    use crate::compress::decompose::recommend_graph_ranks;
    use crate::compress::graph_config::ranks;
    use crate::compress::graph_tucker::decompose_graph;
    use crate::compress::group_prune::recommend_group_ratios;
    use crate::graph::build::ResNetSpec;
    let graph = ResNetSpec::parse("resnet8@0.5")
        .unwrap()
        .unwrap()
        .build(10, 32)
        .unwrap();
    let weights = with_spectra(crate::model::GraphNet::init_weights(&graph, 5));
    let vbmf = recommend_graph_ranks(&graph, &weights, 0.0, |_| {}).unwrap();
    let a = Anchored::resolve(
        &section("[anchored]"),
        &graph,
        &weights,
        &vbmf,
        CALIBRATION,
        "t",
    )
    .unwrap();
    let names: Vec<String> = a.knobs.iter().map(knob_name).collect();
    for s in 1..=3 {
        assert!(
            names.contains(&format!("calibration.stage{s}")),
            "{names:?}"
        );
        assert!(names.contains(&format!("scale.stage{s}")), "{names:?}");
    }
    let objective = Objective {
        kind: ObjectiveKind::Constrained,
        target_flops_reduction: Some(REDUCTION),
        target_params_reduction: None,
        target_latency_reduction: None,
        latency_batch: 1,
        latency_table: None,
    };
    let target = Target::from_objective(&crate::graph::cost::count(&graph), &objective);
    let network = crate::network::Network {
        graph: graph.clone(),
        plan: None,
    };
    let p = Problem::new(network, Space::anchored(a), target);
    let got = p.config(&anchored(&p).heuristic_point());
    let recs = recommend_graph_ranks(&graph, &weights, CALIBRATION, |_| {}).unwrap();
    let want: IndexMap<String, [usize; 2]> =
        recs.iter().map(|r| (r.layer.clone(), r.chosen)).collect();
    assert_eq!(got.decomposition.as_ref().unwrap().ranks, want);
    let (g, w) = decompose_graph(&graph, &weights, &ranks(&got)).unwrap();
    let t = prune_target(&p, 1.0).unwrap();
    let ratios = recommend_group_ratios(&g, &w, t, 0.8, &p.base_cost).unwrap();
    assert_eq!(got.pruning.as_ref().unwrap().ratios, ratios);
    // The first stage's stream is one group, named by the stem.
    assert!(
        ratios.contains_key("conv1") && ratios.values().any(|&r| r > 0.0),
        "{ratios:?}"
    );
    assert!(p.feasible(&anchored(&p).heuristic_point()));
}
