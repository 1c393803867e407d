//! Pruning residual networks by dependency group: the channels a residual add ties are
//! removed from every member, every BatchNorm on them and every reader, and only there.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use rankprune::compress::group_prune::{group_norms, prune_groups};
use rankprune::compress::prune::{kept_indices, select};
use rankprune::graph::Graph;
use rankprune::graph::groups::groups;
use rankprune::model::GraphNet;
use rankprune::weights::Weights;
use std::collections::BTreeMap;

fn resnet20() -> (Graph, Weights) {
    let g = crate::common::resnet("resnet20@0.5", 4, 16);
    let mut w = GraphNet::init_weights(&g, 7);
    // BN statistics and biases away from identity, so every tensor matters.
    for (k, t) in w.tensors.iter_mut() {
        if k.ends_with("running_mean") || k.ends_with(".bias") {
            for (i, v) in t.data.iter_mut().enumerate() {
                *v = ((i as f32) * 0.37 + k.len() as f32).sin() * 0.2;
            }
        }
    }
    (g, w)
}

fn logits(g: &Graph, w: &Weights, x: &Tensor<4>) -> Vec<f32> {
    let m = GraphNet::from_weights(g, w.clone(), "mem", &Device::flex()).unwrap();
    m.forward(x.clone())
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn ratios_of_zero_are_the_identity() {
    let (g, w) = resnet20();
    let all: BTreeMap<String, f64> = groups(&g).into_iter().map(|x| (x.name, 0.0)).collect();
    let (g2, w2) = prune_groups(&g, &w, &all).unwrap();
    assert_eq!((&g2, &w2), (&g, &w));
    let x = Tensor::<4>::random(
        [2, 3, 16, 16],
        Distribution::Normal(0.0, 1.0),
        &Device::flex(),
    );
    assert_eq!(logits(&g, &w, &x), logits(&g2, &w2, &x));
}

#[test]
fn a_residual_stream_loses_the_same_channels_everywhere_and_only_there() {
    let (g, w) = resnet20();
    let stream = groups(&g).into_iter().find(|x| x.name == "conv1").unwrap();
    // The group norm by its definition, for one channel.
    let norms = group_norms(&g, &w, &stream);
    let by_hand: f64 = [
        "conv1",
        "layer1.0.conv2",
        "layer1.1.conv2",
        "layer1.2.conv2",
    ]
    .iter()
    .map(|m| {
        let t = &w.tensors[&format!("{m}.weight")];
        let per = t.data.len() / t.shape[0];
        t.data[3 * per..4 * per]
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
    })
    .sum::<f64>()
    .sqrt();
    assert!((norms[3] - by_hand).abs() < 1e-9);
    let keep = kept_indices(&norms, 4);
    let ratios = BTreeMap::from([("conv1".to_string(), 0.5)]);
    let (g2, w2) = prune_groups(&g, &w, &ratios).unwrap();
    for (key, t) in &w2.tensors {
        let old = &w.tensors[key];
        let layer = key.rsplit_once('.').unwrap().0;
        let member = [
            "conv1",
            "layer1.0.conv2",
            "layer1.1.conv2",
            "layer1.2.conv2",
        ];
        let bn = ["bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2"];
        let reader = [
            "layer1.0.conv1",
            "layer1.1.conv1",
            "layer1.2.conv1",
            "layer2.0.conv1",
            "layer2.0.downsample.0",
        ];
        let want = if member.contains(&layer) || bn.contains(&layer) {
            select(old, 0, &keep)
        } else if reader.contains(&layer) {
            select(old, 1, &keep)
        } else {
            old.clone()
        };
        assert_eq!(t, &want, "{key}");
    }
    // The pruned model runs, and its parameters are what the counter counts.
    let m = GraphNet::from_weights(&g2, w2, "mem", &Device::flex()).unwrap();
    let running: usize = m
        .bns
        .iter()
        .map(|b| 2 * b.running_mean.value().dims()[0])
        .sum();
    let counted = rankprune::graph::cost::count(&g2).params;
    assert_eq!((m.num_params() - running) as u64, counted);
    assert!(counted < rankprune::graph::cost::count(&g).params);
    let y = m.forward(Tensor::zeros([1, 3, 16, 16], &Device::flex()));
    assert_eq!(y.dims(), [1, 4]);
}

#[test]
fn the_last_stream_shrinks_the_classifier_and_members_are_refused() {
    let (g, w) = resnet20();
    let ratios = BTreeMap::from([("layer3.0.conv2".to_string(), 0.25)]);
    let (g2, _) = prune_groups(&g, &w, &ratios).unwrap();
    let fc = &g2.nodes[g2.find("fc").unwrap()].op;
    assert_eq!(
        fc,
        &rankprune::graph::Op::Linear {
            in_features: 24,
            out_features: 4
        }
    );
    let member = BTreeMap::from([("layer2.1.conv2".to_string(), 0.5)]);
    let e = prune_groups(&g, &w, &member).unwrap_err();
    assert!(
        e.contains("layer2.1.conv2: its channels are tied to group \"layer2.0.conv2\""),
        "{e}"
    );
    let e = prune_groups(&g, &w, &BTreeMap::from([("fc".to_string(), 0.5)])).unwrap_err();
    assert!(e.contains("fc: no conv group"), "{e}");
    let e = prune_groups(&g, &w, &BTreeMap::from([("conv1".to_string(), 1.0)])).unwrap_err();
    assert!(e.contains("ratio 1: allowed [0, 1)"), "{e}");
}

/// Tucker-2 on a residual network: at full ranks the logits stay; at lower ranks the
/// chain's last 1x1 joins its residual group, and group pruning then trims it too.
#[test]
fn decomposed_convs_keep_their_place_in_the_residual_groups() {
    use rankprune::compress::graph_tucker::decompose_graph;
    let (g, w) = resnet20();
    let x = Tensor::<4>::random(
        [2, 3, 16, 16],
        Distribution::Normal(0.0, 1.0),
        &Device::flex(),
    );
    let full = BTreeMap::from([("layer1.0.conv2".to_string(), [8, 8])]);
    let (gf, wf) = decompose_graph(&g, &w, &full).unwrap();
    for (a, b) in logits(&g, &w, &x).iter().zip(logits(&gf, &wf, &x)) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let ranks = BTreeMap::from([
        ("layer1.0.conv2".to_string(), [3, 4]),
        ("layer2.0.downsample.0".to_string(), [2, 5]),
        ("layer3.2.conv1".to_string(), [6, 7]),
    ]);
    let (gd, wd) = decompose_graph(&g, &w, &ranks).unwrap();
    let stream = groups(&gd).into_iter().find(|x| x.name == "conv1").unwrap();
    let members: Vec<&str> = stream
        .members
        .iter()
        .map(|&m| gd.nodes[m].name.as_str())
        .collect();
    assert!(members.contains(&"layer1.0.conv2_tucker_2"), "{members:?}");
    let (gp, wp) = prune_groups(&gd, &wd, &BTreeMap::from([("conv1".to_string(), 0.5)])).unwrap();
    assert_eq!(
        wp.tensors["layer1.0.conv2_tucker_2.weight"].shape,
        [4, 4, 1, 1]
    );
    assert_eq!(
        wp.tensors["layer1.0.conv2_tucker_1.weight"].shape,
        [4, 3, 3, 3]
    );
    let m = GraphNet::from_weights(&gp, wp, "mem", &Device::flex()).unwrap();
    crate::common::assert_graph_counter_matches_model(&m);
    assert_eq!(m.forward(x).dims(), [2, 4]);
    for (bad, want) in [
        ("conv9", "conv9: no such layer"),
        ("bn1", "bn1: not a conv"),
        ("layer1.0.conv1", "ranks [9, 1]: allowed [1..=8, 1..=8]"),
    ] {
        let r = BTreeMap::from([(bad.to_string(), [9, 1])]);
        let e = decompose_graph(&g, &w, &r).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
}

/// A decomposed and group-pruned residual network exported as ONNX: onnxruntime gives
/// its logits (within 1e-4), and the importer reads the file back to the same model.
#[test]
fn compressed_residual_networks_export_to_onnx() {
    use super::onnx_export::{python, write_f32};
    use onnx_protobuf::Message;
    use rankprune::compress::graph_tucker::decompose_graph;
    use rankprune::deploy::onnx::graph_model;
    use rankprune::deploy::onnx_import::import;
    let (g, w) = resnet20();
    let ranks = BTreeMap::from([("layer2.1.conv2".to_string(), [5, 6])]);
    let (g, w) = decompose_graph(&g, &w, &ranks).unwrap();
    let ratios = BTreeMap::from([
        ("conv1".to_string(), 0.25),
        ("layer2.0.conv2".to_string(), 0.5),
        ("layer3.1.conv1".to_string(), 0.5),
    ]);
    let (g, w) = prune_groups(&g, &w, &ratios).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.onnx");
    std::fs::write(&file, graph_model(&g, &w).write_to_bytes().unwrap()).unwrap();
    let x = Tensor::<4>::random(
        [3, 3, 16, 16],
        Distribution::Normal(0.0, 1.0),
        &Device::flex(),
    );
    let ours = logits(&g, &w, &x);
    let (g2, w2) = import(&file).unwrap();
    for (a, b) in ours.iter().zip(logits(&g2, &w2, &x)) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let Some(py) = python() else { return };
    let images: Vec<f32> = x.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let (img, lg) = (dir.path().join("x.f32"), dir.path().join("y.f32"));
    write_f32(&img, &images);
    write_f32(&lg, &ours);
    let o = std::process::Command::new(py)
        .arg(super::common::repo_path("tests/fixtures/onnx_check.py"))
        .arg(&img)
        .args(["3", "3", "16", "16"])
        .arg(&file)
        .arg(&lg)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && report.contains(": ok"),
        "{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// BatchNorms folded into the convs before them give the same logits (in eval mode),
/// residual adds and projections included.
#[test]
fn folding_a_residual_networks_batch_norms_keeps_its_logits() {
    use rankprune::deploy::fold::fold_graph_batch_norms;
    let (g, w) = resnet20();
    let (gf, wf) = fold_graph_batch_norms(&g, w.clone());
    let bns = |g: &Graph| {
        g.nodes
            .iter()
            .filter(|n| matches!(n.op, rankprune::graph::Op::BatchNorm { .. }))
            .count()
    };
    assert_eq!((bns(&g), bns(&gf)), (21, 0));
    assert!(wf.tensors.contains_key("layer2.0.downsample.0.bias"));
    let x = Tensor::<4>::random(
        [2, 3, 16, 16],
        Distribution::Normal(0.0, 1.0),
        &Device::flex(),
    );
    for (a, b) in logits(&g, &w, &x).iter().zip(logits(&gf, &wf, &x)) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

/// Group SLAMP: each channel's score is LAMP's over its group's norms (by definition,
/// computed here from the members' filters), and the recommended ratios are those of
/// the smallest global threshold meeting the target, found here by scanning every
/// threshold in order; the pruned graph meets the target.
#[test]
fn group_slamp_picks_the_smallest_threshold_that_meets_the_target() {
    use rankprune::compress::group_prune::{group_scores, recommend_group_ratios};
    use rankprune::compress::slamp::PruneTarget;
    use rankprune::graph::cost::count;
    let (g, w) = resnet20();
    let scores = group_scores(&g, &w);
    let gs = groups(&g);
    assert_eq!(scores.len(), gs.len());
    // LAMP by its definition: ||c||^2 / sum of ||k||^2 over channels k at least as strong.
    let stream = gs.iter().position(|x| x.name == "conv1").unwrap();
    let norms = group_norms(&g, &w, &gs[stream]);
    for (c, &s) in scores[stream].1.iter().enumerate() {
        let stronger: f64 = norms
            .iter()
            .filter(|&&n| n >= norms[c])
            .map(|n| n * n)
            .sum();
        assert!((s - norms[c] * norms[c] / stronger).abs() < 1e-12);
    }
    let original = count(&g);
    let (target, max_ratio) = (PruneTarget::FlopsReduction(2.0), 0.8);
    let ratios = recommend_group_ratios(&g, &w, target, max_ratio, &original).unwrap();
    let pruned_at = |t: f64| {
        let r: BTreeMap<String, f64> = scores
            .iter()
            .map(|(name, s)| {
                let cap = ((s.len() as f64 * max_ratio + 1e-9).floor() as usize).min(s.len() - 1);
                let k = s.iter().filter(|&&v| v <= t).count().min(cap);
                (name.clone(), k as f64 / s.len() as f64)
            })
            .collect();
        let (pg, _) = prune_groups(&g, &w, &r).unwrap();
        (r, count(&pg))
    };
    let mut all: Vec<f64> = scores.iter().flat_map(|(_, s)| s.clone()).collect();
    all.sort_by(f64::total_cmp);
    let (want, cost) = all
        .iter()
        .map(|&t| pruned_at(t))
        .find(|(_, c)| target.met_by(c, &original))
        .expect("the target is reachable");
    let got: BTreeMap<String, f64> = ratios.into_iter().collect();
    assert_eq!(got, want);
    assert!(cost.flops * 2 <= original.flops);
    assert!(got.values().any(|&r| r > 0.0));
}

/// A config's layout alone (no factorisation, no norms) is the graph applying it to
/// weights gives.
#[test]
fn a_configs_layout_is_the_graph_its_application_gives() {
    use rankprune::compress::graph_config::{apply_config, config_layout};
    use rankprune::config::LayerConfig;
    let (g, w) = resnet20();
    let config = LayerConfig::from_json(
        r#"{"decomposition": {"method": "tucker2", "ranks": {"layer2.0.conv2": [5, 6], "layer1.1.conv1": [3, 2]}},
            "pruning": {"method": "l2_norm", "ratios": {"conv1": 0.5, "layer2.0.conv2_tucker_2": 0.25, "layer3.1.conv1": 0.7}}}"#,
        "mem",
    )
    .unwrap();
    let (applied, _) = apply_config(&g, &w, &config).unwrap();
    assert_eq!(config_layout(&g, &config).unwrap(), applied);
    assert_ne!(applied, g);
}
