//! Whole-model Tucker-2 decomposition against independent answers: at full ranks the
//! decomposed network computes the same function; at any ranks its weights fit the
//! layout the config describes (the VGG plan's own, on a plan) and the cost counter's
//! parameter count.

use crate::common::{assert_graph_counter_matches_model, random_weights};

use burn::tensor::{Device, Distribution, Tensor};
use rankprune::arch::ArchSpec;
use rankprune::compress::decompose::{TuckerCache, recommend_graph_ranks};
use rankprune::compress::graph_config::{empty_config, ranks};
use rankprune::compress::graph_tucker::decompose_graph_with;
use rankprune::config::LayerConfig;
use rankprune::graph::build::of_arch;
use rankprune::model::GraphNet;

fn logits(model: &GraphNet, x: Tensor<4>) -> Vec<f32> {
    model.forward(x).into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn full_rank_decomposition_computes_the_same_function() {
    let device = Device::flex();
    let base = ArchSpec::parse("cfg_bn:8,M,16,16,M").unwrap().build(5);
    let names = base.layer_names();
    assert_eq!(names, ["features.0", "features.4", "features.7"]);
    let w = random_weights(&base, 3);
    let json = r#"{"decomposition": {"method": "tucker2", "ranks": {"features.4": [8, 16], "features.7": [16, 16]}}}"#;
    let config = LayerConfig::from_json(json, "full").unwrap();
    let graph = of_arch(&base);
    let (g, dw, report) = decompose_graph_with(&graph, &w, &ranks(&config), None, |_| {}).unwrap();
    assert_eq!(report.len(), 2);
    assert!(report.iter().all(|l| l.rel_error < 1e-6), "{report:?}");

    let original = GraphNet::from_weights(&graph, w, "orig", &device).unwrap();
    let decomposed = GraphNet::from_weights(&g, dw, "dec", &device).unwrap();
    let x = Tensor::<4>::random([4, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let (a, b) = (logits(&original, x.clone()), logits(&decomposed, x));
    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(scale > 0.0);
    assert!(diff / scale < 1e-4, "max |diff| {diff} vs scale {scale}");
}

#[test]
fn decomposed_model_matches_the_counter_and_keeps_the_bias_on_tucker_2() {
    let device = Device::flex();
    let base = ArchSpec::parse("vgg11_bn@0.125").unwrap().build(10);
    let w = random_weights(&base, 5);
    let graph = of_arch(&base);
    let recs = recommend_graph_ranks(&graph, &w, 0.5, |_| {}).unwrap();
    // features.0 (3 input channels) is skipped; every other conv is recommended.
    assert_eq!(recs.len(), base.layer_names().len() - 1);
    assert!(recs.iter().all(|r| r.layer != "features.0"));
    let mut config = empty_config(&graph);
    config.set_ranks(recs.iter().map(|r| (r.layer.clone(), r.chosen)).collect());
    let (g, dw, _) = decompose_graph_with(&graph, &w, &ranks(&config), None, |_| {}).unwrap();
    // The plan's own decomposition, built by another path (the unit list).
    assert_eq!(g, of_arch(&config.apply(&base, "vbmf").unwrap()));
    let name = &recs[0].layer;
    assert_eq!(
        dw.get(&format!("{name}_tucker_2.bias")),
        w.get(&format!("{name}.bias"))
    );
    assert!(dw.get(&format!("{name}.weight")).is_none());
    let model = GraphNet::from_weights(&g, dw, "dec", &device).unwrap();
    assert_graph_counter_matches_model(&model);
    let y = model.forward(Tensor::zeros([1, 3, 32, 32], &device));
    assert_eq!(y.dims(), [1, 10]);
}

#[test]
fn calibration_moves_between_vbmf_and_full_ranks() {
    let base = ArchSpec::parse("cfg_bn:4,8,M").unwrap().build(3);
    let w = random_weights(&base, 9);
    let graph = of_arch(&base);
    let at = |c: f64| recommend_graph_ranks(&graph, &w, c, |_| {}).unwrap();
    let (zero, one, minus) = (at(0.0), at(1.0), at(-1.0));
    assert_eq!(zero[0].chosen, zero[0].vbmf);
    assert_eq!(one[0].chosen, one[0].full);
    assert_eq!(minus[0].chosen, [1, 1]);
    assert!(recommend_graph_ranks(&graph, &w, 1.5, |_| {}).is_err());
}

#[test]
fn cached_decomposition_equals_a_fresh_one_and_respects_its_memory_limit() {
    let base = ArchSpec::parse("cfg_bn:8,M,16,16,M").unwrap().build(5);
    let graph = of_arch(&base);
    let w = random_weights(&base, 7);
    let config = |a: usize, b: usize| {
        let json = format!(
            r#"{{"decomposition": {{"method": "tucker2", "ranks": {{"features.4": [{a}, 5], "features.7": [{b}, 6]}}}}}}"#
        );
        ranks(&LayerConfig::from_json(&json, "c").unwrap())
    };
    let run = |r, cache| decompose_graph_with(&graph, &w, &r, cache, |_| {}).unwrap();
    let cache = TuckerCache::new(1 << 20);
    let fresh = run(config(4, 9), None);
    let first = run(config(4, 9), Some(&cache));
    assert_eq!(cache.stats(), (0, 2));
    // features.4 at [4, 5] comes from the cache; features.7 at [10, 6] is new.
    let second = run(config(4, 10), Some(&cache));
    assert_eq!(cache.stats(), (1, 3));
    let again = run(config(4, 9), Some(&cache));
    assert_eq!(cache.stats(), (3, 3));
    assert_eq!(first.1, fresh.1);
    assert_eq!(again.1, fresh.1);
    assert_eq!(again.2, fresh.2);
    let unrelated = run(config(4, 10), None);
    assert_eq!(second.1, unrelated.1);

    // A cache too small for two layers keeps only the newest entries.
    let bytes = |n: &str| -> usize {
        (0..3)
            .map(|i| {
                4 * fresh
                    .1
                    .get(&format!("{n}_tucker_{i}.weight"))
                    .unwrap()
                    .data
                    .len()
            })
            .sum()
    };
    let small = TuckerCache::new(bytes("features.7").max(bytes("features.4")));
    run(config(4, 9), Some(&small));
    run(config(4, 9), Some(&small));
    // features.4 was evicted by features.7, which then was evicted by features.4 again.
    assert_eq!(small.stats(), (0, 4));
}
