//! Tiny PNG and JPEG trees made here, read back through the folder reader.

use super::*;
use image::{GrayImage, Luma, Rgb, RgbImage, RgbaImage};
use std::path::PathBuf;

fn opts(side: usize) -> FolderOptions {
    FolderOptions {
        side,
        resize: None,
        norm: None,
    }
}

/// An RGB image whose red channel is `v` everywhere, green the column, blue the row.
fn coded(w: u32, h: u32, v: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([v, x as u8, y as u8]))
}

fn save(img: &RgbImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// train/{cat,ant}/ and test/{ant}/: ant is label 0, cat 1 (sorted names).
fn small_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    save(&coded(4, 4, 10), &r.join("train/cat/b.png"));
    save(&coded(4, 4, 11), &r.join("train/cat/a.png"));
    save(&coded(4, 4, 12), &r.join("train/cat/sub/c.png"));
    save(&coded(4, 4, 20), &r.join("train/ant/x.png"));
    std::fs::write(r.join("train/ant/notes.txt"), "not an image").unwrap();
    save(&coded(4, 4, 30), &r.join("test/ant/y.png"));
    dir
}

fn reds(set: &ImageSet) -> Vec<u8> {
    (0..set.len()).map(|i| set.image(i)[0]).collect()
}

#[test]
fn classes_follow_sorted_folder_names_and_files_torchvisions_walk() {
    let dir = small_tree();
    let set = load(dir.path(), Split::Train, &opts(4), 2).unwrap();
    // ant/x, then cat/a, cat/b, then cat/sub/c (folders sorted by path, files sorted).
    assert_eq!(set.labels, vec![0, 1, 1, 1]);
    assert_eq!(reds(&set), vec![20, 11, 10, 12]);
    assert_eq!(set.side, 4);
    // CHW: green is the column, blue the row.
    let img = set.image(0);
    assert_eq!((img[16 + 3], img[32 + 2 * 4]), (3, 2));
    let test = load(dir.path(), Split::Test, &opts(4), 2).unwrap();
    assert_eq!((test.labels.clone(), reds(&test)), (vec![0], vec![30]));
    // The test split is normalised with the training split's statistics.
    assert_eq!(test.norm, set.norm);
    let files = files(dir.path(), Split::Train).unwrap();
    assert_eq!(files.len(), 4);
    assert!(files[3].ends_with("cat/sub/c.png"), "{files:?}");
}

#[test]
fn statistics_are_the_training_images_own() {
    let dir = small_tree();
    let set = load(dir.path(), Split::Train, &opts(4), 2).unwrap();
    // Red is constant per image: mean of 20, 11, 10, 12 over 255.
    let mean_r = (20.0 + 11.0 + 10.0 + 12.0) / 4.0 / 255.0;
    assert!((f64::from(set.norm.mean[0]) - mean_r).abs() < 1e-6);
    let var_r = [20.0f64, 11.0, 10.0, 12.0]
        .iter()
        .map(|v| (v / 255.0 - mean_r).powi(2))
        .sum::<f64>()
        / 4.0;
    assert!((f64::from(set.norm.std[0]) - var_r.sqrt()).abs() < 1e-6);
    // Green is the column 0..3: mean 1.5 / 255.
    assert!((f64::from(set.norm.mean[1]) - 1.5 / 255.0).abs() < 1e-6);
    let given = Normalization {
        mean: [0.5; 3],
        std: [0.25; 3],
    };
    let o = FolderOptions {
        norm: Some(given),
        ..opts(4)
    };
    assert_eq!(load(dir.path(), Split::Train, &o, 2).unwrap().norm, given);
}

#[test]
fn the_splits_are_train_and_test_or_val() {
    let dir = tempfile::tempdir().unwrap();
    save(&coded(3, 3, 1), &dir.path().join("train/b/1.png"));
    save(&coded(3, 3, 2), &dir.path().join("train/a/1.png"));
    let set = load(dir.path(), Split::Train, &opts(3), 2).unwrap();
    assert_eq!(set.labels, vec![0, 1]);
    let e = load(dir.path(), Split::Test, &opts(3), 2).unwrap_err();
    assert!(e.to_string().contains("no test/ or val/ folder"), "{e}");
    save(&coded(3, 3, 3), &dir.path().join("val/b/1.png"));
    assert_eq!(
        load(dir.path(), Split::Test, &opts(3), 2).unwrap().labels,
        [1]
    );
    // Class folders directly under the root are not a layout.
    let flat = tempfile::tempdir().unwrap();
    save(&coded(3, 3, 1), &flat.path().join("a/1.png"));
    let e = load(flat.path(), Split::Train, &opts(3), 2).unwrap_err();
    assert!(
        e.to_string().contains("train: cannot read: no such folder"),
        "{e}"
    );
}

#[test]
fn grey_rgba_and_jpeg_files_are_read_as_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("train");
    std::fs::create_dir_all(r.join("a")).unwrap();
    GrayImage::from_pixel(2, 2, Luma([77]))
        .save(r.join("a/grey.png"))
        .unwrap();
    RgbaImage::from_pixel(2, 2, image::Rgba([5, 6, 7, 0]))
        .save(r.join("a/rgba.png"))
        .unwrap();
    RgbImage::from_pixel(2, 2, Rgb([200, 100, 50]))
        .save(r.join("a/photo.JPG"))
        .unwrap();
    let set = load(dir.path(), Split::Train, &opts(2), 1).unwrap();
    assert_eq!(set.len(), 3);
    // Sorted: grey.png, photo.JPG, rgba.png.
    assert_eq!(set.image(0), &[77; 12][..]);
    let jpeg = set.image(1);
    for (c, want) in [200i32, 100, 50].into_iter().enumerate() {
        assert!((i32::from(jpeg[c * 4]) - want).abs() <= 3, "{jpeg:?}");
    }
    assert_eq!(set.image(2), &[5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7][..]);
}

#[test]
fn mixed_sizes_need_a_resize() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    save(&coded(8, 6, 1), &r.join("train/a/1.png"));
    save(&coded(6, 6, 2), &r.join("train/a/2.png"));
    let e = load(r, Split::Train, &opts(4), 1).unwrap_err().to_string();
    assert!(
        e.contains("train/a/2.png") && e.contains("is 6x6, but") && e.contains("resize"),
        "{e}"
    );
    let o = FolderOptions {
        resize: Some(4),
        ..opts(4)
    };
    let set = load(r, Split::Train, &o, 1).unwrap();
    assert_eq!(set.len(), 2);
    let stats = prepared(r, Split::Train, &o, 1, false).unwrap().0;
    assert_eq!(
        stats.sizes,
        BTreeMap::from([("6x6".to_string(), 1), ("8x6".to_string(), 1)])
    );
}

#[test]
fn the_cache_serves_later_loads_and_an_edited_tree_is_decoded_again() {
    let dir = small_tree();
    let r = dir.path();
    let first = load(r, Split::Train, &opts(4), 2).unwrap();
    let cache_file = cache::path(r, "train", 4, None);
    assert!(cache_file.is_file());
    let leftovers: Vec<PathBuf> = std::fs::read_dir(cache_file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Garble a file but keep its size and time: a load that decoded it would fail, so
    // a load that succeeds with the same pixels decoded nothing.
    let victim = r.join("train/cat/a.png");
    let (len, mtime) = {
        let m = std::fs::metadata(&victim).unwrap();
        (m.len() as usize, m.modified().unwrap())
    };
    std::fs::write(&victim, vec![b'x'; len]).unwrap();
    let f = std::fs::File::options().write(true).open(&victim).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert_eq!(load(r, Split::Train, &opts(4), 2).unwrap(), first);
    // Another time: the tree changed, it is decoded again, and the bad file is named.
    let f = std::fs::File::options().write(true).open(&victim).unwrap();
    f.set_modified(mtime + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let e = load(r, Split::Train, &opts(4), 2).unwrap_err().to_string();
    assert!(
        e.contains("train/cat/a.png") && e.contains("not a readable"),
        "{e}"
    );
}

#[test]
fn bad_trees_are_errors_naming_the_path() {
    let check = |dir: &tempfile::TempDir, split: Split, classes: usize, want: &[&str]| {
        let e = load(dir.path(), split, &opts(4), classes)
            .unwrap_err()
            .to_string();
        for w in want {
            assert!(e.contains(w), "{e} lacks {w}");
        }
    };
    // An empty class folder.
    let dir = small_tree();
    std::fs::create_dir_all(dir.path().join("train/bee")).unwrap();
    check(&dir, Split::Train, 3, &["train/bee", "empty class folder"]);
    // A class in test that training does not have.
    let dir = small_tree();
    save(&coded(4, 4, 1), &dir.path().join("test/dog/1.png"));
    check(&dir, Split::Test, 2, &["test/dog", "\"dog\" is not among"]);
    // More classes than the model has.
    check(
        &small_tree(),
        Split::Train,
        1,
        &["2 class folders", "--num-classes 2"],
    );
    // A symlink loop inside a class.
    let dir = small_tree();
    std::os::unix::fs::symlink("..", dir.path().join("train/cat/sub/up")).unwrap();
    check(&dir, Split::Train, 2, &["train/cat/sub/up", "symlink loop"]);
    // No class folders at all.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("train")).unwrap();
    check(&dir, Split::Train, 2, &["train", "no class folders"]);
}

#[test]
fn channel_stats_match_a_hand_computation() {
    // Two 1x1 images: R 0 and 255, G 51 both, B 102 and 0.
    let (mean, std) = channel_stats(&[0, 51, 102, 255, 51, 0], 1);
    assert_eq!(mean, [0.5, 0.2, 0.2]);
    assert!((std[0] - 0.5).abs() < 1e-12 && std[1].abs() < 1e-12);
    assert!((std[2] - 0.2).abs() < 1e-12);
}
