//! Least-squares layer repair (the classifier is never refitted). A candidate that can represent the base model exactly
//! (full-rank Tucker, pruned channels that carried zeros) but whose refitted layers were
//! perturbed must come back to the base model's function; one that cannot must get
//! closer to it, layer by layer.

use crate::common::random_weights;
use burn::tensor::{Device, Tensor, TensorData};
use rankprune::arch::{Arch, ArchSpec};
use rankprune::compress::compress_model;
use rankprune::compress::prune::{filter_norms, kept_indices};
use rankprune::config::{LayerConfig, kept_filters};
use rankprune::data::batches::Batch;
use rankprune::graph::build::of_arch;
use rankprune::model::{GraphNet, Vgg};
use rankprune::train::recalibrate::pooled_bn_stats;
use rankprune::train::repair::repair;
use rankprune::weights::Weights;

fn noise(i: usize, seed: u64) -> f32 {
    // A cheap deterministic pseudo-normal-ish value in [-1, 1].
    let x = ((i as f64 + 1.0) * 12.9898 + seed as f64 * 78.233).sin() * 43758.5453;
    (2.0 * (x - x.floor()) - 1.0) as f32
}

fn batches(count: usize, size: usize, seed: u64) -> Vec<Batch> {
    (0..count)
        .map(|b| Batch {
            images: (0..size * 3 * 32 * 32)
                .map(|i| noise(i, seed * 1000 + b as u64))
                .collect(),
            labels: vec![0; size],
            side: 32,
        })
        .collect()
}

fn logits(arch: &Arch, w: &Weights, x: &Batch) -> Vec<f32> {
    let device = Device::flex();
    let m = Vgg::from_weights(arch, w.clone(), "test", &device).unwrap();
    let x = Tensor::<4>::from_data(
        TensorData::new(x.images.clone(), [x.len(), 3, 32, 32]),
        &device,
    );
    m.forward(x).into_data().try_to_vec::<f32>().unwrap()
}

/// max |a - b| / max |b|.
fn rel_gap(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()))
        / scale
}

fn perturb(w: &mut Weights, key: &str, seed: u64) {
    let t = w.tensors.get_mut(key).unwrap();
    let scale = t.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, v) in t.data.iter_mut().enumerate() {
        *v += 0.5 * scale * noise(i, seed);
    }
}

/// Base weights whose channels that `config` prunes from `features.0` are exactly zero
/// after their BN and ReLU (zero filter, bias, gamma and beta).
fn base_with_dead_channels(base: &Arch, config: &LayerConfig) -> Weights {
    let mut w = random_weights(base, 5);
    let ratio = config.pruning.as_ref().unwrap().ratios["features.0"];
    let t = &w.tensors["features.0.weight"];
    let n = t.shape[0];
    let keep = kept_indices(&filter_norms(t), kept_filters(n, ratio));
    let per = t.data.len() / n;
    for r in (0..n).filter(|r| !keep.contains(r)) {
        w.tensors.get_mut("features.0.weight").unwrap().data[r * per..(r + 1) * per].fill(0.0);
        for key in ["features.0.bias", "features.1.weight", "features.1.bias"] {
            w.tensors.get_mut(key).unwrap().data[r] = 0.0;
        }
    }
    w
}

#[test]
fn repair_restores_a_perturbed_candidate_that_can_match_the_base() {
    // Four pools: the classifier reads 2x2 maps of 10 channels (40 features).
    let base = ArchSpec::parse("cfg_bn:8,M,16,M,12,M,10,M")
        .unwrap()
        .build(5);
    let config = LayerConfig::from_json(
        r#"{"decomposition": {"method": "tucker2", "ranks": {"features.4": [8, 16]}},
            "pruning": {"method": "l2_norm", "ratios": {"features.0": 0.25}}}"#,
        "inline",
    )
    .unwrap();
    let bw = base_with_dead_channels(&base, &config);
    let c = compress_model(&base, &bw, &config, "inline", None).unwrap();
    assert_eq!(c.kept["features.0"].len(), 6);
    let probe = &batches(1, 4, 99)[0];
    let want = logits(&base, &bw, probe);
    assert!(rel_gap(&logits(&c.arch, &c.weights, probe), &want) < 1e-4);
    // Every layer repair refits, perturbed: the pruned conv (whose targets are the base's
    // kept channels), a Tucker unit's last conv, plain convs.
    let mut w = c.weights.clone();
    let refitted = [
        "features.0",
        "features.4_tucker_2",
        "features.8",
        "features.12",
    ];
    for (k, layer) in refitted.iter().enumerate() {
        perturb(&mut w, &format!("{layer}.weight"), k as u64 + 1);
    }
    let before = rel_gap(&logits(&c.arch, &w, probe), &want);
    assert!(
        before > 0.1,
        "the perturbation is too small to test: {before}"
    );
    let device = Device::flex();
    let (repaired, refits) = repair(
        &base,
        &bw,
        &c.arch,
        w,
        &c.kept,
        &batches(2, 32, 7),
        0,
        &device,
    )
    .unwrap();
    let layers: Vec<&str> = refits.iter().map(|r| r.layer.as_str()).collect();
    assert_eq!(layers, refitted);
    for r in &refits {
        assert!(r.before > 0.05 && r.after < 1e-2, "{r:?}");
    }
    let after = rel_gap(&logits(&c.arch, &repaired, probe), &want);
    assert!(
        after < 1e-2,
        "logits {after} from the base's after repair, {before} before"
    );
}

#[test]
fn repair_brings_a_low_rank_candidate_closer_unit_by_unit() {
    let base = ArchSpec::parse("cfg_bn:8,M,16,M,12,M").unwrap().build(4);
    let config = LayerConfig::from_json(
        r#"{"decomposition": {"method": "tucker2", "ranks": {"features.4": [3, 4], "features.8": [4, 3]}},
            "pruning": {"method": "l2_norm", "ratios": {"features.0": 0.5}}}"#,
        "inline",
    )
    .unwrap();
    let bw = random_weights(&base, 3);
    let c = compress_model(&base, &bw, &config, "inline", None).unwrap();
    let device = Device::flex();
    let calibration = batches(2, 16, 11);
    let (repaired, refits) = repair(
        &base,
        &bw,
        &c.arch,
        c.weights.clone(),
        &c.kept,
        &calibration,
        0,
        &device,
    )
    .unwrap();
    assert_eq!(refits.len(), 3);
    for r in &refits {
        assert!(r.after < r.before, "{r:?}");
    }
    // Refitted filters keep the norms they had (the BN after them absorbs the scale).
    for key in ["features.4_tucker_2.weight", "features.8_tucker_2.weight"] {
        let norms = |w: &Weights| {
            let t = &w.tensors[key];
            let per = t.data.len() / t.shape[0];
            t.data
                .chunks(per)
                .map(|f| f.iter().map(|v| v * v).sum::<f32>().sqrt())
                .collect::<Vec<_>>()
        };
        let (old, new) = (norms(&c.weights), norms(&repaired));
        assert_ne!(c.weights.tensors[key].data, repaired.tensors[key].data);
        for (a, b) in old.iter().zip(&new) {
            assert!((a - b).abs() <= 1e-4 * a, "{key}: {old:?} vs {new:?}");
        }
    }
    // Each BN's running statistics are restated as those of its input over the
    // calibration images, so training-mode BN (batch statistics) computes nearly what
    // inference does: the statistics a train-mode pass pools over the same images (each
    // batch normalised by its own) match the stored ones.
    let model =
        GraphNet::from_weights(&of_arch(&c.arch), repaired.clone(), "repaired", &device).unwrap();
    let pooled = pooled_bn_stats(&model, &calibration, &device);
    for (i, (mean, var)) in pooled.iter().enumerate() {
        let name = format!("features.{}", [1, 5, 9][i]);
        let stored = |f: &str| repaired.tensors[&format!("{name}.{f}")].data.clone();
        let (m0, v0) = (stored("running_mean"), stored("running_var"));
        for ch in 0..mean.len() {
            let sd = v0[ch].sqrt();
            assert!(
                (mean[ch] - m0[ch]).abs() < 0.05 * sd && (var[ch] / v0[ch] - 1.0).abs() < 0.1,
                "{name}[{ch}]: pooled ({}, {}) vs stored ({}, {})",
                mean[ch],
                var[ch],
                m0[ch],
                v0[ch]
            );
        }
    }
    // Closer on the calibration images and on images it never saw.
    for x in [&calibration[0], &batches(1, 8, 12)[0]] {
        let want = logits(&base, &bw, x);
        let (plain, fixed) = (
            rel_gap(&logits(&c.arch, &c.weights, x), &want),
            rel_gap(&logits(&c.arch, &repaired, x), &want),
        );
        assert!(fixed < plain, "repaired {fixed} vs compressed {plain}");
    }
}
