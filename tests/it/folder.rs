//! Class folders of PNG/JPEG files through the CLI: a 64x64 tree trains, evaluates and
//! searches; bad trees exit 2 naming the path.

use super::common::rankprune;
use super::search::{FAST_PROXY, edit_budget, study, text};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Class c = a bright horizontal band in quarter c of the image, plus noise; PNG for
/// even images, JPEG for odd ones.
fn write_tree(root: &Path, split: &str, per_class: usize, side: u32, seed: u32) {
    for class in 0..4u32 {
        let dir = root.join(split).join(format!("class{class}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class as u32 {
            let img = RgbImage::from_fn(side, side, |x, y| {
                let on = y * 4 / side == class;
                let noise = (x * 7 + y * 13 + i * 31 + seed * 17) % 40;
                let v = if on { 180 } else { 40 } + noise as u8;
                Rgb([v, v, v / 2])
            });
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(dir.join(format!("{i:03}.{ext}"))).unwrap();
        }
    }
}

fn ok(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[test]
fn a_64px_tree_trains_evaluates_and_searches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    write_tree(&root, "train", 12, 64, 1);
    write_tree(&root, "test", 4, 64, 2);
    let data = root.to_str().unwrap();
    let stats = ok(&rankprune(&[
        "data",
        "stats",
        "--dataset",
        "folder",
        "--data",
        data,
        "--input-size",
        "64",
        "--json",
    ]));
    assert_eq!(stats["train"]["images"], 48, "{stats}");
    assert_eq!(stats["test"]["per_class"]["class3"], 4, "{stats}");
    assert_eq!(stats["train"]["sizes"]["64x64"], 48, "{stats}");
    let model = [
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--input-size",
        "64",
    ];
    let folder = ["--dataset", "folder", "--data", data, "--val-split", "8"];
    let w = dir.path().join("w.safetensors");
    let mut args = vec!["train"];
    args.extend(model);
    args.extend(folder);
    args.extend([
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        w.to_str().unwrap(),
    ]);
    args.push("--json");
    let trained = ok(&rankprune(&args));
    assert_eq!(trained["test"]["samples"], 16, "{trained}");
    let share = trained["data_wait"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{trained}");
    let mut args = vec!["eval"];
    args.extend(model);
    args.extend(folder);
    args.extend(["--weights", w.to_str().unwrap(), "--json"]);
    let eval = ok(&rankprune(&args));
    assert_eq!(eval["samples"], 16, "{eval}");
    // The same weights under the 32-pixel model: the classifier's shape differs.
    let o = rankprune(&[
        "eval",
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--dataset",
        "folder",
        "--data",
        data,
        "--weights",
        w.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let s = study(2, FAST_PROXY, "[final]\ntop_k = 1\nepochs = 1");
    write_tree(&s.path("images"), "train", 12, 64, 3);
    write_tree(&s.path("images"), "test", 4, 64, 4);
    edit_budget(
        &s,
        "dataset = \"cifar100\"\ndir = \"data\"\nval_split = 32",
        "dataset = \"folder\"\ndir = \"images\"\nval_split = 8",
    );
    edit_budget(
        &s,
        "num_classes = 4\n",
        "num_classes = 4\ninput_size = 64\n",
    );
    let o = rankprune(&["search", s.budget().to_str().unwrap(), "--json"]);
    let out = ok(&o);
    assert_eq!(out["stopped"], "budget", "{out}");
    assert_eq!(out["counts"]["complete"], 2, "{out}");
    assert!(s.path("images/.rankprune-cache/train-64.bin").is_file());
}

/// `data stats` on `root` exits 2 and names `want` (a path and the problem).
fn refused(root: &Path, want: &[&str]) {
    let o = rankprune(&[
        "data",
        "stats",
        "--dataset",
        "folder",
        "--data",
        root.to_str().unwrap(),
    ]);
    let err = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for w in want {
        assert!(err.contains(w), "{err} lacks {w}");
    }
}

#[test]
fn bad_trees_exit_2_naming_the_path() {
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        write_tree(dir.path(), "train", 2, 8, 1);
        write_tree(dir.path(), "test", 1, 8, 2);
        dir
    };
    let d = fresh();
    std::fs::write(d.path().join("train/class1/001.jpg"), b"not a jpeg").unwrap();
    refused(
        d.path(),
        &["train/class1/001.jpg", "not a readable PNG or JPEG"],
    );
    let d = fresh();
    std::fs::create_dir_all(d.path().join("train/class9")).unwrap();
    refused(d.path(), &["train/class9", "empty class folder"]);
    let d = fresh();
    write_tree(&d.path().join("test/extra"), "", 1, 8, 3);
    refused(
        d.path(),
        &["test/extra", "not among the training split's classes"],
    );
    let d = fresh();
    RgbImage::new(9, 8)
        .save(d.path().join("train/class2/big.png"))
        .unwrap();
    refused(d.path(), &["train/class2/big.png", "is 9x8", "resize"]);
    let d = fresh();
    std::os::unix::fs::symlink("../..", d.path().join("train/class0/loop")).unwrap();
    refused(d.path(), &["train/class0/loop", "symlink loop"]);
    refused(&d.path().join("missing"), &["missing", "not a folder"]);
    // A binary layout at another input size.
    let o = rankprune(&[
        "data",
        "stats",
        "--dataset",
        "cifar100",
        "--data",
        d.path().to_str().unwrap(),
        "--input-size",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("32x32 images, but the model takes 64x64"),
        "{}",
        text(&o)
    );
}
