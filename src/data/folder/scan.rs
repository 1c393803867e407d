//! Finding a folder tree's images: torchvision's `ImageFolder` order and labels.
//!
//! Classes are the sorted names of the training split's subfolders, so a PyTorch user's
//! label indices match. Inside a class, folders are walked as `sorted(os.walk(class,
//! followlinks=True))` walks them, with each folder's files sorted: the order of
//! torchvision's `make_dataset`.

use super::super::{DataError, Split};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// File name endings read as images (any case).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The images of one split, in order, with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// The split's folder (`ROOT/train`).
    pub dir: PathBuf,
    pub items: Vec<(PathBuf, u32)>,
    /// Files skipped because their name has no image ending.
    pub skipped: usize,
}

fn error(path: &Path, message: impl Into<String>) -> DataError {
    DataError {
        file: path.display().to_string(),
        message: message.into(),
    }
}

/// The folder of `split` under `root`: `train/`, and `test/` or else `val/`.
pub fn split_dir(root: &Path, split: Split) -> Result<PathBuf, DataError> {
    if !root.is_dir() {
        return Err(error(root, "cannot read: not a folder"));
    }
    let train = root.join("train");
    match split {
        Split::Train if train.is_dir() => Ok(train),
        Split::Train => Err(error(
            &train,
            "cannot read: no such folder (the layout is ROOT/train/CLASS/*.png and ROOT/test/CLASS/*.png)",
        )),
        Split::Test => ["test", "val"]
            .iter()
            .map(|s| root.join(s))
            .find(|d| d.is_dir())
            .ok_or_else(|| {
                error(
                    &root.join("test"),
                    "cannot read: no test/ or val/ folder (the test split)",
                )
            }),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| error(dir, format!("cannot read: {e}")))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(dir, format!("cannot read: {e}")))?;
    entries.sort();
    Ok(entries)
}

/// The class names: the sorted subfolders of the training split.
pub fn classes(train_dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for path in read_dir_sorted(train_dir)? {
        if path.is_dir() && !is_cache(&path) {
            names.push(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    if names.is_empty() {
        return Err(error(
            train_dir,
            "no class folders: the images must be in one subfolder per class (ImageFolder layout)",
        ));
    }
    Ok(names)
}

/// rankprune's own cache folder, never a class.
fn is_cache(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == super::cache::DIR)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Every image under `class_dir`, following links, in torchvision's order; a folder met
/// twice on one path down (a symlink loop) is an error.
fn class_images(class_dir: &Path, skipped: &mut usize) -> Result<Vec<PathBuf>, DataError> {
    // (folder path, its sorted image files), sorted by path as Python sorts os.walk.
    let mut folders: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    let mut stack = vec![(class_dir.to_path_buf(), Vec::<PathBuf>::new())];
    while let Some((dir, ancestors)) = stack.pop() {
        let real = dir
            .canonicalize()
            .map_err(|e| error(&dir, format!("cannot read: {e}")))?;
        if ancestors.contains(&real) {
            return Err(error(
                &dir,
                format!("symlink loop: it leads back to {}", real.display()),
            ));
        }
        let mut files = Vec::new();
        for path in read_dir_sorted(&dir)? {
            let meta =
                std::fs::metadata(&path).map_err(|e| error(&path, format!("cannot read: {e}")))?;
            if meta.is_dir() {
                let mut down = ancestors.clone();
                down.push(real.clone());
                stack.push((path, down));
            } else if is_image(&path) {
                files.push(path);
            } else {
                *skipped += 1;
            }
        }
        folders.push((dir, files));
    }
    folders.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
    Ok(folders.into_iter().flat_map(|(_, f)| f).collect())
}

/// The images of `split` under `root`, labelled by `classes` (the training split's).
pub fn scan(root: &Path, split: Split, classes: &[String]) -> Result<Tree, DataError> {
    let dir = split_dir(root, split)?;
    let known: HashSet<&str> = classes.iter().map(String::as_str).collect();
    let mut tree = Tree {
        dir: dir.clone(),
        items: Vec::new(),
        skipped: 0,
    };
    for path in read_dir_sorted(&dir)? {
        if !path.is_dir() || is_cache(&path) {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !known.contains(name.as_ref()) {
            return Err(error(
                &path,
                format!(
                    "class {name:?} is not among the training split's classes ({} of them)",
                    classes.len()
                ),
            ));
        }
        let label = classes.iter().position(|c| *c == name).expect("known") as u32;
        let images = class_images(&path, &mut tree.skipped)?;
        if images.is_empty() {
            return Err(error(
                &path,
                format!("empty class folder: no {} files", EXTENSIONS.join("/")),
            ));
        }
        tree.items.extend(images.into_iter().map(|p| (p, label)));
    }
    if tree.items.is_empty() {
        return Err(error(&dir, "no images"));
    }
    Ok(tree)
}
