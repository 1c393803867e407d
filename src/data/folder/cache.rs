//! Decoded images kept beside the data, so that a search's many fine-tunes decode each
//! file once.
//!
//! One file per split and preparation: `ROOT/.rankprune-cache/train-32.bin` (or
//! `train-64-r72.bin` with a resize). It starts with `MAGIC`, a little-endian u64 length
//! and a JSON [`Header`], then every image's CHW bytes. The header's fingerprint covers
//! each file's path, size, modification time and label and the preparation, so an
//! edited tree is decoded again. The file is written under a temporary name and renamed.

use super::super::DataError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bumped whenever decoding or preparation changes, so old caches are rebuilt.
const MAGIC: &[u8; 8] = b"RPIMG01\n";

/// The cache folder's name under the data root (never read as a class).
pub const DIR: &str = ".rankprune-cache";

/// What a cache file says about its images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub fingerprint: String,
    pub side: usize,
    pub resize: Option<usize>,
    pub classes: Vec<String>,
    pub labels: Vec<u32>,
    /// How many files had each original size (`"28x28"`).
    pub sizes: BTreeMap<String, usize>,
    /// Per-channel mean and std of the prepared images' pixels in [0, 1].
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

/// The cache file of `split_name` prepared at `side` (and `resize`).
pub fn path(root: &Path, split_name: &str, side: usize, resize: Option<usize>) -> PathBuf {
    let resize = resize.map_or(String::new(), |r| format!("-r{r}"));
    root.join(DIR)
        .join(format!("{split_name}-{side}{resize}.bin"))
}

/// The digest of a tree's files (path relative to `root`, size, mtime, label) and the
/// preparation.
pub fn fingerprint(
    root: &Path,
    items: &[(PathBuf, u32)],
    side: usize,
    resize: Option<usize>,
) -> Result<String, DataError> {
    let mut h = Sha256::new();
    h.update(format!("{MAGIC:?} side {side} resize {resize:?}\n"));
    for (path, label) in items {
        let meta = std::fs::metadata(path).map_err(|e| DataError {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let rel = path.strip_prefix(root).unwrap_or(path);
        h.update(format!(
            "{}\t{}\t{mtime}\t{label}\n",
            rel.display(),
            meta.len()
        ));
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The header and pixels stored at `path`, when the file is there, whole and made from
/// a tree with `fingerprint`; `None` otherwise (a stale or damaged cache is rebuilt).
pub fn read(path: &Path, fingerprint: &str, pixels_too: bool) -> Option<(Header, Vec<u8>)> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    if &magic != MAGIC || len > 1 << 32 {
        return None;
    }
    let mut json = vec![0u8; len];
    f.read_exact(&mut json).ok()?;
    let header: Header = serde_json::from_slice(&json).ok()?;
    if header.fingerprint != fingerprint {
        return None;
    }
    if !pixels_too {
        return Some((header, Vec::new()));
    }
    let want = header.labels.len() * 3 * header.side * header.side;
    let mut pixels = Vec::with_capacity(want);
    f.read_to_end(&mut pixels).ok()?;
    (pixels.len() == want).then_some((header, pixels))
}

/// Writes `header` and `pixels` to `path` through a temporary file in the same folder.
pub fn write(path: &Path, header: &Header, pixels: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a cache file has a folder");
    std::fs::create_dir_all(dir)?;
    // A unique temporary name: two processes (or threads) writing the same cache each
    // rename a whole file; the temporary is removed if anything fails.
    let tmp = tempfile::Builder::new().suffix(".tmp").tempfile_in(dir)?;
    let json = serde_json::to_vec(header).expect("a header serializes");
    let mut f = std::io::BufWriter::new(tmp);
    f.write_all(MAGIC)?;
    f.write_all(&(json.len() as u64).to_le_bytes())?;
    f.write_all(&json)?;
    f.write_all(pixels)?;
    let tmp = f.into_inner().map_err(|e| e.into_error())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}
