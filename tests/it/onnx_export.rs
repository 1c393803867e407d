//! `export-model --format onnx` end to end: exported original, decomposed and
//! decomposed+pruned models pass onnx.checker and give rankprune's logits in onnxruntime
//! (a Python venv under target/, made once), BatchNorm folded or kept; bad input exits 2.

use crate::common::{rankprune, repo_path};
use burn::tensor::{Device, Distribution, Tensor};
use rankprune::arch::{Arch, ArchSpec, Unit};
use rankprune::config::LayerConfig;
use rankprune::model::Vgg;
use rankprune::weights::Weights;
use std::path::{Path, PathBuf};
use std::process::Command;

const ARCH: &str = "cfg_bn:8,M,16,M,16";
const CLASSES: usize = 5;
const FD: &str = r#"{"decomposition": {"method": "tucker2",
    "ranks": {"features.4": [4, 6], "features.8": [6, 5]}}}"#;
const FD_PRUNED: &str = r#"{"decomposition": {"method": "tucker2",
    "ranks": {"features.4": [4, 6], "features.8": [6, 5]}},
    "pruning": {"method": "l2_norm", "ratios": {"features.0": 0.25,
    "features.4_tucker_0": 0.25, "features.4_tucker_1": 0.5, "features.4_tucker_2": 0.25}}}"#;

/// Python with onnxruntime, onnx and numpy: a venv under target/, made on first use.
/// `None` (and a printed line) when the machine has no python3; a panic when it has one
/// but the venv cannot be made (CI must run this test).
pub(crate) fn python() -> Option<PathBuf> {
    if Command::new("python3").arg("--version").output().is_err() {
        println!("skipping the onnxruntime check: no python3 on this machine");
        return None;
    }
    let venv = repo_path("target/onnx-venv");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import onnxruntime, onnx, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready(&py) {
        let run = |cmd: &mut Command| {
            let o = cmd.output().unwrap();
            assert!(
                o.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&py).args(["-m", "pip", "install", "-q", "onnxruntime", "onnx", "numpy"]));
    }
    Some(py)
}

/// Init weights with BatchNorm statistics and affine parameters far from the identity,
/// so that folding them is exercised.
fn weights(arch: &Arch) -> Weights {
    let mut w = Weights::init(arch, 7);
    let bns: Vec<String> = arch
        .units
        .iter()
        .filter_map(|u| match u {
            Unit::Conv(c) => c.bn.clone(),
            _ => None,
        })
        .collect();
    for (k, (key, t)) in w.tensors.iter_mut().enumerate() {
        let Some(field) = bns
            .iter()
            .find_map(|bn| key.strip_prefix(&format!("{bn}.")))
        else {
            continue;
        };
        for (i, v) in t.data.iter_mut().enumerate() {
            let x = ((i * 7 + k * 3) % 10) as f32 / 10.0;
            *v = match field {
                "running_mean" => x - 0.5,
                "running_var" => 0.3 + 2.0 * x,
                "weight" => 0.5 + x,
                _ => 0.2 * x - 0.1,
            };
        }
    }
    w
}

pub(crate) fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn exported_models_match_rankprune_in_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).display().to_string();
    let base = ArchSpec::parse(ARCH).unwrap().build(CLASSES);
    let device = Device::flex();
    let images = Tensor::<4>::random([16, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    write_f32(
        &dir.path().join("images.f32"),
        &images.to_data().try_to_vec::<f32>().unwrap(),
    );
    let mut checks = Vec::new();
    for (name, config) in [
        ("original", None),
        ("fd", Some(FD)),
        ("fd-pruned", Some(FD_PRUNED)),
    ] {
        let arch = match config {
            Some(json) => {
                std::fs::write(d(&format!("{name}.json")), json).unwrap();
                LayerConfig::from_json(json, name)
                    .unwrap()
                    .apply(&base, name)
                    .unwrap()
            }
            None => base.clone(),
        };
        let w = weights(&arch);
        w.save_safetensors(&dir.path().join(format!("{name}.safetensors")))
            .unwrap();
        let model = Vgg::from_weights(&arch, w, name, &device).unwrap();
        let logits = model
            .forward(images.clone())
            .to_data()
            .try_to_vec::<f32>()
            .unwrap();
        write_f32(&dir.path().join(format!("{name}.f32")), &logits);
        for keep_bn in [false, true] {
            let out = d(&format!("{name}{}.onnx", if keep_bn { "-bn" } else { "" }));
            let (weights_file, config_file) = (
                d(&format!("{name}.safetensors")),
                d(&format!("{name}.json")),
            );
            let classes = CLASSES.to_string();
            let mut args = vec!["export-model", "--arch", ARCH, "--num-classes", &classes];
            args.extend(["--weights", &weights_file, "--out", &out]);
            if config.is_some() {
                args.extend(["--config", &config_file]);
            }
            if keep_bn {
                args.push("--keep-bn");
            }
            let o = rankprune(&args);
            assert!(
                o.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(String::from_utf8_lossy(&o.stdout).contains("opset 13"));
            checks.extend([out, d(&format!("{name}.f32"))]);
        }
    }
    let Some(py) = python() else { return };
    let o = Command::new(py)
        .arg(repo_path("tests/fixtures/onnx_check.py"))
        .args([&d("images.f32"), "16", "3", "32", "32"])
        .args(&checks)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    println!("{report}");
    assert!(
        o.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(report.matches(": ok").count(), 6, "{report}");
}

#[test]
fn export_model_rejects_bad_input_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).display().to_string();
    let base = ArchSpec::parse(ARCH).unwrap().build(CLASSES);
    Weights::init(&base, 1)
        .save_safetensors(&dir.path().join("w.safetensors"))
        .unwrap();
    std::fs::write(d("fd.json"), FD).unwrap();
    let classes = CLASSES.to_string();
    let (w, out, cfg) = (d("w.safetensors"), d("m.onnx"), d("fd.json"));
    let common = [
        "export-model",
        "--arch",
        ARCH,
        "--num-classes",
        &classes,
        "--weights",
        &w,
    ];
    let missing_dir = d("no/such/dir/m.onnx");
    for (extra, says) in [
        (vec!["--out", &out, "--format", "tflite"], "tflite"),
        (vec!["--out", &out, "--config", &cfg], "features.4"),
        (vec!["--out", &missing_dir], "does not exist"),
    ] {
        let mut args = common.to_vec();
        args.extend(extra);
        let o = rankprune(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(
        !dir.path().join("m.onnx").exists(),
        "nothing written on bad input"
    );
}
