//! Image data: CIFAR binary, IDX (Fashion-MNIST) and class-folder readers,
//! normalisation and augmentation, and batches prepared on a background thread.

pub mod augment;
pub mod batches;
pub mod folder;
pub mod idx;

pub use folder::FolderOptions;

use augment::Normalization;

use std::path::{Path, PathBuf};

/// Bytes of one 32x32 RGB image (1,024 R, then G, then B, row-major): the size of the
/// binary data sets' images.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Side of the binary data sets' images.
pub const BINARY_SIDE: usize = 32;

/// Which binary layout a data directory holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// `train.bin`, `test.bin`; records of coarse label, fine label, 3,072 pixel bytes.
    Cifar100,
    /// `data_batch_1..5.bin`, `test_batch.bin`; records of label, 3,072 pixel bytes.
    Cifar10,
    /// IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-*` (each
    /// plain or `.gz`): 28x28 grey images, zero-padded to 32x32 and copied to 3 planes.
    FashionMnist,
    /// Class folders of PNG/JPEG files, torchvision's ImageFolder layout:
    /// `train/CLASS/*.png`, `test/CLASS/*.png` (or `val/`).
    Folder,
}

/// Training or test files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl DatasetKind {
    fn label_bytes(self) -> usize {
        match self {
            DatasetKind::Cifar100 => 2,
            DatasetKind::Cifar10 | DatasetKind::FashionMnist | DatasetKind::Folder => 1,
        }
    }

    /// The statistics images of this data set are normalised with.
    pub fn normalization(self) -> Normalization {
        match self {
            DatasetKind::Cifar100 | DatasetKind::Cifar10 | DatasetKind::Folder => augment::CIFAR,
            DatasetKind::FashionMnist => augment::FASHION_MNIST,
        }
    }

    /// Record size in bytes.
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }

    fn files(self, dir: &Path, split: Split) -> Vec<PathBuf> {
        match (self, split) {
            (DatasetKind::Cifar100, Split::Train) => vec![dir.join("train.bin")],
            (DatasetKind::Cifar100, Split::Test) => vec![dir.join("test.bin")],
            (DatasetKind::Cifar10, Split::Train) => (1..=5)
                .map(|i| dir.join(format!("data_batch_{i}.bin")))
                .collect(),
            (DatasetKind::Cifar10, Split::Test) => vec![dir.join("test_batch.bin")],
            (DatasetKind::FashionMnist | DatasetKind::Folder, _) => {
                unreachable!("IDX files and folders are found by their own modules")
            }
        }
    }
}

/// A data file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct DataError {
    pub file: String,
    pub message: String,
}

/// Seed of the validation hold-out shared by every command.
pub const SPLIT_SEED: u64 = 0;

/// Where a command's images come from: the layout, the folder, and how a class
/// folder's images are prepared (`folder` is unused for the binary layouts).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub kind: DatasetKind,
    pub dir: PathBuf,
    pub folder: FolderOptions,
}

impl Source {
    /// A binary data set (32x32 images) in `dir`.
    pub fn binary(kind: DatasetKind, dir: &Path) -> Self {
        Source {
            kind,
            dir: dir.to_path_buf(),
            folder: FolderOptions {
                side: BINARY_SIDE,
                resize: None,
                norm: None,
            },
        }
    }

    /// The files `load` reads for `split`.
    pub fn files(&self, split: Split) -> Result<Vec<PathBuf>, DataError> {
        match self.kind {
            DatasetKind::FashionMnist => idx::files(&self.dir, split),
            DatasetKind::Folder => folder::files(&self.dir, split),
            kind => Ok(kind.files(&self.dir, split)),
        }
    }

    /// Every image of `split`; labels must be below `num_classes`.
    pub fn load(&self, split: Split, num_classes: usize) -> Result<ImageSet, DataError> {
        match self.kind {
            DatasetKind::Folder => folder::load(&self.dir, split, &self.folder, num_classes),
            kind => {
                if self.folder.side != BINARY_SIDE {
                    return Err(DataError {
                        file: self.dir.display().to_string(),
                        message: format!(
                            "the {kind:?} files hold {BINARY_SIDE}x{BINARY_SIDE} images, but the model takes {0}x{0} (input size)",
                            self.folder.side
                        ),
                    });
                }
                ImageSet::load(&self.dir, kind, split, num_classes)
            }
        }
    }

    /// `(train, validation)` from the training split: `val_split` images held out with
    /// [`SPLIT_SEED`], so every command (train, eval, search) holds out the same ones.
    pub fn train_val(
        &self,
        num_classes: usize,
        val_split: usize,
    ) -> Result<(ImageSet, ImageSet), String> {
        let all = self
            .load(Split::Train, num_classes)
            .map_err(|e| e.to_string())?;
        if val_split >= all.len() {
            return Err(format!(
                "a validation split of {val_split} leaves no training images ({} in the training files of {})",
                all.len(),
                self.dir.display()
            ));
        }
        Ok(all.split_off(val_split, SPLIT_SEED))
    }
}

/// Images (uint8, CHW, 3 x side x side) and labels held in memory, with the statistics
/// they are normalised with.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub norm: Normalization,
    /// Height and width of every image.
    pub side: usize,
}

impl Default for ImageSet {
    fn default() -> Self {
        ImageSet {
            pixels: Vec::new(),
            labels: Vec::new(),
            norm: Normalization::default(),
            side: BINARY_SIDE,
        }
    }
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image.
    pub fn image_bytes(&self) -> usize {
        3 * self.side * self.side
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let b = self.image_bytes();
        &self.pixels[i * b..(i + 1) * b]
    }

    /// Parses records of `kind` from `bytes`; `file` names the source in errors. The label
    /// used is the fine label for CIFAR-100; each must be below `num_classes`.
    pub fn parse(
        bytes: &[u8],
        kind: DatasetKind,
        num_classes: usize,
        file: &str,
    ) -> Result<Self, DataError> {
        let rec = kind.record_bytes();
        let err = |message: String| DataError {
            file: file.to_string(),
            message,
        };
        if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
            return Err(err(format!(
                "size {} bytes is not a positive multiple of the {rec}-byte {kind:?} record (truncated or wrong --dataset?)",
                bytes.len()
            )));
        }
        let n = bytes.len() / rec;
        let mut set = ImageSet {
            pixels: Vec::with_capacity(n * IMAGE_BYTES),
            labels: Vec::with_capacity(n),
            norm: kind.normalization(),
            side: BINARY_SIDE,
        };
        for (i, r) in bytes.chunks_exact(rec).enumerate() {
            let label = u32::from(r[kind.label_bytes() - 1]);
            if label as usize >= num_classes {
                return Err(err(format!(
                    "record {i}: label {label} out of range: allowed 0..{num_classes}"
                )));
            }
            set.labels.push(label);
            set.pixels.extend_from_slice(&r[kind.label_bytes()..]);
        }
        Ok(set)
    }

    /// Reads every file of `split` from `dir` (a binary layout: see [`Source::load`]).
    fn load(
        dir: &Path,
        kind: DatasetKind,
        split: Split,
        num_classes: usize,
    ) -> Result<Self, DataError> {
        if kind == DatasetKind::FashionMnist {
            return idx::load(dir, split, num_classes);
        }
        let mut set = ImageSet {
            norm: kind.normalization(),
            ..ImageSet::default()
        };
        for path in kind.files(dir, split) {
            let file = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(|e| DataError {
                file: file.clone(),
                message: format!("cannot read: {e}"),
            })?;
            let part = Self::parse(&bytes, kind, num_classes, &file)?;
            set.pixels.extend(part.pixels);
            set.labels.extend(part.labels);
        }
        Ok(set)
    }

    /// Splits off the last `n` images after a seeded shuffle: `(rest, held_out)`.
    pub fn split_off(&self, n: usize, seed: u64) -> (ImageSet, ImageSet) {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let n = n.min(self.len());
        let pick = |idx: &[usize]| ImageSet {
            pixels: idx
                .iter()
                .flat_map(|&i| self.image(i).iter().copied())
                .collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            norm: self.norm,
            side: self.side,
        };
        let cut = self.len() - n;
        (pick(&order[..cut]), pick(&order[cut..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record100(coarse: u8, fine: u8, fill: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut r = vec![coarse, fine];
        r.extend((0..IMAGE_BYTES).map(fill));
        r
    }

    #[test]
    fn parses_cifar100_records() {
        let mut bytes = record100(3, 7, |i| (i % 251) as u8);
        bytes.extend(record100(0, 2, |i| if i < 1024 { 255 } else { 0 }));
        let set = ImageSet::parse(&bytes, DatasetKind::Cifar100, 10, "t.bin").unwrap();
        assert_eq!(set.labels, vec![7, 2]);
        assert_eq!(set.image(0)[1000], (1000 % 251) as u8);
        // Second image: red plane full, green and blue empty.
        assert_eq!(set.image(1)[1023], 255);
        assert_eq!(set.image(1)[1024], 0);
    }

    #[test]
    fn parses_cifar10_records() {
        let mut bytes = vec![9u8];
        bytes.extend(vec![1u8; IMAGE_BYTES]);
        let set = ImageSet::parse(&bytes, DatasetKind::Cifar10, 10, "b.bin").unwrap();
        assert_eq!(set.labels, vec![9]);
    }

    #[test]
    fn rejects_truncated_and_out_of_range() {
        let bytes = record100(0, 12, |_| 0);
        let e = ImageSet::parse(&bytes, DatasetKind::Cifar100, 10, "t.bin")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.bin: record 0: label 12 out of range: allowed 0..10"),
            "{e}"
        );
        let e = ImageSet::parse(&bytes[..100], DatasetKind::Cifar100, 10, "t.bin")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a positive multiple of the 3074-byte"),
            "{e}"
        );
        let e = ImageSet::load(
            Path::new("/nonexistent"),
            DatasetKind::Cifar10,
            Split::Test,
            10,
        )
        .unwrap_err();
        assert!(e.to_string().contains("test_batch.bin: cannot read"));
    }

    #[test]
    fn split_off_is_seeded_and_disjoint() {
        let bytes: Vec<u8> = (0..10u8)
            .flat_map(|l| record100(0, l, move |_| l))
            .collect();
        let set = ImageSet::parse(&bytes, DatasetKind::Cifar100, 10, "t").unwrap();
        let (a, b) = set.split_off(3, 5);
        assert_eq!((a.len(), b.len()), (7, 3));
        assert_eq!(set.split_off(3, 5), (a.clone(), b.clone()));
        let mut all: Vec<u32> = a.labels.iter().chain(&b.labels).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        // Pixels travel with their labels.
        assert!(
            b.labels
                .iter()
                .enumerate()
                .all(|(i, &l)| b.image(i)[0] == l as u8)
        );
    }
}
