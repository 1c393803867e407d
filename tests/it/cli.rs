//! The `rankprune` binary end to end: metrics, init, check, exit codes.

use crate::common::{rankprune, repo_path};
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn metrics_json_has_the_reference_counts() {
    let o = rankprune(&[
        "metrics",
        "--arch",
        "vgg19_bn",
        "--num-classes",
        "100",
        "--json",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(v["params"], 20_086_692);
    assert_eq!(
        v["flops"]
            .as_u64()
            .map(|f| (f as f64 / 1e4).round() / 100.0),
        Some(796.79)
    );
    assert_eq!(v["size_bytes"], 4 * (20_086_692 + 2 * 5504));
    let layers = v["layers"].as_array().unwrap();
    let first = &layers[0];
    assert_eq!(first["name"], "features.0");
    assert_eq!(first["kind"], "conv");
    assert_eq!(
        (first["in"].as_u64(), first["out"].as_u64()),
        (Some(3), Some(64))
    );
    for key in ["params", "macs", "flops"] {
        assert!(first[key].is_u64(), "{key}");
    }
}

#[test]
fn metrics_table_with_the_reference_config() {
    let config = repo_path("experiments/reference-search-config.json");
    let o = rankprune(&[
        "metrics",
        "--arch",
        "vgg19_bn",
        "--num-classes",
        "100",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("features.3_tucker_1"));
    // tests/fixtures/reference_params.py counts the 661,164 independently.
    assert!(out.contains("total: 661164 params (0.66M)"), "{out}");
    assert!(out.contains("vs the original: FLOPs 796.79M"), "{out}");
}

#[test]
fn bad_input_exits_2_with_the_reason_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"pruning": {"method": "l2_norm", "ratios": {"features.0": 1.2}}}"#,
    )
    .unwrap();
    let o = rankprune(&["metrics", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.json: pruning.ratios.features.0: ratio 1.2 out of range"),
        "{err}"
    );
    assert!(o.stdout.is_empty());

    let o = rankprune(&["metrics", "--arch", "resnet50"]);
    assert_eq!(o.status.code(), Some(2));
    // An unknown learning-rate schedule names the allowed ones.
    let o = rankprune(&["train", "--lr-schedule", "cosine"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("possible values: plateau, linear"), "{err}");
    let o = rankprune(&[
        "check",
        "--arch",
        "cfg_bn:4",
        "--num-classes",
        "2",
        "--weights",
        "/nonexistent.safetensors",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn init_then_check_a_compressed_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.json");
    std::fs::write(
        &config,
        r#"{"decomposition": {"method": "tucker2", "ranks": {"features.4": [3, 5]}},
            "pruning": {"method": "l2_norm", "ratios": {"features.0": 0.5, "features.4_tucker_1": 0.4}}}"#,
    )
    .unwrap();
    let out = dir.path().join("m.safetensors");
    let model = [
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--config",
        config.to_str().unwrap(),
    ];
    let o = rankprune(
        &[
            &["init"][..],
            &model,
            &["--out", out.to_str().unwrap(), "--seed", "3"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = rankprune(
        &[
            &["check"][..],
            &model,
            &["--weights", out.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("finite logits"));
    // The same file does not fit the uncompressed architecture: a clear shape error.
    let o = rankprune(&[
        "check",
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--weights",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("features.0.weight") && err.contains("[8, 3, 3, 3]"),
        "{err}"
    );
}

#[test]
fn help_everywhere() {
    for cmd in [
        &["--help"][..],
        &["metrics", "--help"],
        &["init", "--help"],
        &["check", "--help"],
    ] {
        let o = rankprune(cmd);
        assert!(o.status.success());
        assert!(stdout(&o).contains("Usage"));
    }
}

#[test]
fn recommend_then_compress_then_check() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let model = ["--arch", "cfg_bn:8,M,16,M", "--num-classes", "4"];
    let o = rankprune(&[&["init"][..], &model, &["--out", &p("w.safetensors")]].concat());
    assert!(o.status.success());
    let o = rankprune(
        &[
            &["recommend", "decomposition"][..],
            &model,
            &[
                "--weights",
                &p("w.safetensors"),
                "--calibration",
                "1",
                "--out",
                &p("r.json"),
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("features.4"));
    // Calibration 1 gives the full ranks back: [8, 16] for features.4.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("r.json")).unwrap()).unwrap();
    assert_eq!(
        config["decomposition"]["ranks"]["features.4"],
        serde_json::json!([8, 16])
    );
    assert_eq!(config["model"], "cfg_bn:8,M,16,M");

    let o = rankprune(
        &[
            &["compress"][..],
            &model,
            &[
                "--weights",
                &p("w.safetensors"),
                "--config",
                &p("r.json"),
                "--out",
                &p("c.safetensors"),
                "--json",
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert!(v["layers"][0]["rel_error"].as_f64().unwrap() < 1e-5);
    let o = rankprune(
        &[
            &["check"][..],
            &model,
            &["--config", &p("r.json"), "--weights", &p("c.safetensors")],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Bad input: calibration out of range, a pruning section (not implemented yet).
    let o = rankprune(
        &[
            &["recommend", "decomposition"][..],
            &model,
            &["--weights", &p("w.safetensors"), "--calibration", "-2"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    // SLAMP on top of the decomposition, then compress base weights with the merged config.
    let o = rankprune(
        &[
            &["recommend", "pruning"][..],
            &model,
            &[
                "--weights",
                &p("w.safetensors"),
                "--config",
                &p("r.json"),
                "--ratio",
                "0.4",
                "--out",
                &p("rp.json"),
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("rp.json")).unwrap()).unwrap();
    assert_eq!(merged["decomposition"], config["decomposition"]);
    assert!(merged["pruning"]["ratios"]["features.4_tucker_2"].is_number());
    let o = rankprune(
        &[
            &["compress"][..],
            &model,
            &[
                "--weights",
                &p("w.safetensors"),
                "--config",
                &p("rp.json"),
                "--out",
                &p("p.safetensors"),
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = rankprune(
        &[
            &["check"][..],
            &model,
            &["--config", &p("rp.json"), "--weights", &p("p.safetensors")],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // No target given: clap refuses with exit 2.
    let o = rankprune(
        &[
            &["recommend", "pruning"][..],
            &model,
            &["--weights", &p("w.safetensors")],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn train_then_eval_on_digits32() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    let data = repo_path("experiments/data/digits32");
    let common = [
        "--arch",
        "cfg_bn:4,M",
        "--num-classes",
        "10",
        "--data",
        data.to_str().unwrap(),
        "--val-split",
        "100",
    ];
    let o = rankprune(
        &[
            &["train"][..],
            &common,
            &[
                "--epochs",
                "1",
                "--max-steps",
                "2",
                "--batch-size",
                "16",
                "--out",
                out.to_str().unwrap(),
                "--json",
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(v["steps"], 2);
    assert_eq!(v["test"]["samples"], 360);
    let o = rankprune(
        &[
            &["eval"][..],
            &common,
            &[
                "--weights",
                out.to_str().unwrap(),
                "--split",
                "val",
                "--json",
                "--per-image",
                dir.path().join("val.bits").to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(v["samples"], 100);
    // Each image's correctness, in order: as many ones as the top-1 count.
    let bits = std::fs::read_to_string(dir.path().join("val.bits")).unwrap();
    assert_eq!(bits.len(), 100);
    assert!(bits.chars().all(|c| c == '0' || c == '1'));
    let ones = bits.chars().filter(|&c| c == '1').count();
    assert!((ones as f64 / 100.0 - v["top1"].as_f64().unwrap()).abs() < 1e-12);
    for key in ["top1", "top5"] {
        let x = v[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{key} = {x}");
    }
    assert!(v["top5"].as_f64() >= v["top1"].as_f64());
    assert!(v["loss"].as_f64().unwrap().is_finite());
    // A data directory of the wrong layout is a clear bad-input error.
    let o = rankprune(
        &[
            &["eval"][..],
            &common,
            &["--weights", out.to_str().unwrap(), "--dataset", "cifar10"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("test_batch.bin"));
}

#[test]
fn compress_prunes_already_decomposed_weights_like_base_weights() {
    // Pruning the decomposed model's file gives the same bytes as decomposing and
    // pruning the base model's file in one go (filters are chosen on the same weights).
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::write(
        p("ranks.json"),
        r#"{"decomposition": {"method": "tucker2", "ranks": {"features.4": [3, 5]}}}"#,
    )
    .unwrap();
    std::fs::write(
        p("both.json"),
        r#"{"decomposition": {"method": "tucker2", "ranks": {"features.4": [3, 5]}},
            "pruning": {"method": "l2_norm", "ratios": {"features.0": 0.5, "features.4_tucker_1": 0.4}}}"#,
    )
    .unwrap();
    let arch = ["--arch", "cfg_bn:8,M,16,M", "--num-classes", "4"];
    let base = p("base.safetensors");
    let o = rankprune(&[&["init"][..], &arch, &["--out", &base, "--seed", "5"]].concat());
    assert!(o.status.success());
    let compress = |w: &str, c: &str, out: &str| {
        let args = ["--weights", w, "--config", c, "--out", out];
        let o = rankprune(&[&["compress"][..], &arch, &args].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    compress(
        &p("base.safetensors"),
        &p("ranks.json"),
        &p("dec.safetensors"),
    );
    compress(&p("dec.safetensors"), &p("both.json"), &p("a.safetensors"));
    compress(&p("base.safetensors"), &p("both.json"), &p("b.safetensors"));
    assert_eq!(
        std::fs::read(p("a.safetensors")).unwrap(),
        std::fs::read(p("b.safetensors")).unwrap()
    );
}

/// `recommend pruning --flops-reduction X --config ranks.json` means X fewer FLOPs than
/// the original model, decomposition included; a target the decomposition already
/// passes, or one out of reach, is an input error naming the reachable figure.
#[test]
fn pruning_reductions_are_against_the_original_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let model = ["--arch", "vgg11_bn@0.25", "--num-classes", "10"];
    let o = rankprune(&[&["init"][..], &model, &["--out", &p("w.safetensors")]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = rankprune(
        &[
            &["recommend", "decomposition"][..],
            &model,
            &[
                "--weights",
                &p("w.safetensors"),
                "--calibration",
                "0.5",
                "--out",
                &p("r.json"),
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let flops = |config: Option<&str>| {
        let mut args = vec!["metrics", "--json"];
        if let Some(c) = config {
            args.extend(["--config", c]);
        }
        let o = rankprune(&[&args[..], &model].concat());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["flops"].as_f64().unwrap()
    };
    let (original, decomposed) = (flops(None), flops(Some(&p("r.json"))));
    assert!(decomposed < original);
    let prune = |x: f64, out: &str| {
        rankprune(
            &[
                &["recommend", "pruning"][..],
                &model,
                &[
                    "--weights",
                    &p("w.safetensors"),
                    "--config",
                    &p("r.json"),
                    "--flops-reduction",
                    &x.to_string(),
                    "--out",
                    &p(out),
                ],
            ]
            .concat(),
        )
    };
    // 1.5 times what the decomposition gives, against the original.
    let x = 1.5 * original / decomposed;
    let o = prune(x, "c.json");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = flops(Some(&p("c.json")));
    let want = original / x;
    assert!(got <= want && got >= 0.99 * want, "{got} vs {want}");
    assert!(stdout(&o).contains("vs the original"), "{}", stdout(&o));

    let o = prune(1.01, "d.json");
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("the decomposition alone already reaches"), "{e}");
    let o = prune(1000.0, "e.json");
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("out of reach") && e.contains("the closest is") && e.contains("MFLOPs"),
        "{e}"
    );
}

/// `compress --repair K` refits the compressed model on K batches of training images:
/// it needs the data, and its result keeps every tensor's shape but not its values.
#[test]
fn compress_repairs_on_training_batches_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(p("data")).unwrap();
    crate::common::write_cifar100(
        &crate::common::stripes(40, 4, 3),
        &dir.path().join("data/train.bin"),
    );
    std::fs::write(
        p("both.json"),
        r#"{"decomposition": {"method": "tucker2", "ranks": {"features.4": [3, 5]}},
            "pruning": {"method": "l2_norm", "ratios": {"features.0": 0.5}}}"#,
    )
    .unwrap();
    let arch = ["--arch", "cfg_bn:8,M,16,M", "--num-classes", "4"];
    let base = p("base.safetensors");
    let o = rankprune(&[&["init"][..], &arch, &["--out", &base, "--seed", "5"]].concat());
    assert!(o.status.success());
    let compress = |out: &str, extra: &[&str]| {
        let args = [
            "--weights",
            &base,
            "--config",
            &p("both.json"),
            "--out",
            out,
        ];
        rankprune(&[&["compress"][..], &arch, &args, extra].concat())
    };
    let o = compress(&p("no-data.safetensors"), &["--repair", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--repair needs the training data"));
    let o = compress(&p("plain.safetensors"), &[]);
    assert!(o.status.success());
    let data = p("data");
    let o = compress(
        &p("repaired.safetensors"),
        &[
            "--repair",
            "2",
            "--data",
            &data,
            "--val-split",
            "8",
            "--batch-size",
            "16",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let load = |n: &str| rankprune::weights::Weights::load(std::path::Path::new(&p(n))).unwrap();
    let (plain, repaired) = (load("plain.safetensors"), load("repaired.safetensors"));
    assert_eq!(
        plain.tensors.keys().collect::<Vec<_>>(),
        repaired.tensors.keys().collect::<Vec<_>>()
    );
    let changed: Vec<&String> = plain
        .tensors
        .iter()
        .filter(|(k, t)| {
            assert_eq!(t.shape, repaired.tensors[*k].shape, "{k}");
            t.data != repaired.tensors[*k].data
        })
        .map(|(k, _)| k)
        .collect();
    // The refitted Tucker unit and the restated BatchNorms changed; the pruned first conv
    // already gives the base's kept channels exactly, and neither the Tucker unit's first
    // 1x1 conv nor the classifier is ever refitted.
    for k in ["features.4_tucker_2.weight", "features.5.running_var"] {
        assert!(
            changed.contains(&&k.to_string()),
            "{k} unchanged: {changed:?}"
        );
    }
    for k in [
        "features.0.weight",
        "features.4_tucker_0.weight",
        "classifier.weight",
    ] {
        assert!(!changed.contains(&&k.to_string()), "{k} changed");
    }
}

/// `worker --synthetic-ms`, the dry-run flag's earlier name, is still read as
/// `--dry-run-ms` (clap names the flag it parsed in its error on a bad value).
#[test]
fn the_worker_dry_run_flag_keeps_its_old_name() {
    for flag in ["--dry-run-ms", "--synthetic-ms"] {
        let o = rankprune(&["worker", "--db", "unused.sqlite", flag, "soon"]);
        assert_eq!(o.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("invalid value 'soon' for '--dry-run-ms <MS>'"),
            "{flag}: {err}"
        );
    }
    let o = rankprune(&["worker", "--db", "unused.sqlite", "--synthetic-mss", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unexpected argument '--synthetic-mss'"),
        "{err}"
    );
}
