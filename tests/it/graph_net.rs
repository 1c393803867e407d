//! The graph model (residual networks): against PyTorch's logits, and its channel-major
//! path against burn's own layers.

use super::common::{repo_path, resnet, stripes, write_cifar100};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rankprune::graph::build::of_arch;
use rankprune::model::GraphNet;
use rankprune::weights::Weights;

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// tests/fixtures/make_resnet_fixture.py: torchvision's resnet18 layout at width 1/32,
/// both stems, loaded from its `.pt` state dicts.
#[test]
fn resnet18_logits_equal_pytorchs() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("tests/fixtures/resnet_logits.json")).unwrap(),
    )
    .unwrap();
    let device = Device::flex();
    for stem in ["cifar", "imagenet"] {
        let side = json[stem]["side"].as_u64().unwrap() as usize;
        let graph = resnet("resnet18@0.03125", 5, side);
        let path = repo_path(&format!("tests/fixtures/resnet18_w32_{stem}.pt"));
        let w = Weights::load(&path).unwrap();
        let model = GraphNet::from_weights(&graph, w, "fixture", &device).unwrap();
        let x = fixture_input(side, &device);
        let want = logits_of(&json, stem);
        for (name, got) in [
            ("channel-major", host(model.forward(x.clone()))),
            ("reference", host(model.forward_reference(x.clone()))),
        ] {
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-4, "{stem} {name}: {got:?} vs {want:?}");
            }
        }
        // Weights of another architecture are refused, naming the tensor.
        let other = resnet("resnet20", 5, side);
        let e = GraphNet::from_weights(&other, Weights::load(&path).unwrap(), "f.pt", &device)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.pt: "), "{e}");
    }
}

#[test]
fn weights_round_trip_through_the_graph_model() {
    let graph = resnet("resnet20@0.25", 3, 32);
    let w = GraphNet::init_weights(&graph, 4);
    let model = GraphNet::from_weights(&graph, w.clone(), "mem", &Device::flex()).unwrap();
    assert_eq!(model.to_weights(), w);
}

/// What one training-mode pass is compared by: the logits `y` of input `x`, the input's
/// and every conv's weight gradient of `sum(y * [1, -2, 0.5])`, and every BN's running
/// variance after the pass.
fn pass_tensors(y: Tensor<2>, x: &Tensor<4>, convs: &[Conv2d], bns: &[BatchNorm]) -> Vec<Vec<f32>> {
    let mix = Tensor::<2>::from_floats([[1.0, -2.0, 0.5]], &y.device());
    let grads = (y.clone() * mix).sum().backward();
    let mut all = vec![host(y.inner()), host(x.grad(&grads).unwrap().flatten(0, 3))];
    for conv in convs {
        all.push(host(conv.weight.val().grad(&grads).unwrap().flatten(0, 3)));
    }
    for bn in bns {
        all.push(host(bn.running_var.value().inner().unsqueeze::<2>()));
    }
    all
}

/// Every value of `ours` within `rel` of the largest of its tensor in `theirs` (plus
/// `abs`).
fn assert_tensors_close(ours: &[Vec<f32>], theirs: &[Vec<f32>], rel: f32, abs: f32, case: &str) {
    assert_eq!(ours.len(), theirs.len());
    for (k, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (p, q) in a.iter().zip(b) {
            assert!(
                (p - q).abs() <= rel * scale + abs,
                "{case} tensor {k}: {p} vs {q}"
            );
        }
    }
}

/// Logits, the input gradient, every conv's weight gradient and the BN running
/// statistics after one training-mode pass: channel-major against burn's layers.
#[test]
fn channel_major_residual_training_matches_burns_layers() {
    let device = Device::flex().autodiff();
    for (text, side) in [("resnet8@0.25", 16), ("resnet18@0.03125", 128)] {
        let graph = resnet(text, 3, side);
        let w = GraphNet::init_weights(&graph, 3);
        let x0 = Tensor::<4>::random([2, 3, side, side], Distribution::Normal(0.0, 1.0), &device);
        let run = |reference: bool| {
            let model = GraphNet::from_weights(&graph, w.clone(), "mem", &device).unwrap();
            let x = x0.clone().require_grad();
            let y = if reference {
                model.forward_reference(x.clone())
            } else {
                model.forward(x.clone())
            };
            pass_tensors(y, &x, &model.convs, &model.bns)
        };
        // As the VGG model's test: float32 rounding compounds through a network.
        assert_tensors_close(&run(false), &run(true), 1e-3, 1e-6, text);
    }
}

/// A VGG plan's graph (what training runs) against the `Vgg` module built from the plan:
/// the same logits, input and weight gradients and BN running statistics, for a plan
/// with Tucker units and a plain (BN-less) conv, and the same weights keys.
#[test]
fn vgg_plans_run_through_the_graph_as_through_the_vgg_module() {
    use rankprune::arch::ArchSpec;
    use rankprune::model::Vgg;
    let device = Device::flex().autodiff();
    let mut arch = ArchSpec::parse("cfg_bn:4,M,6,M,5").unwrap().build(3);
    arch.decompose("features.4", 2, 3).unwrap();
    let w = Weights::init(&arch, 5);
    let x0 = Tensor::<4>::random([3, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let graph_run = {
        let model = GraphNet::from_weights(&of_arch(&arch), w.clone(), "mem", &device).unwrap();
        assert_eq!(model.to_weights(), w);
        let x = x0.clone().require_grad();
        pass_tensors(model.forward(x.clone()), &x, &model.convs, &model.bns)
    };
    let vgg_run = {
        let model = Vgg::from_weights(&arch, w.clone(), "mem", &device).unwrap();
        let x = x0.clone().require_grad();
        pass_tensors(model.forward(x.clone()), &x, &model.convs, &model.bns)
    };
    // The same kernels in the same order: equal up to summation order.
    assert_tensors_close(&graph_run, &vgg_run, 1e-5, 0.0, "graph vs Vgg");
}

/// The units the probes read (BN recalibration, CKA): on a VGG plan's graph,
/// `GraphNet::forward_with` hands its hook what `Vgg::forward_with` hands its own, in the
/// same order (each BN's input with the BN, a BN-less conv unit's output), and both give
/// the same logits when the hook computes the BN in train mode.
#[test]
fn the_graphs_unit_hook_sees_the_vgg_modules_units() {
    use burn::tensor::module::batch_norm_train;
    use rankprune::arch::ArchSpec;
    use rankprune::model::Vgg;
    let device = Device::flex();
    let mut arch = ArchSpec::parse("cfg_bn:4,M,6,M,5").unwrap().build(3);
    arch.decompose("features.4", 2, 3).unwrap();
    let mut plain = ArchSpec::parse("cfg:4,M,6").unwrap().build(3);
    plain.decompose("features.3", 2, 2).unwrap();
    for arch in [arch, plain] {
        let w = Weights::init(&arch, 9);
        let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let values = |t: &Tensor<4>| {
            t.clone()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let train_bn = |bn: &burn::nn::BatchNorm, x: Tensor<4>| {
            batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon).output
        };
        let (mut seen_vgg, mut seen_graph) = (Vec::new(), Vec::new());
        let vgg = Vgg::from_weights(&arch, w.clone(), "mem", &device).unwrap();
        let y_vgg = vgg.forward_with(x.clone(), |_, bn, x| {
            seen_vgg.push((bn.map(|b| b.0), values(&x)));
            match bn {
                Some((_, bn)) => train_bn(bn, x),
                None => x,
            }
        });
        let graph = GraphNet::from_weights(&of_arch(&arch), w, "mem", &device).unwrap();
        let y_graph = graph.forward_with(x, |bn, x| {
            seen_graph.push((bn.map(|b| b.0), values(&x)));
            match bn {
                Some((_, bn)) => train_bn(bn, x),
                None => x,
            }
        });
        assert!(!seen_vgg.is_empty());
        assert_eq!(seen_vgg.len(), seen_graph.len(), "{}", arch.model);
        for ((bv, xv), (bg, xg)) in seen_vgg.iter().zip(&seen_graph) {
            assert_eq!(bv, bg);
            assert_eq!(
                xv, xg,
                "the same layers in the same order: bit-equal inputs"
            );
        }
        let (a, b) = (
            y_vgg.into_data().try_to_vec::<f32>().unwrap(),
            y_graph.into_data().try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(a, b);
    }
}

/// Residual and imported networks through the commands: `metrics`, `init`, `check`,
/// `train`, `eval`, `recommend pruning`, `compress` and `export-model`; a model at an
/// input size the data does not have exits 2.
#[test]
fn residual_networks_through_the_cli() {
    use super::common::rankprune;
    let o = rankprune(&[
        "metrics",
        "--arch",
        "resnet56",
        "--num-classes",
        "10",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        m["params"], 855_770,
        "the count PyTorch gives (graph_counts.json)"
    );
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("r.safetensors");
    let w = w.to_str().unwrap();
    let model = [
        "--arch",
        "resnet20@0.5",
        "--num-classes",
        "4",
        "--input-size",
        "16",
    ];
    let run = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd];
        args.extend(model);
        args.extend(extra);
        rankprune(&args)
    };
    assert!(run("init", &["--out", w]).status.success());
    let o = run("check", &["--weights", w]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success() && out.contains("4 finite logits"),
        "{out}"
    );
    let o = rankprune(&[
        "check",
        "--arch",
        "resnet20",
        "--num-classes",
        "4",
        "--weights",
        w,
    ]);
    assert_eq!(o.status.code(), Some(2));
    // Trained from the initialised weights on CIFAR-layout data (16x16 crops of it are
    // refused: the binary layouts hold 32x32 images); the best weights evaluate to the
    // accuracy train reported.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_cifar100(&stripes(64, 4, 1), &data.join("train.bin"));
    write_cifar100(&stripes(32, 4, 2), &data.join("test.bin"));
    let data = data.to_str().unwrap();
    let trained = dir.path().join("t.safetensors");
    let trained = trained.to_str().unwrap();
    let o = run(
        "train",
        &["--dataset", "cifar100", "--data", data, "--out", trained],
    );
    assert_eq!(o.status.code(), Some(2));
    let at32 = [
        "--arch",
        "resnet20@0.5",
        "--num-classes",
        "4",
        "--dataset",
        "cifar100",
        "--data",
        data,
        "--val-split",
        "16",
    ];
    let mut args = vec!["train"];
    args.extend(at32);
    args.extend([
        "--weights",
        w,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        trained,
        "--json",
    ]);
    let o = rankprune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t["steps"], 3);
    let mut args = vec!["eval"];
    args.extend(at32);
    args.extend(["--weights", trained, "--json"]);
    let o = rankprune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["top1"], t["test"]["top1"]);
    // Group SLAMP ratios for half the FLOPs; the config they write counts at least 2x.
    let ratios = dir.path().join("ratios.json");
    let ratios = ratios.to_str().unwrap();
    let mut args = vec!["recommend", "pruning"];
    args.extend(model);
    args.extend(["--weights", w, "--flops-reduction", "2", "--out", ratios]);
    let o = rankprune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("members"));
    let count = |extra: &[&str]| -> u64 {
        let mut args = vec!["metrics"];
        args.extend(model);
        args.extend(extra);
        args.push("--json");
        let o = rankprune(&args);
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        m["flops"].as_u64().unwrap()
    };
    assert!(count(&["--config", ratios]) * 2 <= count(&[]));
    // An ONNX file as the architecture, and as the weights.
    let onnx = repo_path("tests/fixtures/resnet18_w32_cifar.onnx");
    let onnx = onnx.to_str().unwrap();
    let o = rankprune(&["metrics", "--arch", onnx, "--json"]);
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ours = rankprune::graph::cost::count(&resnet("resnet18@0.03125", 5, 32));
    assert_eq!(m["params"], ours.params);
    let o = rankprune(&["check", "--arch", onnx, "--weights", onnx]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Fine-tuned from its own initializers (5 classes, 32x32 like the data).
    let tuned = dir.path().join("tuned.safetensors");
    let tuned = tuned.to_str().unwrap();
    let o = rankprune(&[
        "train",
        "--arch",
        onnx,
        "--weights",
        onnx,
        "--dataset",
        "cifar100",
        "--data",
        data,
        "--val-split",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        tuned,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = rankprune(&["check", "--arch", onnx, "--weights", tuned]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Compressed by a config (ranks, then ratios by group) into ONNX, and checked.
    let config = dir.path().join("c.json");
    std::fs::write(
        &config,
        r#"{"decomposition": {"method": "tucker2", "ranks": {"layer2.0.conv2": [3, 3]}},
            "pruning": {"method": "l2_norm", "ratios": {"conv1": 0.5, "layer2.0.conv2_tucker_2": 0.25}}}"#,
    )
    .unwrap();
    let small = dir.path().join("small.onnx");
    let (config, small) = (config.to_str().unwrap(), small.to_str().unwrap());
    let o = rankprune(&[
        "compress",
        "--arch",
        onnx,
        "--weights",
        onnx,
        "--config",
        config,
        "--out",
        small,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = rankprune(&["metrics", "--arch", onnx, "--config", config, "--json"]);
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["after"]["params"], m["params"]);
    assert!(m["params"].as_u64().unwrap() < ours.params);
    let o = rankprune(&["check", "--arch", small, "--weights", small]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"pruning": {"method": "l2_norm", "ratios": {"layer1.1.conv2": 0.5}}}"#,
    )
    .unwrap();
    let bad = dir.path().join("bad.json");
    let o = rankprune(&[
        "compress",
        "--arch",
        onnx,
        "--weights",
        onnx,
        "--config",
        bad.to_str().unwrap(),
        "--out",
        small,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give the ratio to \"conv1\""));
    // VBMF ranks for its 3x3 convs with more than 3 inputs: 11 of this narrow resnet18's
    // 20 convs (not the stem, the three 1x1 projections, layer1's four and
    // layer2.0.conv1, which read 2 channels), and the model exported as ONNX.
    let ranks = dir.path().join("ranks.json");
    let ranks = ranks.to_str().unwrap();
    let o = rankprune(&[
        "recommend",
        "decomposition",
        "--arch",
        onnx,
        "--weights",
        onnx,
        "--out",
        ranks,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["layers"].as_array().unwrap().len(), 11, "{r}");
    let exported = dir.path().join("e.onnx");
    let exported = exported.to_str().unwrap();
    let o = rankprune(&[
        "export-model",
        "--arch",
        onnx,
        "--config",
        config,
        "--weights",
        small,
        "--out",
        exported,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("BatchNorm folded into the convs"));
    // The folded file carries its own (folded) weights.
    let o = rankprune(&["check", "--arch", exported, "--weights", exported]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // eval: a fresh resnet20@0.25 on 4-class stripes (CIFAR-100 layout).
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    super::common::write_cifar100(&super::common::stripes(24, 4, 3), &data.join("test.bin"));
    let r = dir.path().join("r25.safetensors");
    let r = r.to_str().unwrap();
    let net = ["--arch", "resnet20@0.25", "--num-classes", "4"];
    let mut args = vec!["init"];
    args.extend(net);
    args.extend(["--out", r]);
    assert!(rankprune(&args).status.success());
    let mut args = vec!["eval"];
    args.extend(net);
    args.extend(["--weights", r, "--data", data.to_str().unwrap(), "--json"]);
    let o = rankprune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["samples"], 24, "{e}");
    let p = dir.path().join("p.json");
    let mut args = vec!["predict"];
    args.extend(net);
    args.extend([
        "--weights",
        r,
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "3",
    ]);
    args.extend(["--out", p.to_str().unwrap()]);
    assert!(rankprune(&args).status.success());
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(p["logits"].as_array().unwrap().len(), 3);
    assert_eq!(p["logits"][0].as_array().unwrap().len(), 4);
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\xff\xff junk").unwrap();
    let o = rankprune(&["metrics", "--arch", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk.onnx: not an ONNX model"));
}

/// The fixture script's two images of `side` x `side`: x[i] = sin(0.1 i), NCHW.
fn fixture_input(side: usize, device: &Device) -> Tensor<4> {
    let n = 2 * 3 * side * side;
    let x: Vec<f32> = (0..n).map(|i| (0.1 * i as f64).sin() as f32).collect();
    Tensor::<4>::from_data(TensorData::new(x, [2, 3, side, side]), device)
}

/// The fixture's PyTorch logits for `stem`, row after row.
fn logits_of(json: &serde_json::Value, stem: &str) -> Vec<f32> {
    json[stem]["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect()
}

/// The same models through `torch.onnx.export`: imported, they give PyTorch's logits,
/// cost what our own resnet18 costs, and their weights carry PyTorch's keys.
#[test]
fn onnx_resnets_import_with_pytorchs_logits_and_names() {
    use rankprune::deploy::onnx_import::import;
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("tests/fixtures/resnet_logits.json")).unwrap(),
    )
    .unwrap();
    let device = Device::flex();
    for stem in ["cifar", "imagenet"] {
        let side = json[stem]["side"].as_u64().unwrap() as usize;
        let path = repo_path(&format!("tests/fixtures/resnet18_w32_{stem}.onnx"));
        let (graph, w) = import(&path).unwrap();
        assert_eq!(graph.input, [3, side, side]);
        let ours = resnet("resnet18@0.03125", 5, side);
        let (a, b) = (
            rankprune::graph::cost::count(&graph),
            rankprune::graph::cost::count(&ours),
        );
        assert_eq!(
            (a.params, a.macs, a.flops),
            (b.params, b.macs, b.flops),
            "{stem}"
        );
        // PyTorch's keys: the imported weights load into our own graph as they are.
        GraphNet::from_weights(&ours, w.clone(), "onnx", &device).unwrap();
        let model = GraphNet::from_weights(&graph, w, "onnx", &device).unwrap();
        let x = fixture_input(side, &device);
        let got = host(model.forward(x));
        let want = logits_of(&json, stem);
        for (p, q) in got.iter().zip(&want) {
            assert!((p - q).abs() <= 1e-4, "{stem}: {got:?} vs {want:?}");
        }
    }
}

/// Unsupported ops and attributes, and shapes that do not fit, name the node and op.
#[test]
fn bad_onnx_graphs_name_the_node() {
    use onnx_protobuf::{Message, ModelProto};
    use rankprune::deploy::onnx_import::{from_model, import};
    let path = repo_path("tests/fixtures/resnet18_w32_cifar.onnx");
    let model = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let conv = model
        .graph
        .node
        .iter()
        .position(|n| n.op_type == "Conv")
        .unwrap();
    let name = model.graph.node[conv].name.clone();
    let err = |edit: &dyn Fn(&mut ModelProto)| {
        let mut m = model.clone();
        edit(&mut m);
        from_model(&m, "t").unwrap_err()
    };
    let e = err(&|m| m.graph.mut_or_insert_default().node[conv].op_type = "Sigmoid".into());
    assert!(
        e.starts_with(&format!("node {name} (Sigmoid): unsupported op")),
        "{e}"
    );
    let e = err(&|m| {
        let node = &mut m.graph.mut_or_insert_default().node[conv];
        let group = node
            .attribute
            .iter_mut()
            .find(|a| a.name == "group")
            .unwrap();
        group.i = 2;
    });
    assert!(e.contains(&format!("node {name} (Conv): group > 1")), "{e}");
    // The first conv's weight given one input channel too many.
    let e = err(&|m| {
        let w = m.graph.mut_or_insert_default().node[conv].input[1].clone();
        let t = m
            .graph
            .mut_or_insert_default()
            .initializer
            .iter_mut()
            .find(|t| t.name == w)
            .unwrap();
        let per_in = (t.dims[2] * t.dims[3]) as usize * 4;
        t.dims[1] += 1;
        let extra = t.dims[0] as usize * per_in;
        t.raw_data.extend(vec![0u8; extra]);
    });
    assert!(
        e.contains("(Conv): takes 4 input channels, receives 3"),
        "{e}"
    );
    // Not an ONNX file at all: exit-2 material naming the file.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not protobuf at all \xff\xff").unwrap();
    let e = import(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.onnx: not an ONNX model"), "{e}");
}
