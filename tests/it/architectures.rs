//! Reference counts, and every architecture form built as a burn model.

use crate::common::{assert_counter_matches_model, reference_config, vgg19_bn};
use burn::tensor::{Device, Tensor};
use rankprune::cost;
use rankprune::model::Vgg;
use rankprune::weights::Weights;

#[test]
fn reference_config_counts() {
    let base = vgg19_bn();
    assert_eq!(cost::count(&base).params, 20_086_692);
    assert_eq!(format!("{:.2}", cost::count(&base).mflops()), "796.79");

    let full = reference_config();
    let mut fd_only = full.clone();
    fd_only.pruning = None;
    let fd = fd_only.apply(&base, "ref").unwrap();
    assert_eq!(format!("{:.2}", cost::count(&fd).mparams()), "2.67");
    let pruned = full.apply(&base, "ref").unwrap();
    assert_eq!(format!("{:.2}", cost::count(&pruned).mparams()), "0.66");
    // Spot checks by hand: features.3 is 64 -> [33, 39] -> 64; tucker_0 keeps 33 - floor(16.5) = 17.
    let c = |name: &str| pruned.conv(pruned.find_conv(name).unwrap()).clone();
    assert_eq!(c("features.3_tucker_0").out_channels, 17);
    assert_eq!(c("features.3_tucker_1").in_channels, 17);
    assert_eq!(c("features.3_tucker_0").in_channels, 32); // features.0 keeps 64 - 32
    assert_eq!(c("features.3_tucker_1").out_channels, 39 - 11);
    // features.49_tucker_2 keeps 512 - floor(153.6) = 359 channels of 1x1: classifier in 359.
    assert_eq!(pruned.classifier().in_features, 359);
}

fn check_model(arch: &rankprune::arch::Arch, device: &Device) {
    let model = Vgg::init(arch, 3, device);
    let c = cost::count(arch);
    assert_counter_matches_model(&model, arch);
    let stored: usize = model
        .to_weights()
        .tensors
        .values()
        .map(|t| t.data.len())
        .sum();
    assert_eq!(4 * stored as u64, c.size_bytes);
    let y = model.forward(Tensor::ones([2, 3, 32, 32], device));
    assert_eq!(y.dims(), [2, 100]);
    let v = y.into_data().try_to_vec::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn original_decomposed_and_pruned_models_build_and_match_the_counter() {
    let device = Device::flex();
    let base = vgg19_bn();
    let full = reference_config();
    let mut fd_only = full.clone();
    fd_only.pruning = None;
    for arch in [
        base.clone(),
        fd_only.apply(&base, "ref").unwrap(),
        full.apply(&base, "ref").unwrap(),
    ] {
        check_model(&arch, &device);
    }
}

#[test]
fn safetensors_file_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let base = vgg19_bn();
    let arch = reference_config().apply(&base, "ref").unwrap();
    let device = Device::flex();
    let model = Vgg::init(&arch, 11, &device);
    let w = model.to_weights();
    let path = dir.path().join("m.safetensors");
    w.save_safetensors(&path).unwrap();
    let back = Weights::load(&path).unwrap();
    assert_eq!(
        back.tensors.keys().collect::<Vec<_>>(),
        w.tensors.keys().collect::<Vec<_>>()
    );
    for (k, t) in &w.tensors {
        let b = &back.tensors[k];
        assert_eq!(b.shape, t.shape, "{k}");
        let same = t
            .data
            .iter()
            .zip(&b.data)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{k} differs after the round trip");
    }
    let reloaded = Vgg::from_weights(&arch, back, "m", &device).unwrap();
    assert_eq!(reloaded.to_weights(), w);
}
