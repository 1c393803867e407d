//! The identity of a study's inputs: the SHA-256 (FIPS 180-4, RustCrypto's `sha2`) of
//! its base weights and of the training-data files its trials read. The controller
//! records it when the study starts; a worker process checks its own files against it
//! before it runs a trial, so a worker that reaches different files is refused instead
//! of scoring trials on another model.

use crate::budget::Budget;
use crate::data::Split;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each input's role (`model.weights`, `data/<file name>`) with its path and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub files: BTreeMap<String, FileDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: PathBuf,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// Hex SHA-256 of a file's bytes, read in a stream.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::BadInput(format!("{}: cannot read: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| Error::BadInput(format!("{}: cannot read: {e}", path.display())))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Identity {
    /// The digests of the budget's base weights and training files.
    pub fn of(budget: &Budget) -> Result<Self> {
        let mut files = BTreeMap::new();
        let mut add = |role: String, path: &Path| -> Result<()> {
            let sha256 = sha256_file(path)?;
            files.insert(
                role,
                FileDigest {
                    path: path.to_path_buf(),
                    sha256,
                },
            );
            Ok(())
        };
        add("model.weights".into(), &budget.model.weights)?;
        let data = budget
            .source()
            .files(Split::Train)
            .map_err(|e| Error::BadInput(format!("data: {e}")))?;
        for path in data {
            // Relative to the data folder: a class folder's files share names.
            let name = path
                .strip_prefix(&budget.data.dir)
                .unwrap_or(&path)
                .to_string_lossy();
            add(format!("data/{name}"), &path)?;
        }
        Ok(Self { files })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an identity serializes")
    }

    /// Refuses `self` (a worker's files) unless every file the study recorded is here
    /// with the same digest; the error names each file that differs.
    pub fn check_against(&self, recorded: &str, study: &str) -> Result<()> {
        let recorded: Identity = serde_json::from_str(recorded).map_err(|e| {
            Error::Failure(format!(
                "study {study}: its stored identity is unreadable: {e}"
            ))
        })?;
        let mut wrong = Vec::new();
        for (role, want) in &recorded.files {
            match self.files.get(role) {
                Some(have) if have.sha256 == want.sha256 => {}
                Some(have) => wrong.push(format!(
                    "{role} {} has SHA-256 {} here; the study started with {} (from {})",
                    have.path.display(),
                    &have.sha256[..16],
                    &want.sha256[..16],
                    want.path.display()
                )),
                None => wrong.push(format!(
                    "{role} ({}) is not among this worker's files",
                    want.path.display()
                )),
            }
        }
        if wrong.is_empty() {
            return Ok(());
        }
        Err(Error::BadInput(format!(
            "study {study}: this worker's files are not the study's, so it refuses its trials: {}. \
             Workers must read the very files the study was started with (e.g. on a shared filesystem)",
            wrong.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_fips_180_example() {
        // FIPS 180-2, appendix B.1: SHA-256("abc").
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_changed_file_is_named_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        std::fs::write(&path, b"weights one").unwrap();
        let digest = |p: &Path| Identity {
            files: BTreeMap::from([(
                "model.weights".to_string(),
                FileDigest {
                    path: p.to_path_buf(),
                    sha256: sha256_file(p).unwrap(),
                },
            )]),
        };
        let recorded = digest(&path).to_json();
        assert!(digest(&path).check_against(&recorded, "s").is_ok());
        std::fs::write(&path, b"weights two").unwrap();
        let e = digest(&path)
            .check_against(&recorded, "s")
            .unwrap_err()
            .to_string();
        assert!(e.contains("study s") && e.contains("model.weights"), "{e}");
        assert!(e.contains("w.safetensors"), "{e}");
        let none = Identity {
            files: BTreeMap::new(),
        };
        assert!(none.check_against(&recorded, "s").is_err());
    }
}
