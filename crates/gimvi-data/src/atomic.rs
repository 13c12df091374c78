//! Atomic file output: write to a temporary file beside the target, rename it over the target
//! only once everything is written and synced. A write that fails — or panics — leaves the
//! target as it was (absent, or the previous complete file) and removes the temporary file.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::DataError;

/// Distinguishes temporary files of concurrent writes from one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_error(path: &Path, kind: std::io::ErrorKind, message: String) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(kind, message),
    }
}

/// Removes the temporary file unless the write completed (also when the writer panics).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `path` atomically: `write` fills `.{name}.tmp-{pid}-{n}` in the same folder, which
/// is flushed, synced and renamed over `path` when `write` succeeds, and removed otherwise.
///
/// Refused before anything is created, with a [`DataError::Io`] naming `path`: a target that
/// is a folder, a folder that does not exist, a path without a file name.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    if path.is_dir() {
        return Err(io_error(
            path,
            std::io::ErrorKind::IsADirectory,
            "is a folder; give a file name to write to".into(),
        ));
    }
    let Some(name) = path.file_name() else {
        return Err(io_error(
            path,
            std::io::ErrorKind::InvalidInput,
            "has no file name to write to".into(),
        ));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(io_error(
            path,
            std::io::ErrorKind::NotFound,
            format!("the folder {} does not exist", dir.display()),
        ));
    }
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| {
            io_error(
                path,
                e.kind(),
                format!(
                    "cannot create the temporary file {} to write it: {e}",
                    tmp.display()
                ),
            )
        })?;
    let mut guard = TempGuard {
        path: tmp.clone(),
        armed: true,
    };
    let mut w = BufWriter::with_capacity(1 << 16, file);
    write(&mut w)?;
    let file = w.into_inner().map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(crate::io_err(path))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| {
        io_error(
            path,
            e.kind(),
            format!(
                "cannot move the finished temporary file {} into place: {e}",
                tmp.display()
            ),
        )
    })?;
    guard.armed = false;
    // Make the rename itself durable where the platform allows syncing a folder.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gimvi-atomic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A failure injected after part of the output was written: the existing target is intact
    /// and no temporary file is left; a missing target stays missing.
    #[test]
    fn failure_midway_keeps_the_old_file_and_removes_the_temporary() {
        let dir = scratch("fail");
        let target = dir.join("out.csv");
        std::fs::write(&target, b"old complete content\n").unwrap();
        let err = write_atomic(&target, |w| {
            w.write_all(&[b'x'; 200_000]).unwrap();
            Err(DataError::Format {
                path: target.clone(),
                message: "injected failure".into(),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"old complete content\n".to_vec()
        );
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

        let fresh = dir.join("fresh.csv");
        let _ = write_atomic(&fresh, |w| {
            w.write_all(b"partial").unwrap();
            Err(DataError::Format {
                path: fresh.clone(),
                message: "injected failure".into(),
            })
        });
        assert!(!fresh.exists());
        assert!(leftovers(&dir).is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A writer that panics midway leaves no temporary file and the old target intact.
    #[test]
    fn panic_midway_removes_the_temporary() {
        let dir = scratch("panic");
        let target = dir.join("out.h5ad");
        std::fs::write(&target, b"old").unwrap();
        let r = std::panic::catch_unwind(|| {
            write_atomic(&target, |w| {
                w.write_all(b"partial").unwrap();
                panic!("injected panic");
            })
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old".to_vec());
        assert!(leftovers(&dir).is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Success replaces the old content completely.
    #[test]
    fn success_replaces_the_target() {
        let dir = scratch("ok");
        let target = dir.join("out.csv");
        std::fs::write(&target, b"old old old old").unwrap();
        write_atomic(&target, |w| {
            w.write_all(b"new").map_err(crate::io_err(&target))
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new".to_vec());
        assert!(leftovers(&dir).is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
