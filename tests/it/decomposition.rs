//! Whole-model Tucker-2 decomposition against independent answers: at full ranks the
//! decomposed network computes the same function; at any ranks its weights fit the
//! architecture the config describes and the cost counter's parameter count.

use crate::common::{assert_counter_matches_model, random_weights};

use burn::tensor::{Device, Distribution, Tensor};
use rankprune::arch::ArchSpec;
use rankprune::compress::decompose::{TuckerCache, decompose_model, ranks_config, recommend_ranks};
use rankprune::config::LayerConfig;
use rankprune::model::Vgg;

fn logits(model: &Vgg, x: Tensor<4>) -> Vec<f32> {
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
    let (arch, dw, report) = decompose_model(&base, &w, &config, "full", None, |_| {}).unwrap();
    assert!(report.iter().all(|l| l.rel_error < 1e-6), "{report:?}");

    let original = Vgg::from_weights(&base, w, "orig", &device).unwrap();
    let decomposed = Vgg::from_weights(&arch, dw, "dec", &device).unwrap();
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
    let recs = recommend_ranks(&base, &w, 0.5, |_| {}).unwrap();
    // features.0 (3 input channels) is skipped; every other conv is recommended.
    assert_eq!(recs.len(), base.layer_names().len() - 1);
    assert!(recs.iter().all(|r| r.layer != "features.0"));
    let config = ranks_config(&base, &recs);
    let (arch, dw, _) = decompose_model(&base, &w, &config, "vbmf", None, |_| {}).unwrap();
    assert_eq!(arch, config.apply(&base, "vbmf").unwrap());
    let name = &recs[0].layer;
    assert_eq!(
        dw.get(&format!("{name}_tucker_2.bias")),
        w.get(&format!("{name}.bias"))
    );
    assert!(dw.get(&format!("{name}.weight")).is_none());
    let model = Vgg::from_weights(&arch, dw, "dec", &device).unwrap();
    assert_counter_matches_model(&model, &arch);
    let y = model.forward(Tensor::zeros([1, 3, 32, 32], &device));
    assert_eq!(y.dims(), [1, 10]);
}

#[test]
fn calibration_moves_between_vbmf_and_full_ranks() {
    let base = ArchSpec::parse("cfg_bn:4,8,M").unwrap().build(3);
    let w = random_weights(&base, 9);
    let at = |c: f64| recommend_ranks(&base, &w, c, |_| {}).unwrap();
    let (zero, one, minus) = (at(0.0), at(1.0), at(-1.0));
    assert_eq!(zero[0].chosen, zero[0].vbmf);
    assert_eq!(one[0].chosen, one[0].full);
    assert_eq!(minus[0].chosen, [1, 1]);
    assert!(recommend_ranks(&base, &w, 1.5, |_| {}).is_err());
}

#[test]
fn cached_decomposition_equals_a_fresh_one_and_respects_its_memory_limit() {
    let base = ArchSpec::parse("cfg_bn:8,M,16,16,M").unwrap().build(5);
    let w = random_weights(&base, 7);
    let config = |a: usize, b: usize| {
        let json = format!(
            r#"{{"decomposition": {{"method": "tucker2", "ranks": {{"features.4": [{a}, 5], "features.7": [{b}, 6]}}}}}}"#
        );
        LayerConfig::from_json(&json, "c").unwrap()
    };
    let cache = TuckerCache::new(1 << 20);
    let fresh = decompose_model(&base, &w, &config(4, 9), "c", None, |_| {}).unwrap();
    let first = decompose_model(&base, &w, &config(4, 9), "c", Some(&cache), |_| {}).unwrap();
    assert_eq!(cache.stats(), (0, 2));
    // features.4 at [4, 5] comes from the cache; features.7 at [10, 6] is new.
    let second = decompose_model(&base, &w, &config(4, 10), "c", Some(&cache), |_| {}).unwrap();
    assert_eq!(cache.stats(), (1, 3));
    let again = decompose_model(&base, &w, &config(4, 9), "c", Some(&cache), |_| {}).unwrap();
    assert_eq!(cache.stats(), (3, 3));
    assert_eq!(first.1, fresh.1);
    assert_eq!(again.1, fresh.1);
    assert_eq!(again.2, fresh.2);
    let unrelated = decompose_model(&base, &w, &config(4, 10), "c", None, |_| {}).unwrap();
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
    decompose_model(&base, &w, &config(4, 9), "c", Some(&small), |_| {}).unwrap();
    decompose_model(&base, &w, &config(4, 9), "c", Some(&small), |_| {}).unwrap();
    // features.4 was evicted by features.7, which then was evicted by features.4 again.
    assert_eq!(small.stats(), (0, 4));
}
