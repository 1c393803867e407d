//! Nothing a user types destroys data or crashes: bad arguments, budgets, spaces and
//! configs, and outputs that name an input (the same path, a symbolic or a hard link) are
//! refused before any work with exit code 2 and a message naming the flag, key, file or
//! study, and every file in the folder stays byte for byte as it was.

use crate::common::{rankprune, stripes, write_cifar100};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ARCH: &str = "cfg_bn:8,M,16,M,32,M";
const SIX_POOLS: &str = "cfg_bn:8,M,8,M,8,M,8,M,8,M,8,M";

const SPACE: &str = r#"
[decomposition]
layers = "all"
rank = "fraction"
min = 0.0
max = 1.0

[pruning]
layers = "all"
min = 0.0
max = 0.5
step = 0.25
"#;

const BUDGET: &str = r#"
[study]
name = "tiny"
db = "runs/study.sqlite"

[model]
arch = "cfg_bn:8,M,16,M,32,M"
num_classes = 10
weights = "w.safetensors"

[data]
dataset = "cifar100"
dir = "data"
val_split = 10

[search]
space = "space.toml"
strategy = "random"

[objective]
kind = "constrained"
target_flops_reduction = 1.2

[limits]
max_trials = 2

[proxy]
steps = 2
batch_size = 8
eval_samples = 10
"#;

/// Every file under `dir` (a link as the path it holds), to compare before and after.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                files.insert(p, target.into_os_string().into_encoded_bytes());
            } else if meta.is_dir() {
                todo.push(p);
            } else {
                files.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

/// A folder with tiny data, weights of `ARCH`, configs, budgets, spaces and a store.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| dir.path().join(rel);
    std::fs::create_dir(p("data")).unwrap();
    write_cifar100(&stripes(40, 10, 1), &p("data/train.bin"));
    write_cifar100(&stripes(20, 10, 2), &p("data/test.bin"));
    let w = p("w.safetensors");
    let o = rankprune(&[
        "init",
        "--arch",
        ARCH,
        "--num-classes",
        "10",
        "--out",
        w.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::os::unix::fs::symlink(&w, p("soft.safetensors")).unwrap();
    std::fs::hard_link(&w, p("hard.safetensors")).unwrap();
    std::fs::write(
        p("c.json"),
        r#"{"pruning": {"method": "l2_norm", "ratios": {"features.0": 0.5}}}"#,
    )
    .unwrap();
    std::fs::write(
        p("dup.json"),
        r#"{"pruning": {"method": "l2_norm", "ratios": {"features.0": 0.5, "features.4": 0.25, "features.0": 0.75}}}"#,
    )
    .unwrap();
    std::fs::write(p("marks.json"), "[]").unwrap();
    std::fs::write(p("space.toml"), SPACE).unwrap();
    std::fs::write(
        p("space-vgg19.toml"),
        format!("arch = \"vgg19_bn\"\n{SPACE}"),
    )
    .unwrap();
    std::fs::write(p("budget.toml"), BUDGET).unwrap();
    let variants = [
        ("budget-val0.toml", "val_split = 10", "val_split = 0"),
        (
            "budget-pools.toml",
            "arch = \"cfg_bn:8,M,16,M,32,M\"",
            "arch = \"cfg_bn:8,M,8,M,8,M,8,M,8,M,8,M\"",
        ),
        (
            "budget-far.toml",
            "target_flops_reduction = 1.2",
            "target_flops_reduction = 1000.0",
        ),
        (
            "budget-other-space.toml",
            "space = \"space.toml\"",
            "space = \"space-vgg19.toml\"",
        ),
        (
            "budget-trial-name.toml",
            "weights = \"w.safetensors\"",
            "weights = \"runs/tiny-trial1.safetensors\"",
        ),
    ];
    for (file, from, to) in variants {
        assert!(BUDGET.contains(from), "{from}");
        std::fs::write(p(file), BUDGET.replace(from, to)).unwrap();
    }
    std::fs::create_dir(p("runs")).unwrap();
    std::fs::copy(&w, p("runs/tiny-trial1.safetensors")).unwrap();
    // A store with one (submitted) study, for export and plot.
    let store = p("s.sqlite");
    let o = rankprune(&[
        "submit",
        p("budget.toml").to_str().unwrap(),
        "--db",
        store.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir
}

/// One refused command: its arguments (`{d}` stands for the fixture's folder) and what
/// the message must contain.
struct Case {
    args: &'static str,
    want: &'static [&'static str],
}

const fn case(args: &'static str, want: &'static [&'static str]) -> Case {
    Case { args, want }
}

const A: &str = "--arch cfg_bn:8,M,16,M,32,M --num-classes 10";

fn cases() -> Vec<Case> {
    vec![
        // Outputs that name an input.
        case(
            "init A --config {d}/c.json --out {d}/c.json",
            &["--out", "is the --config file"],
        ),
        case(
            "train A --weights {d}/w.safetensors --data {d}/data --val-split 10 --out {d}/w.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "train A --weights {d}/w.safetensors --data {d}/data --val-split 10 --out {d}/soft.safetensors",
            &[
                "--out",
                "soft.safetensors is the --weights file",
                "w.safetensors",
            ],
        ),
        case(
            "train A --weights {d}/w.safetensors --data {d}/data --val-split 10 --out {d}/hard.safetensors",
            &["--out", "hard.safetensors is the --weights file"],
        ),
        case(
            "train A --config {d}/c.json --data {d}/data --val-split 10 --out {d}/c.json",
            &["--out", "is the --config file"],
        ),
        case(
            "train A --data {d}/data --val-split 10 --out {d}/data/train.bin",
            &["--out", "is the --data file"],
        ),
        case(
            "compress A --weights {d}/w.safetensors --config {d}/c.json --out {d}/w.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "compress A --weights {d}/w.safetensors --config {d}/c.json --out {d}/c.json",
            &["--out", "is the --config file"],
        ),
        case(
            "compress A --weights {d}/w.safetensors --config {d}/c.json --out {d}/hard.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "recommend decomposition A --weights {d}/w.safetensors --out {d}/w.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "recommend decomposition A --weights {d}/w.safetensors --out {d}/soft.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "recommend pruning A --weights {d}/w.safetensors --ratio 0.5 --out {d}/w.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "recommend pruning A --weights {d}/w.safetensors --config {d}/c.json --ratio 0.5 --out {d}/c.json",
            &["--out", "is the --config file"],
        ),
        case(
            "export-model A --weights {d}/w.safetensors --out {d}/w.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "export-model A --weights {d}/w.safetensors --out {d}/hard.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "export-model A --weights {d}/w.safetensors --out {d}/soft.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "predict A --weights {d}/w.safetensors --data {d}/data --out {d}/w.safetensors",
            &["--out", "is the --weights file"],
        ),
        case(
            "predict A --weights {d}/w.safetensors --data {d}/data --out {d}/data/test.bin",
            &["--out", "is the --data file"],
        ),
        case(
            "export --db {d}/s.sqlite --best --out {d}/s.sqlite",
            &["--out", "is the --db store file"],
        ),
        case(
            "export --db {d}/s.sqlite --best --out {d}/s.sqlite-wal",
            &["--out", "--db store's write-ahead log"],
        ),
        case(
            "export --db {d}/s.sqlite --best --out {d}/s.sqlite-shm",
            &["--out", "--db store's shared-memory"],
        ),
        case(
            "plot --db {d}/s.sqlite --out {d}/s.sqlite",
            &["--out", "is the --db store file"],
        ),
        case(
            "plot --db {d}/s.sqlite --marks {d}/marks.json --out {d}/marks.json",
            &["--out", "is the --marks file"],
        ),
        case(
            "fidelity {d}/budget.toml --out {d}/w.safetensors",
            &["--out", "is the model.weights file"],
        ),
        case(
            "fidelity {d}/budget.toml --out {d}/budget.toml",
            &["--out", "is the budget file"],
        ),
        // Architectures whose maps shrink to nothing.
        case(
            "metrics --arch SIX --num-classes 10",
            &["--arch", "6 max-pools", "at most 5"],
        ),
        case(
            "init --arch SIX --num-classes 10 --out {d}/new.safetensors",
            &["--arch", "6 max-pools"],
        ),
        case(
            "check --arch SIX --num-classes 10 --weights {d}/w.safetensors",
            &["--arch", "6 max-pools"],
        ),
        case(
            "train --arch SIX --num-classes 10 --data {d}/data --val-split 10 --epochs 1 --out {d}/new.safetensors",
            &["--arch", "6 max-pools"],
        ),
        case(
            "eval --arch SIX --num-classes 10 --weights {d}/w.safetensors --data {d}/data",
            &["--arch", "6 max-pools"],
        ),
        case(
            "search {d}/budget-pools.toml",
            &["budget-pools.toml", "model.arch", "6 max-pools"],
        ),
        case(
            "submit {d}/budget-pools.toml --db {d}/other.sqlite",
            &["budget-pools.toml", "model.arch", "6 max-pools"],
        ),
        // Zero counts, rates out of range, empty splits.
        case(
            "train A --data {d}/data --val-split 10 --epochs 0 --out {d}/new.safetensors",
            &["--epochs 0: must be at least 1"],
        ),
        case(
            "train A --data {d}/data --val-split 10 --batch-size 0 --out {d}/new.safetensors",
            &["--batch-size 0: must be at least 1"],
        ),
        case(
            "train A --data {d}/data --val-split 10 --subset 0 --out {d}/new.safetensors",
            &["--subset 0: must be at least 1"],
        ),
        case(
            "train A --data {d}/data --val-split 10 --max-steps 0 --out {d}/new.safetensors",
            &["--max-steps 0: must be at least 1"],
        ),
        case(
            "train A --data {d}/data --val-split 10 --eval-every 0 --out {d}/new.safetensors",
            &["--eval-every 0: must be at least 1"],
        ),
        case(
            "train A --data {d}/data --val-split 10 --momentum 9 --out {d}/new.safetensors",
            &["--momentum 9: allowed [0, 1)"],
        ),
        case(
            "train A --data {d}/data --val-split 10 --lr 0 --out {d}/new.safetensors",
            &["--lr 0: allowed > 0"],
        ),
        case(
            "train A --data {d}/data --val-split 10 --lr NaN --out {d}/new.safetensors",
            &["--lr NaN: allowed > 0"],
        ),
        case(
            "train A --data {d}/data --val-split 0 --out {d}/new.safetensors",
            &["--val-split 0: must be at least 1"],
        ),
        case(
            "train A --data {d}/data --val-split 40 --epochs 1 --out {d}/new.safetensors",
            &["--val-split 40: leaves no training images"],
        ),
        case(
            "train --arch cfg_bn:8,M,16,M,32,M --num-classes 5 --data {d}/data --val-split 10 --epochs 1 --out {d}/new.safetensors",
            &[
                "--num-classes 5:",
                "train.bin: record 5: label 5 out of range",
                "label 9",
                "--num-classes 10 or more",
            ],
        ),
        case(
            "eval A --weights {d}/w.safetensors --data {d}/data --batch-size 0",
            &["--batch-size 0: must be at least 1"],
        ),
        case(
            "eval A --weights {d}/w.safetensors --data {d}/data --split val --val-split 0",
            &["--val-split 0: must be at least 1"],
        ),
        case(
            "compress A --weights {d}/w.safetensors --config {d}/c.json --repair 1 --batch-size 0 --out {d}/new.safetensors",
            &["--batch-size 0: must be at least 1"],
        ),
        case(
            "compress A --weights {d}/w.safetensors --config {d}/c.json --repair 1 --out {d}/new.safetensors",
            &["--repair needs the training data"],
        ),
        case(
            "predict A --weights {d}/w.safetensors --data {d}/data --limit 0 --out {d}/new.json",
            &["--limit 0: must be at least 1"],
        ),
        case(
            "recommend pruning A --weights {d}/w.safetensors --ratio 1.5",
            &["--ratio 1.5: allowed [0, 1)"],
        ),
        case(
            "recommend pruning A --weights {d}/w.safetensors --flops-reduction 0.5",
            &["--flops-reduction 0.5: allowed >= 1"],
        ),
        case(
            "recommend pruning A --weights {d}/w.safetensors --ratio 0.5 --max-ratio 1",
            &["--max-ratio 1: allowed [0, 1)"],
        ),
        case(
            "recommend decomposition A --weights {d}/w.safetensors --calibration 2",
            &["--calibration 2: allowed [-1, 1]"],
        ),
        case(
            "fidelity {d}/budget.toml --candidates 0",
            &["--candidates 0: must be at least 1"],
        ),
        case(
            "fidelity {d}/budget.toml --final-epochs 0",
            &["--final-epochs 0: must be at least 1"],
        ),
        case(
            "trials --db {d}/s.sqlite --top 0",
            &["--top 0: must be at least 1"],
        ),
        case(
            "worker --db {d}/s.sqlite --max-trials 0",
            &["--max-trials 0: must be at least 1"],
        ),
        // A layer listed twice in a config.
        case(
            "metrics A --config {d}/dup.json",
            &[
                "dup.json",
                "pruning.ratios",
                "\"features.0\" is listed twice",
            ],
        ),
        case(
            "compress A --weights {d}/w.safetensors --config {d}/dup.json --out {d}/new.safetensors",
            &[
                "dup.json",
                "pruning.ratios",
                "\"features.0\" is listed twice",
            ],
        ),
        // Budgets: no validation images, a target out of reach, a space of another model,
        // an input named like a file the search writes.
        case(
            "search {d}/budget-val0.toml",
            &["budget-val0.toml", "data.val_split = 0: allowed >= 1"],
        ),
        case(
            "submit {d}/budget-val0.toml --db {d}/other.sqlite",
            &["budget-val0.toml", "data.val_split = 0"],
        ),
        case(
            "search {d}/budget-far.toml",
            &[
                "study tiny",
                "objective.target_flops_reduction = 1000",
                "out of reach",
                "reaches",
                "x (",
            ],
        ),
        case(
            "submit {d}/budget-far.toml --db {d}/other.sqlite",
            &[
                "study tiny",
                "objective.target_flops_reduction = 1000",
                "reaches",
            ],
        ),
        case(
            "search {d}/budget-other-space.toml",
            &[
                "space-vgg19.toml",
                "arch = \"vgg19_bn\"",
                "model.arch = \"cfg_bn:8,M,16,M,32,M\"",
            ],
        ),
        case(
            "submit {d}/budget-other-space.toml --db {d}/other.sqlite",
            &["space-vgg19.toml", "arch = \"vgg19_bn\""],
        ),
        case(
            "search {d}/budget-trial-name.toml",
            &["model.weights", "tiny-trial1.safetensors", "study.name"],
        ),
        case(
            "fidelity {d}/budget-far.toml --out {d}/fid",
            &["objective.target_flops_reduction = 1000"],
        ),
    ]
}

#[test]
fn bad_input_is_refused_with_exit_2_naming_the_cause_and_changes_no_file() {
    let dir = fixture();
    let d = dir.path().to_str().unwrap();
    let mut failures = Vec::new();
    for c in cases() {
        // `A` (the tiny architecture) and `SIX` (six pools) expand to their flags.
        let args: Vec<String> = c
            .args
            .split_whitespace()
            .flat_map(|t| match t {
                "A" => A.split(' ').map(String::from).collect::<Vec<_>>(),
                "SIX" => vec![SIX_POOLS.to_string()],
                t => vec![t.replace("{d}", d)],
            })
            .collect();
        let before = snapshot(dir.path());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = rankprune(&refs);
        let err = String::from_utf8_lossy(&o.stderr);
        let missing: Vec<&&str> = c.want.iter().filter(|w| !err.contains(**w)).collect();
        if o.status.code() != Some(2) || !missing.is_empty() {
            failures.push(format!(
                "{}\n  exit {:?}, missing {missing:?}\n  stderr: {}",
                c.args,
                o.status.code(),
                err.trim()
            ));
            continue;
        }
        let after = snapshot(dir.path());
        if after != before {
            let changed: Vec<_> = after
                .keys()
                .chain(before.keys())
                .filter(|k| after.get(*k) != before.get(*k))
                .collect();
            failures.push(format!("{}\n  changed files: {changed:?}", c.args));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn outputs_beside_their_inputs_are_still_written() {
    // The checks refuse only an input: a new name, even a link's neighbour, is fine.
    let dir = fixture();
    let p = |rel: &str| dir.path().join(rel).to_str().unwrap().to_string();
    let o = rankprune(&[
        "export-model",
        "--arch",
        ARCH,
        "--num-classes",
        "10",
        "--weights",
        &p("soft.safetensors"),
        "--out",
        &p("m.onnx"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(Path::new(&p("m.onnx")).is_file());
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}
