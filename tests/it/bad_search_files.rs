//! Bad budget and search-space files: each gives an error naming the file and the key
//! (and the line for syntax and type errors), never a panic; `search` exits with 2.

use crate::common::vgg19_bn;
use rankprune::budget::Budget;
use rankprune::graph::build::of_arch;
use rankprune::search::space::SpaceFile;

const SPACE: &str = r#"
[decomposition]
layers = "all"
rank = "fraction"
min = 0.0
max = 1.0

[pruning]
layers = "all"
min = 0.0
max = 0.9
step = 0.1
"#;

/// Loads `text` as a space file for vgg19_bn (resolving it) and returns the error.
fn space_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("space.toml");
    std::fs::write(&path, text).unwrap();
    let file = path.display().to_string();
    let e = match SpaceFile::load(&path) {
        Err(e) => e.to_string(),
        Ok(s) => s
            .resolve(&of_arch(&vgg19_bn()), None, &file)
            .expect_err("the space should be rejected")
            .to_string(),
    };
    assert!(e.starts_with(&file), "error does not name the file: {e}");
    e
}

#[test]
fn bad_space_files() {
    let cases: &[(&str, &str, &str)] = &[
        ("rank = \"fraction\"", "rank = \"percent\"", "line 4"),
        ("rank = \"fraction\"", "rank = \"percent\"", "absolute"),
        (
            "max = 1.0",
            "max = 1.0\nmx = 2",
            "line 7: unknown field `mx`",
        ),
        (
            "min = 0.0\nmax = 1.0",
            "min = 0.0\nmax = 1.5",
            "fractions of the full rank lie in [0, 1]",
        ),
        (
            "min = 0.0\nmax = 1.0",
            "min = 0.8\nmax = 0.2",
            "need min <= max",
        ),
        (
            "layers = \"all\"\nrank",
            "layers = [\"features.4\"]\nrank",
            "\"features.4\" is not one of features.3",
        ),
        (
            "layers = \"all\"\nrank",
            "layers = []\nrank",
            "decomposition.layers: empty list",
        ),
        (
            "layers = \"all\"\nrank",
            "layers = \"every\"\nrank",
            "allowed \"all\" or a list",
        ),
        (
            "rank = \"fraction\"",
            "rank = \"vbmf\"",
            "needs the VBMF ranks",
        ),
        (
            "step = 0.1",
            "step = 0.0",
            "pruning.step = 0: allowed (0, 1]",
        ),
        ("max = 0.9", "max = 1.0", "allowed 0 <= min <= max < 1"),
        (
            "step = 0.1",
            "step = 0.1\n[pruning.layer.\"features.99\"]\nmax = 0.5",
            "pruning.layer.\"features.99\": not a pruned conv",
        ),
        (
            "max = 1.0\n",
            "max = 1.0\n[decomposition.layer.\"features.0\"]\nmax = 0.5\n",
            "not a decomposed layer",
        ),
        ("min = 0.0\nmax = 1.0", "min = \"low\"\nmax = 1.0", "line 5"),
    ];
    for (from, to, want) in cases {
        assert!(SPACE.contains(from), "case does not apply: {from}");
        let e = space_error(&SPACE.replacen(from, to, 1));
        assert!(e.contains(want), "{from} -> {to}: {e}");
    }
    let e = space_error("arch = \"vgg19_bn\"\n");
    assert!(e.contains("the space is empty"), "{e}");
    let e =
        space_error("[decomposition]\nlayers = \"all\"\nrank = \"absolute\"\nmin = 0\nmax = 8\n");
    assert!(e.contains("absolute ranks are >= 1"), "{e}");
}

const BUDGET: &str = r#"
[study]
name = "s"
db = "s.sqlite"

[model]
arch = "vgg19_bn"
num_classes = 10
weights = "w.safetensors"

[data]
dataset = "cifar100"
dir = "data"

[search]
space = "space.toml"
strategy = "random"

[objective]
kind = "constrained"
target_flops_reduction = 8.0

[limits]
max_trials = 10

[proxy]
steps = 100
early_stop_step = 40
"#;

#[test]
fn bad_budget_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.toml");
    let file = path.display().to_string();
    let cases: &[(&str, &str, &str)] = &[
        (
            "early_stop_step = 40",
            "early_stop_step = 400",
            "proxy.early_stop_step = 400: allowed 1 ..= proxy.steps (100)",
        ),
        ("steps = 100", "steps = 0", "proxy.steps = 0: allowed >= 1"),
        ("[limits]", "[limit]", "line 23"),
        (
            "dataset = \"cifar100\"",
            "dataset = \"imagenet\"",
            "line 12: unknown variant `imagenet`",
        ),
        (
            "kind = \"constrained\"",
            "kind = \"pareto\"\nkind = \"constrained\"",
            "duplicate key",
        ),
        (
            "weights = \"w.safetensors\"",
            "weights = \"w.safetensors\"\ntrain_epochs = 0",
            "model.train_epochs = 0: allowed >= 1",
        ),
        (
            "[proxy]",
            "[workers]\ncpu = 0\n[proxy]",
            "at least one worker",
        ),
        (
            "[study]\nname = \"s\"\n",
            "[study]\n",
            "missing field `name`",
        ),
    ];
    for (from, to, want) in cases {
        assert!(BUDGET.contains(from), "case does not apply: {from}");
        std::fs::write(&path, BUDGET.replacen(from, to, 1)).unwrap();
        let e = Budget::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&file), "{e}");
        assert!(e.contains(want), "{from} -> {to}: {e}");
    }
}

#[test]
fn search_rejects_bad_input_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let budget = dir.path().join("budget.toml");
    let run = |text: &str| {
        std::fs::write(&budget, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_rankprune"))
            .args(["search", budget.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // Missing data folder.
    let o = run(BUDGET);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("data") && err.contains("cannot read"), "{err}");
    // Missing base weights without train_epochs.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    crate::common::write_cifar100(&crate::common::stripes(20, 4, 1), &data.join("train.bin"));
    std::fs::write(dir.path().join("space.toml"), SPACE).unwrap();
    let o = run(&BUDGET.replace("[data]\n", "[data]\nval_split = 4\n"));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no such file") && err.contains("train_epochs"),
        "{err}"
    );
    // Missing space file.
    let o = run(&BUDGET
        .replace("[data]\n", "[data]\nval_split = 4\n")
        .replace("space.toml", "nope.toml"));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.toml: cannot read"));
}
