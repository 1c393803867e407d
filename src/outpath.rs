//! Files the user names as outputs: one that is also an input (the same path, a symbolic
//! link or a hard link to it) is refused before any work, and every output is written to
//! a temporary file in its folder and renamed, so a failed write leaves the old file whole.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Refuses `out` (given with `flag`, e.g. `--out`) when it is the same file as one of
/// `inputs` (what the input is, e.g. `--weights`; its path): the same path after
/// canonicalisation, or a symbolic or hard link to it. An `out` that does not exist yet
/// is compared by its folder and name.
pub fn check_output<S: AsRef<str>, P: AsRef<Path>>(
    out: &Path,
    flag: &str,
    inputs: &[(S, P)],
) -> Result<()> {
    for (what, input) in inputs {
        let input = input.as_ref();
        if same_file(out, input) {
            let at = if out == input {
                String::new()
            } else {
                format!(" {}", input.display())
            };
            return Err(Error::BadInput(format!(
                "{flag} {} is the {} file{at}; choose another path",
                out.display(),
                what.as_ref()
            )));
        }
    }
    Ok(())
}

/// The files of a SQLite store, labelled for [`check_output`]: the store and the side
/// files SQLite keeps beside it (none for a PostgreSQL URL). `flag` names the store
/// (`--db`, `study.db`).
pub fn store_inputs(flag: &str, db: &Path) -> Vec<(String, PathBuf)> {
    if crate::store::is_postgres(db) {
        return Vec::new();
    }
    let side = |suffix: &str| {
        let mut s = db.as_os_str().to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    vec![
        (format!("{flag} store"), db.to_path_buf()),
        (format!("{flag} store's write-ahead log"), side("-wal")),
        (format!("{flag} store's shared-memory"), side("-shm")),
        (format!("{flag} store's journal"), side("-journal")),
    ]
}

/// Whether `a` and `b` name the same file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    match (resolved(a), resolved(b)) {
        (Some(ra), Some(rb)) => ra == rb,
        _ => false,
    }
}

/// `p` canonicalised, or (when it does not exist) its canonical folder joined with its
/// name; a symbolic link that leads nowhere resolves to where it leads.
fn resolved(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    if let Ok(target) = std::fs::read_link(p) {
        let target = match p.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
        if target != p {
            return resolved_no_link(&target);
        }
    }
    resolved_no_link(p)
}

fn resolved_no_link(p: &Path) -> Option<PathBuf> {
    let name = p.file_name()?;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(dir).ok()?.join(name))
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and then
/// renamed over `path`: a failed write leaves the old file (if any) whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// [`write_atomic`] with an error that names the file (a failure, exit code 1).
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes)
        .map_err(|e| Error::Failure(format!("{}: cannot write: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(out: &Path, input: &Path) -> Option<String> {
        check_output(out, "--out", &[("--weights", input)])
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn same_path_is_refused_even_spelled_differently() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w.safetensors");
        std::fs::write(&w, b"weights").unwrap();
        let e = refused(&w, &w).unwrap();
        assert!(
            e.contains("--out") && e.contains("is the --weights file"),
            "{e}"
        );
        let dotted = dir.path().join(".").join("w.safetensors");
        assert!(refused(&dotted, &w).is_some());
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(refused(&sub.join("..").join("w.safetensors"), &w).is_some());
    }

    #[test]
    fn symbolic_and_hard_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w.safetensors");
        std::fs::write(&w, b"weights").unwrap();
        let soft = dir.path().join("soft.safetensors");
        std::os::unix::fs::symlink(&w, &soft).unwrap();
        let e = refused(&soft, &w).unwrap();
        assert!(e.contains(&w.display().to_string()), "{e}");
        let hard = dir.path().join("hard.safetensors");
        std::fs::hard_link(&w, &hard).unwrap();
        assert!(refused(&hard, &w).is_some());
        // A link to a file that does not exist yet, named as the input.
        let later = dir.path().join("later.json");
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink("later.json", &dangling).unwrap();
        assert!(refused(&dangling, &later).is_some());
    }

    #[test]
    fn other_and_new_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w.safetensors");
        std::fs::write(&w, b"weights").unwrap();
        let other = dir.path().join("other.safetensors");
        std::fs::write(&other, b"weights").unwrap();
        assert_eq!(refused(&other, &w), None);
        assert_eq!(refused(&dir.path().join("new.safetensors"), &w), None);
        assert_eq!(refused(Path::new("/nonexistent/x"), &w), None);
        // A store's side files count as the store.
        let db = dir.path().join("s.sqlite");
        let wal = dir.path().join("s.sqlite-wal");
        let e = check_output(&wal, "--out", &store_inputs("--db", &db))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--db store's write-ahead log"), "{e}");
        assert!(
            check_output(
                &wal,
                "--out",
                &store_inputs("--db", Path::new("postgres://h/d"))
            )
            .is_ok()
        );
    }

    #[test]
    fn atomic_write_replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        // A write that cannot be renamed into place (a folder is there) keeps the folder
        // and removes its temporary file.
        let d = dir.path().join("folder");
        std::fs::create_dir(&d).unwrap();
        assert!(write_atomic(&d, b"x").is_err());
        assert!(d.is_dir());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
