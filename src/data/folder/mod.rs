//! Class folders of PNG and JPEG files (torchvision's `ImageFolder` layout):
//! `ROOT/train/CLASS/*.png` and `ROOT/test/CLASS/*.png` (or `val/`); validation images
//! are held out of `train/`.
//!
//! Each image is decoded once, converted to RGB, resized (shorter side, when asked) and
//! centre-cropped to the model's input side: `convert("RGB")`, `Resize(resize)`,
//! `CenterCrop(side)`. The prepared images are cached beside the data ([`cache`]);
//! training then augments them as the reference does (pad 4, crop, flip). Images are
//! normalised with the training split's own per-channel mean and std, computed once and
//! kept in its cache, unless the user gives them.

pub mod cache;
pub mod prepare;
pub mod scan;

use super::augment::Normalization;
use super::{DataError, ImageSet, Split};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// How a folder's images become the model's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FolderOptions {
    /// Side of the square input the model takes.
    pub side: usize,
    /// Shorter side the images are resized to before the centre crop; `None` = no
    /// resize (then every image must have the same size).
    pub resize: Option<usize>,
    /// Statistics to normalise with; `None` = the training split's own.
    pub norm: Option<Normalization>,
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// The image files of `split` under `root`, in order.
pub fn files(root: &Path, split: Split) -> Result<Vec<std::path::PathBuf>, DataError> {
    let classes = scan::classes(&scan::split_dir(root, Split::Train)?)?;
    Ok(scan::scan(root, split, &classes)?
        .items
        .into_iter()
        .map(|(p, _)| p)
        .collect())
}

/// Every image of `split` under `root`, prepared as `opts` says; labels must be below
/// `num_classes`.
pub fn load(
    root: &Path,
    split: Split,
    opts: &FolderOptions,
    num_classes: usize,
) -> Result<ImageSet, DataError> {
    let (header, pixels) = prepared(root, split, opts, num_classes, true)?;
    let norm = match (opts.norm, split) {
        (Some(n), _) => n,
        (None, Split::Train) => stats_norm(&header),
        (None, Split::Test) => {
            stats_norm(&prepared(root, Split::Train, opts, num_classes, false)?.0)
        }
    };
    Ok(ImageSet {
        pixels,
        labels: header.labels,
        norm,
        side: opts.side,
    })
}

/// The training split's statistics as a normalisation.
fn stats_norm(h: &cache::Header) -> Normalization {
    Normalization {
        mean: h.mean.map(|m| m as f32),
        std: h.std.map(|s| s.max(1e-6) as f32),
    }
}

/// The cache header of `split` (and its pixels when `pixels_too`), from the cache when
/// it is fresh, else decoded now and cached.
pub fn prepared(
    root: &Path,
    split: Split,
    opts: &FolderOptions,
    num_classes: usize,
    pixels_too: bool,
) -> Result<(cache::Header, Vec<u8>), DataError> {
    let train_dir = scan::split_dir(root, Split::Train)?;
    let classes = scan::classes(&train_dir)?;
    if classes.len() > num_classes {
        return Err(DataError {
            file: train_dir.display().to_string(),
            message: format!(
                "{} class folders, but the model has {num_classes} classes: give --num-classes {} (model.num_classes)",
                classes.len(),
                classes.len()
            ),
        });
    }
    let tree = scan::scan(root, split, &classes)?;
    if tree.skipped > 0 {
        tracing::warn!(folder = %tree.dir.display(), skipped = tree.skipped, "files without a .png/.jpg/.jpeg ending were skipped");
    }
    let fingerprint = cache::fingerprint(root, &tree.items, opts.side, opts.resize)?;
    let path = cache::path(root, split_name(split), opts.side, opts.resize);
    if let Some(hit) = cache::read(&path, &fingerprint, pixels_too) {
        tracing::debug!(cache = %path.display(), "decoded images from the cache");
        return Ok(hit);
    }
    let (header, pixels) = decode_all(&tree, classes, fingerprint, opts)?;
    if let Err(e) = cache::write(&path, &header, &pixels) {
        tracing::warn!(cache = %path.display(), error = %e, "cannot write the image cache: images will be decoded again next time");
    }
    Ok((header, pixels))
}

/// Decodes and prepares every image of `tree` on all cores, with a progress bar.
fn decode_all(
    tree: &scan::Tree,
    classes: Vec<String>,
    fingerprint: String,
    opts: &FolderOptions,
) -> Result<(cache::Header, Vec<u8>), DataError> {
    let bar = ProgressBar::new(tree.items.len() as u64).with_style(
        ProgressStyle::with_template(
            "decoding {prefix} {bar:30} {pos}/{len} images ({per_sec}, {eta})",
        )
        .expect("a valid template"),
    );
    bar.set_prefix(tree.dir.display().to_string());
    let prepared: Vec<Result<prepare::Prepared, String>> = tree
        .items
        .par_iter()
        .map(|(path, _)| {
            let p = prepare::prepare(path, opts.side, opts.resize);
            bar.inc(1);
            p
        })
        .collect();
    bar.finish_and_clear();
    let image_bytes = 3 * opts.side * opts.side;
    let mut pixels = Vec::with_capacity(tree.items.len() * image_bytes);
    let mut sizes = BTreeMap::new();
    let mut first: Option<(&Path, (usize, usize))> = None;
    for ((path, _), p) in tree.items.iter().zip(prepared) {
        let p = p.map_err(|message| DataError {
            file: path.display().to_string(),
            message,
        })?;
        match first {
            None => first = Some((path, p.size)),
            Some((f, size)) if opts.resize.is_none() && size != p.size => {
                return Err(DataError {
                    file: path.display().to_string(),
                    message: format!(
                        "is {}x{}, but {} is {}x{}: images of mixed sizes need a resize (--resize, data.resize)",
                        p.size.0,
                        p.size.1,
                        f.display(),
                        size.0,
                        size.1
                    ),
                });
            }
            _ => {}
        }
        *sizes
            .entry(format!("{}x{}", p.size.0, p.size.1))
            .or_insert(0) += 1;
        pixels.extend_from_slice(&p.pixels);
    }
    let (mean, std) = channel_stats(&pixels, opts.side);
    let header = cache::Header {
        fingerprint,
        side: opts.side,
        resize: opts.resize,
        classes,
        labels: tree.items.iter().map(|(_, l)| *l).collect(),
        sizes,
        mean,
        std,
    };
    Ok((header, pixels))
}

/// Per-channel mean and (population) std of CHW images' pixels scaled to [0, 1].
pub fn channel_stats(pixels: &[u8], side: usize) -> ([f64; 3], [f64; 3]) {
    let plane = side * side;
    let mut sum = [0u64; 3];
    let mut sq = [0u64; 3];
    for img in pixels.chunks_exact(3 * plane) {
        for c in 0..3 {
            for &v in &img[c * plane..(c + 1) * plane] {
                sum[c] += u64::from(v);
                sq[c] += u64::from(v) * u64::from(v);
            }
        }
    }
    let n = (pixels.len() / 3).max(1) as f64;
    let mean = [0, 1, 2].map(|c| sum[c] as f64 / n / 255.0);
    let std = [0, 1, 2].map(|c| {
        let m2 = sq[c] as f64 / n / (255.0 * 255.0);
        (m2 - mean[c] * mean[c]).max(0.0).sqrt()
    });
    (mean, std)
}

#[cfg(test)]
mod tests;
