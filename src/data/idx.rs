//! IDX files (the MNIST family's format: Fashion-MNIST, MNIST, KMNIST), plain or gzipped.
//! Format: a big-endian magic `0x0000 TT DD` (TT = 0x08 unsigned bytes, DD = the number of
//! dimensions), DD big-endian u32 sizes, then the values (LeCun et al.'s MNIST page).
//! Grey images of at most 32x32 are zero-padded to 32x32 (centred) and copied to the
//! three planes the CIFAR-style VGG reads.

use super::{DataError, DatasetKind, IMAGE_BYTES, ImageSet, Split};
use std::io::Read;
use std::path::{Path, PathBuf};

const SIDE: usize = 32;
const UBYTE: u8 = 0x08;

fn error(file: &str, message: String) -> DataError {
    DataError {
        file: file.to_string(),
        message,
    }
}

/// The file's bytes, gunzipped when they start with the gzip magic.
pub fn decode(bytes: Vec<u8>, file: &str) -> Result<Vec<u8>, DataError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| error(file, format!("not a valid gzip file: {e}")))?;
    Ok(out)
}

/// The sizes of an unsigned-byte IDX array with `dims` dimensions, after checking the
/// magic and that the file holds exactly that many values.
fn header(bytes: &[u8], dims: usize, file: &str) -> Result<Vec<usize>, DataError> {
    let head = 4 + 4 * dims;
    if bytes.len() < head {
        return Err(error(
            file,
            format!(
                "{} bytes is shorter than the {head}-byte IDX header",
                bytes.len()
            ),
        ));
    }
    let want = [0, 0, UBYTE, dims as u8];
    if bytes[..4] != want {
        return Err(error(
            file,
            format!(
                "magic {:02x?} is not an IDX file of unsigned bytes with {dims} dimensions (expected {want:02x?}): wrong file?",
                &bytes[..4]
            ),
        ));
    }
    let sizes: Vec<usize> = bytes[4..head]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let values: usize = sizes.iter().product();
    if bytes.len() != head + values {
        return Err(error(
            file,
            format!(
                "{} bytes, but the header's sizes {sizes:?} need {} (truncated?)",
                bytes.len(),
                head + values
            ),
        ));
    }
    Ok(sizes)
}

/// Labels of an IDX1 file, each below `num_classes`.
pub fn parse_labels(bytes: &[u8], num_classes: usize, file: &str) -> Result<Vec<u32>, DataError> {
    header(bytes, 1, file)?;
    bytes[8..]
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if usize::from(l) < num_classes {
                Ok(u32::from(l))
            } else {
                Err(error(
                    file,
                    format!("record {i}: label {l} out of range: allowed 0..{num_classes}"),
                ))
            }
        })
        .collect()
}

/// Images of an IDX3 file as 3x32x32 CHW bytes: centred on a black 32x32 canvas, the
/// grey plane copied to R, G and B.
pub fn parse_images(bytes: &[u8], file: &str) -> Result<Vec<u8>, DataError> {
    let sizes = header(bytes, 3, file)?;
    let (n, rows, cols) = (sizes[0], sizes[1], sizes[2]);
    if rows == 0 || cols == 0 || rows > SIDE || cols > SIDE {
        return Err(error(
            file,
            format!("images are {rows}x{cols}: allowed 1..=32 on each side"),
        ));
    }
    let (top, left) = ((SIDE - rows) / 2, (SIDE - cols) / 2);
    let mut out = vec![0u8; n * IMAGE_BYTES];
    for (img, dst) in bytes[16..]
        .chunks_exact(rows * cols)
        .zip(out.chunks_exact_mut(IMAGE_BYTES))
    {
        for plane in dst.chunks_exact_mut(SIDE * SIDE) {
            for (y, row) in img.chunks_exact(cols).enumerate() {
                let at = (top + y) * SIDE + left;
                plane[at..at + cols].copy_from_slice(row);
            }
        }
    }
    Ok(out)
}

/// `dir/name`, or `dir/name.gz` when only that exists.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    match (plain.exists(), gz.exists()) {
        (true, _) => Ok(plain),
        (false, true) => Ok(gz),
        (false, false) => Err(error(
            &plain.display().to_string(),
            format!(
                "cannot read: neither it nor {name}.gz exists (Fashion-MNIST: `apt-get install dataset-fashion-mnist`, then --data /usr/share/datasets/fashion-mnist)"
            ),
        )),
    }
}

fn read(path: &Path) -> Result<(Vec<u8>, String), DataError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| error(&file, format!("cannot read: {e}")))?;
    Ok((decode(bytes, &file)?, file))
}

/// The images and labels files of `split` in `dir`.
pub fn files(dir: &Path, split: Split) -> Result<Vec<PathBuf>, DataError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    Ok(vec![
        find(dir, &format!("{prefix}-images-idx3-ubyte"))?,
        find(dir, &format!("{prefix}-labels-idx1-ubyte"))?,
    ])
}

/// Reads the images and labels of `split` from `dir`.
pub fn load(dir: &Path, split: Split, num_classes: usize) -> Result<ImageSet, DataError> {
    let [images, labels]: [PathBuf; 2] = files(dir, split)?.try_into().expect("two files");
    let (images, image_file) = read(&images)?;
    let (labels, label_file) = read(&labels)?;
    let pixels = parse_images(&images, &image_file)?;
    let labels = parse_labels(&labels, num_classes, &label_file)?;
    if pixels.len() != labels.len() * IMAGE_BYTES {
        return Err(error(
            &label_file,
            format!(
                "{} labels for the {} images of {image_file}",
                labels.len(),
                pixels.len() / IMAGE_BYTES
            ),
        ));
    }
    Ok(ImageSet {
        pixels,
        labels,
        norm: DatasetKind::FashionMnist.normalization(),
        side: super::BINARY_SIDE,
    })
}

/// An IDX file of `sizes` holding `values` (for tests and tools that write small data).
pub fn encode(sizes: &[usize], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UBYTE, sizes.len() as u8];
    for &s in sizes {
        out.extend_from_slice(&(s as u32).to_be_bytes());
    }
    out.extend_from_slice(values);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Two 28x28 images: the first a ramp, the second all 255.
    fn two_images() -> Vec<u8> {
        let mut v: Vec<u8> = (0..784).map(|i| (i % 251) as u8).collect();
        v.extend(std::iter::repeat_n(255u8, 784));
        encode(&[2, 28, 28], &v)
    }

    #[test]
    fn images_are_centred_padded_and_copied_to_three_planes() {
        let px = parse_images(&two_images(), "i").unwrap();
        assert_eq!(px.len(), 2 * IMAGE_BYTES);
        for c in 0..3 {
            let plane = &px[c * 1024..(c + 1) * 1024];
            // Pixel (y, x) of the 28x28 image sits at (y + 2, x + 2).
            for (y, x) in [(0, 0), (5, 17), (27, 27)] {
                assert_eq!(plane[(y + 2) * 32 + x + 2], ((y * 28 + x) % 251) as u8);
            }
            // The 2-pixel frame is black, also around the all-white second image.
            let white = &px[IMAGE_BYTES + c * 1024..IMAGE_BYTES + (c + 1) * 1024];
            for i in [0, 1, 31, 32, 33, 64 + 1, 30 * 32 + 5, 1023] {
                assert_eq!((plane[i], white[i]), (0, 0), "frame pixel {i}");
            }
            assert_eq!(white[2 * 32 + 2], 255);
        }
    }

    #[test]
    fn reads_plain_and_gzipped_files_alike() {
        let dir = tempfile::tempdir().unwrap();
        let labels = encode(&[2], &[3, 9]);
        std::fs::write(dir.path().join("train-images-idx3-ubyte"), two_images()).unwrap();
        std::fs::write(dir.path().join("train-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte.gz"),
            gzip(&two_images()),
        )
        .unwrap();
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), &labels).unwrap();
        let train = load(dir.path(), Split::Train, 10).unwrap();
        let test = load(dir.path(), Split::Test, 10).unwrap();
        assert_eq!(train, test);
        assert_eq!(train.labels, vec![3, 9]);
        assert_eq!(train.norm, DatasetKind::FashionMnist.normalization());
        let via_kind =
            ImageSet::load(dir.path(), DatasetKind::FashionMnist, Split::Test, 10).unwrap();
        assert_eq!(via_kind, test);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file_and_the_problem() {
        let e = |r: Result<Vec<u32>, DataError>| r.unwrap_err().to_string();
        let labels = encode(&[3], &[1, 2, 12]);
        assert_eq!(
            e(parse_labels(&labels, 10, "l")),
            "l: record 2: label 12 out of range: allowed 0..10"
        );
        let short = e(parse_labels(&labels[..9], 10, "l"));
        assert!(
            short.contains("l: 9 bytes, but the header's sizes [3] need 11"),
            "{short}"
        );
        let magic = e(parse_labels(&two_images(), 10, "l"));
        assert!(
            magic.contains("is not an IDX file of unsigned bytes with 1"),
            "{magic}"
        );
        let big = parse_images(&encode(&[1, 33, 2], &[0; 66]), "i").unwrap_err();
        assert!(big.to_string().contains("images are 33x2: allowed 1..=32"));
        let gz = decode(vec![0x1f, 0x8b, 1, 2], "g").unwrap_err();
        assert!(gz.to_string().starts_with("g: not a valid gzip file"));

        let dir = tempfile::tempdir().unwrap();
        let missing = load(dir.path(), Split::Train, 10).unwrap_err().to_string();
        assert!(
            missing.contains("train-images-idx3-ubyte: cannot read: neither it nor"),
            "{missing}"
        );
        std::fs::write(dir.path().join("train-images-idx3-ubyte"), two_images()).unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            encode(&[1], &[0]),
        )
        .unwrap();
        let count = load(dir.path(), Split::Train, 10).unwrap_err().to_string();
        assert!(count.contains("1 labels for the 2 images"), "{count}");
    }

    /// The normalisation constants are Fashion-MNIST's own: recomputed from the Debian
    /// package's training files when they are installed (skipped otherwise).
    #[test]
    fn fashion_mnist_statistics_match_the_installed_data() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if !dir.exists() {
            eprintln!("skipped: dataset-fashion-mnist is not installed");
            return;
        }
        let set = load(dir, Split::Train, 10).unwrap();
        assert_eq!(set.len(), 60_000);
        let n = set.pixels.len() as f64;
        let (sum, sq) = set.pixels.iter().fold((0.0f64, 0.0f64), |(s, q), &p| {
            let v = f64::from(p) / 255.0;
            (s + v, q + v * v)
        });
        let mean = sum / n;
        let std = (sq / n - mean * mean).sqrt();
        let want = DatasetKind::FashionMnist.normalization();
        assert!((mean - f64::from(want.mean[0])).abs() < 1e-4, "mean {mean}");
        assert!((std - f64::from(want.std[0])).abs() < 1e-4, "std {std}");
        let test = load(dir, Split::Test, 10).unwrap();
        assert_eq!(test.len(), 10_000);
    }
}
