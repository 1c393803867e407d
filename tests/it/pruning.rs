//! Filter pruning of VGG plans' graphs against masking: the physically smaller model
//! computes exactly what the original computes with the removed filters' outputs forced
//! to zero (the mask built from the plan's own unit list); SLAMP's ratios meet their
//! targets as the plan's own counter counts them.

use crate::common::{assert_graph_counter_matches_model, random_weights};

use crate::common::{reference_config, vgg19_bn};
use burn::tensor::{Device, Distribution, Tensor};
use rankprune::arch::{Arch, ArchSpec};
use rankprune::compress::graph_config::ratios;
use rankprune::compress::group_prune::{prune_groups, recommend_group_ratios};
use rankprune::compress::prune::{filter_norms, kept_indices};
use rankprune::compress::slamp::PruneTarget;
use rankprune::config::{LayerConfig, kept_filters};
use rankprune::cost;
use rankprune::graph::build::of_arch;
use rankprune::model::GraphNet;
use rankprune::weights::Weights;

/// SLAMP ratios for a target against `base` itself (nothing decomposed first).
fn slamp(
    base: &Arch,
    w: &Weights,
    target: PruneTarget,
    max_ratio: f64,
) -> rankprune::Result<indexmap::IndexMap<String, f64>> {
    recommend_group_ratios(&of_arch(base), w, target, max_ratio, &cost::count(base))
}

/// Zeroes the removed filters' weights and bias, and the gamma and beta of the BN after
/// them: each removed channel is then exactly 0 wherever it is read.
fn masked(arch: &Arch, weights: &Weights, config: &LayerConfig) -> Weights {
    let mut w = weights.clone();
    for (name, &ratio) in &config.pruning.as_ref().unwrap().ratios {
        let pos = arch.find_conv(name).unwrap();
        let t = &weights.tensors[&format!("{name}.weight")];
        let n = t.shape[0];
        let keep = kept_indices(&filter_norms(t), kept_filters(n, ratio));
        let removed: Vec<usize> = (0..n).filter(|i| !keep.contains(i)).collect();
        let per = t.data.len() / n;
        let wt = w.tensors.get_mut(&format!("{name}.weight")).unwrap();
        for &r in &removed {
            wt.data[r * per..(r + 1) * per].fill(0.0);
        }
        let mut zero_rows = |key: String| {
            if let Some(b) = w.tensors.get_mut(&key) {
                for &r in &removed {
                    b.data[r] = 0.0;
                }
            }
        };
        zero_rows(format!("{name}.bias"));
        if let Some(bn) = arch.bn_after(pos) {
            zero_rows(format!("{bn}.weight"));
            zero_rows(format!("{bn}.bias"));
        }
    }
    w
}

fn assert_pruned_equals_masked(base: &Arch, json: &str, seed: u64) {
    let device = Device::flex();
    let config = LayerConfig::from_json(json, "inline").unwrap();
    let ranks_only = LayerConfig {
        pruning: None,
        ..config.clone()
    };
    let arch = ranks_only.apply(base, "inline").unwrap();
    let w = random_weights(&arch, seed);
    let (pruned_graph, pruned_w) = prune_groups(&of_arch(&arch), &w, &ratios(&config)).unwrap();
    // The layout the plan's own config application gives.
    assert_eq!(
        pruned_graph,
        of_arch(&config.apply(base, "inline").unwrap())
    );
    assert!(cost::count(&config.apply(base, "inline").unwrap()).params < cost::count(&arch).params);

    let masked = masked(&arch, &w, &config);
    let reference = GraphNet::from_weights(&of_arch(&arch), masked, "masked", &device).unwrap();
    let pruned = GraphNet::from_weights(&pruned_graph, pruned_w, "pruned", &device).unwrap();
    let x = Tensor::<4>::random([3, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let a = reference
        .forward(x.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let b = pruned.forward(x).into_data().try_to_vec::<f32>().unwrap();
    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "logits vanish: the check would be vacuous");
    for (p, q) in a.iter().zip(&b) {
        assert!(
            (p - q).abs() <= 1e-4 * scale.max(1.0),
            "masked {a:?} vs pruned {b:?}"
        );
    }
}

#[test]
fn pruned_plain_vgg_equals_masked_original() {
    // Two pools leave 8x8 maps: each classifier input channel owns 64 features.
    let base = ArchSpec::parse("cfg_bn:8,M,16,12,M").unwrap().build(5);
    let json = r#"{"pruning": {"method": "l2_norm", "ratios":
        {"features.0": 0.5, "features.4": 0.25, "features.7": 0.5}}}"#;
    assert_pruned_equals_masked(&base, json, 1);
}

#[test]
fn pruned_vgg_without_bn_equals_masked_original() {
    let base = ArchSpec::parse("cfg:8,M,16,M").unwrap().build(4);
    let json =
        r#"{"pruning": {"method": "l2_norm", "ratios": {"features.0": 0.3, "features.3": 0.6}}}"#;
    assert_pruned_equals_masked(&base, json, 2);
}

#[test]
fn pruned_decomposed_vgg_equals_masked_original() {
    let base = ArchSpec::parse("cfg_bn:8,M,16,12,M").unwrap().build(5);
    let json = r#"{"decomposition": {"method": "tucker2", "ranks": {"features.4": [6, 10], "features.7": [9, 8]}},
        "pruning": {"method": "l2_norm", "ratios": {"features.0": 0.25,
          "features.4_tucker_0": 0.5, "features.4_tucker_1": 0.3, "features.4_tucker_2": 0.25,
          "features.7_tucker_0": 0.4, "features.7_tucker_1": 0.5, "features.7_tucker_2": 0.5}}}"#;
    assert_pruned_equals_masked(&base, json, 3);
}

#[test]
fn reference_config_prunes_a_random_vgg19_bn_to_the_counted_size() {
    let device = Device::flex();
    let base = vgg19_bn();
    let config = reference_config();
    let decomposed = LayerConfig {
        pruning: None,
        ..config.clone()
    }
    .apply(&base, "ref")
    .unwrap();
    let w = Weights::init(&decomposed, 4);
    let (graph, pw) = prune_groups(&of_arch(&decomposed), &w, &ratios(&config)).unwrap();
    let arch = config.apply(&base, "ref").unwrap();
    assert_eq!(graph, of_arch(&arch));
    let stored: usize = pw
        .tensors
        .iter()
        .filter(|(k, _)| !k.contains("running"))
        .map(|(_, t)| t.data.len())
        .sum();
    assert_eq!(stored as u64, cost::count(&arch).params);
    assert_eq!(format!("{:.2}", stored as f64 / 1e6), "0.66");
    let model = GraphNet::from_weights(&graph, pw, "pruned", &device).unwrap();
    assert_graph_counter_matches_model(&model);
    assert_eq!(
        model.forward(Tensor::zeros([1, 3, 32, 32], &device)).dims(),
        [1, 100]
    );
}

#[test]
fn slamp_meets_each_kind_of_target_and_clamps() {
    let base = ArchSpec::parse("vgg11_bn@0.125").unwrap().build(10);
    let w = random_weights(&base, 7);
    let base_cost = cost::count(&base);
    let total: usize = base.convs().map(|c| c.out_channels).sum();
    let apply = |ratios: &indexmap::IndexMap<String, f64>| {
        let mut c = LayerConfig::for_arch(&base);
        c.pruning = Some(rankprune::config::Pruning {
            method: "l2_norm".into(),
            ratios: ratios.clone(),
        });
        c.apply(&base, "slamp").unwrap()
    };
    let r = slamp(&base, &w, PruneTarget::Ratio(0.4), 0.9).unwrap();
    let pruned = apply(&r);
    let kept: usize = pruned.convs().map(|c| c.out_channels).sum();
    assert!((total - kept) as f64 >= 0.4 * total as f64);
    assert!(r.values().all(|&v| v <= 0.9));

    let r = slamp(&base, &w, PruneTarget::FlopsReduction(2.0), 0.9).unwrap();
    assert!(cost::count(&apply(&r)).flops * 2 <= base_cost.flops);
    let r = slamp(&base, &w, PruneTarget::ParamsReduction(3.0), 0.9).unwrap();
    assert!(cost::count(&apply(&r)).params * 3 <= base_cost.params);
    // A lower max ratio cannot reach a huge reduction: a clear error.
    assert!(slamp(&base, &w, PruneTarget::FlopsReduction(50.0), 0.5).is_err());
}

#[test]
fn slamp_flops_target_is_hit_within_one_percent() {
    let base = ArchSpec::parse("vgg16_bn@0.25").unwrap().build(10);
    let w = random_weights(&base, 11);
    let r = slamp(&base, &w, PruneTarget::FlopsReduction(2.0), 0.9).unwrap();
    let mut c = LayerConfig::for_arch(&base);
    c.pruning = Some(rankprune::config::Pruning {
        method: "l2_norm".into(),
        ratios: r,
    });
    let (flops, half) = (
        cost::count(&c.apply(&base, "t").unwrap()).flops as f64,
        cost::count(&base).flops as f64 / 2.0,
    );
    assert!(
        flops <= half && flops >= 0.99 * half,
        "{flops} vs half {half}"
    );
}

#[test]
fn ratio_zero_changes_nothing() {
    let base = ArchSpec::parse("cfg_bn:8,M,16,M").unwrap().build(3);
    let w = random_weights(&base, 12);
    let r = slamp(&base, &w, PruneTarget::Ratio(0.0), 0.9).unwrap();
    assert!(r.values().all(|&v| v == 0.0), "{r:?}");
    let mut c = LayerConfig::for_arch(&base);
    c.pruning = Some(rankprune::config::Pruning {
        method: "l2_norm".into(),
        ratios: r,
    });
    let (graph, pw) = prune_groups(&of_arch(&base), &w, &ratios(&c)).unwrap();
    assert_eq!(graph, of_arch(&base));
    assert_eq!(pw, w);
}

#[test]
fn unreachable_and_invalid_targets_are_clear_errors() {
    let base = ArchSpec::parse("cfg_bn:8,M,16,M").unwrap().build(3);
    let w = random_weights(&base, 13);
    let e = slamp(&base, &w, PruneTarget::FlopsReduction(1000.0), 0.9)
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of reach"), "{e}");
    assert!(slamp(&base, &w, PruneTarget::Ratio(1.0), 0.9).is_err());
    assert!(slamp(&base, &w, PruneTarget::ParamsReduction(0.5), 0.9).is_err());
    assert!(slamp(&base, &w, PruneTarget::Ratio(0.4), 1.0).is_err());
}
