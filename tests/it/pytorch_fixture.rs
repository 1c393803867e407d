//! Weights saved by PyTorch give PyTorch's logits (fixture made by
//! tests/fixtures/make_torch_fixture.py).

use crate::common::repo_path;
use burn::tensor::{Device, Tensor, TensorData};
use rankprune::arch::ArchSpec;
use rankprune::config::LayerConfig;
use rankprune::model::Vgg;
use rankprune::weights::Weights;

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/torch_logits.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn input(device: &Device) -> Tensor<4> {
    let n = 2 * 3 * 32 * 32;
    let data: Vec<f32> = (0..n).map(|i| (0.1 * i as f64).sin() as f32).collect();
    Tensor::from_data(TensorData::new(data, [2, 3, 32, 32]), device)
}

fn assert_logits(model: &Vgg, want: &serde_json::Value, device: &Device) {
    let got = model
        .forward(input(device))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let want: Vec<f32> = want
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-4,
            "logits differ: got {got:?}, PyTorch printed {want:?}"
        );
    }
}

#[test]
fn plain_state_dict_gives_pytorch_logits() {
    let fx = fixture();
    let device = Device::flex();
    let arch = ArchSpec::parse(fx["arch"].as_str().unwrap())
        .unwrap()
        .build(5);
    let path = repo_path("tests/fixtures/tiny_vgg.pt");
    let w = Weights::load(&path).unwrap();
    let model = Vgg::from_weights(&arch, w, "tiny_vgg.pt", &device).unwrap();
    assert_logits(&model, &fx["plain_logits"], &device);
}

#[test]
fn tucker_checkpoint_under_state_dict_gives_pytorch_logits() {
    let fx = fixture();
    let device = Device::flex();
    let base = ArchSpec::parse(fx["arch"].as_str().unwrap())
        .unwrap()
        .build(5);
    let config = LayerConfig::from_json(
        r#"{"decomposition": {"method": "tucker2", "ranks": {"features.4": [3, 5]}}}"#,
        "inline",
    )
    .unwrap();
    let arch = config.apply(&base, "inline").unwrap();
    let w = Weights::load(&repo_path("tests/fixtures/tiny_vgg_tucker.pt")).unwrap();
    let model = Vgg::from_weights(&arch, w, "tiny_vgg_tucker.pt", &device).unwrap();
    assert_logits(&model, &fx["tucker_logits"], &device);
}
