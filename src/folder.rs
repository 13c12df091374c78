//! Atomic model folders: a model is written into a hidden temporary folder beside the target
//! and put in place only when every file is complete, so an interrupted or failed save leaves
//! either no folder or the previous model exactly as it was.
//!
//! On Linux an existing model folder is replaced with one `renameat2(RENAME_EXCHANGE)` (the
//! new folder and the old one swap names in one step; the old one is then deleted). Elsewhere
//! the old folder is first renamed aside, which leaves a moment in which the target is absent
//! (the previous model is then in `.{name}.old-…` beside it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use gimvi_model::ModelError;

/// Distinguishes temporary folders of concurrent saves from one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The files whose presence marks a folder as a gimvi model folder.
const MODEL_FILES: [&str; 2] = ["config.json", "ensemble.json"];

fn io(path: &Path, kind: std::io::ErrorKind, message: impl Into<String>) -> ModelError {
    ModelError::Io(
        path.display().to_string(),
        std::io::Error::new(kind, message.into()),
    )
}

/// Checks, before any work, that a model can be saved at `dir`: its parent folder exists, and
/// `dir` is absent, an empty folder or a gimvi model folder (which a save replaces). A file, or
/// a folder holding other things, is refused so that a save never deletes a user's data.
pub(crate) fn check_target(dir: &Path) -> Result<(), ModelError> {
    let parent = parent_of(dir)?;
    if !parent.is_dir() {
        return Err(io(
            dir,
            std::io::ErrorKind::NotFound,
            format!("the folder {} does not exist", parent.display()),
        ));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(io(
            dir,
            std::io::ErrorKind::AlreadyExists,
            "is a file; a model is saved as a folder: give a new folder name",
        ));
    }
    if dir.is_dir() && !is_replaceable(dir)? {
        return Err(io(
            dir,
            std::io::ErrorKind::AlreadyExists,
            "is a folder that holds files but no gimvi model (no config.json); a save would \
             replace it: give a new folder name",
        ));
    }
    Ok(())
}

/// [`check_target`], and that a folder can be created beside `dir` (a read-only parent folder
/// is refused here, before a training that would fail only at its end).
pub(crate) fn preflight(dir: &Path) -> Result<(), ModelError> {
    check_target(dir)?;
    let probe = sibling(dir, "probe")?;
    std::fs::create_dir(&probe).map_err(|e| {
        ModelError::Io(
            dir.display().to_string(),
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot write into {}: {e}",
                    parent_of(dir).unwrap_or_default().display()
                ),
            ),
        )
    })?;
    let _ = std::fs::remove_dir(&probe);
    Ok(())
}

/// Whether an existing folder may be replaced: it is empty or holds a saved model.
fn is_replaceable(dir: &Path) -> Result<bool, ModelError> {
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| ModelError::Io(dir.display().to_string(), e))?;
    let empty = entries.next().is_none();
    Ok(empty || MODEL_FILES.iter().any(|f| dir.join(f).is_file()))
}

fn parent_of(dir: &Path) -> Result<PathBuf, ModelError> {
    if dir.file_name().is_none() {
        return Err(io(
            dir,
            std::io::ErrorKind::InvalidInput,
            "has no folder name to save a model under",
        ));
    }
    Ok(match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

/// Removes the temporary folder unless it was put in place (also when the writer panics).
struct TempFolder {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A hidden sibling of `dir`: `.{name}.{tag}-{pid}-{n}`.
fn sibling(dir: &Path, tag: &str) -> Result<PathBuf, ModelError> {
    let parent = parent_of(dir)?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(parent.join(format!(".{name}.{tag}-{}-{n}", std::process::id())))
}

/// Writes the model folder `dir` atomically: `fill` writes every file into a temporary folder
/// beside `dir`, whose files are synced and which then takes `dir`'s place. On failure (or a
/// panic in `fill`) the temporary folder is removed and `dir` is left as it was.
pub(crate) fn write_folder_atomic(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    check_target(dir)?;
    let tmp = sibling(dir, "tmp")?;
    std::fs::create_dir(&tmp).map_err(|e| ModelError::Io(tmp.display().to_string(), e))?;
    let mut guard = TempFolder {
        path: tmp.clone(),
        armed: true,
    };
    fill(&tmp)?;
    sync_tree(&tmp)?;
    if dir.is_dir() {
        replace(&tmp, dir)?;
        // `tmp` now holds the previous model (or, on the fallback path, is gone).
        guard.armed = true;
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| ModelError::Io(dir.display().to_string(), e))?;
        guard.armed = false;
    }
    drop(guard);
    sync_dir(&parent_of(dir)?);
    Ok(())
}

/// Puts the complete folder `new` in place of the existing folder `dir`; afterwards `new` holds
/// the previous content (or does not exist).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn replace(new: &Path, dir: &Path) -> Result<(), ModelError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io(p, std::io::ErrorKind::InvalidInput, "holds a NUL byte"))
    };
    let (from, to) = (c(new)?, c(dir)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call; the call
    // only swaps two directory entries.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // File systems without RENAME_EXCHANGE (EINVAL / ENOSYS): rename aside.
    replace_by_two_renames(new, dir)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn replace(new: &Path, dir: &Path) -> Result<(), ModelError> {
    replace_by_two_renames(new, dir)
}

fn replace_by_two_renames(new: &Path, dir: &Path) -> Result<(), ModelError> {
    let old = sibling(dir, "old")?;
    std::fs::rename(dir, &old).map_err(|e| ModelError::Io(dir.display().to_string(), e))?;
    if let Err(e) = std::fs::rename(new, dir) {
        // Put the previous model back.
        let _ = std::fs::rename(&old, dir);
        return Err(ModelError::Io(dir.display().to_string(), e));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Syncs every file under `dir` (and the folders themselves where the platform allows).
fn sync_tree(dir: &Path) -> Result<(), ModelError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| ModelError::Io(dir.display().to_string(), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| ModelError::Io(dir.display().to_string(), e))?
            .path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| ModelError::Io(path.display().to_string(), e))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> Result<(), ModelError> {
        std::fs::write(dir.join(name), text).map_err(|e| ModelError::Io(name.into(), e))
    }

    fn leftovers(parent: &Path) -> Vec<String> {
        std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn a_new_folder_appears_complete() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("model");
        write_folder_atomic(&dir, |d| {
            write(d, "config.json", "{}")?;
            std::fs::create_dir(d.join("member-1")).unwrap();
            write(&d.join("member-1"), "config.json", "{}")
        })
        .unwrap();
        assert!(dir.join("member-1/config.json").is_file());
        assert!(leftovers(t.path()).is_empty());
    }

    #[test]
    fn a_failed_or_panicking_save_leaves_the_previous_model() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("model");
        write_folder_atomic(&dir, |d| write(d, "config.json", "old")).unwrap();
        let err = write_folder_atomic(&dir, |d| {
            write(d, "config.json", "new")?;
            Err(io(d, std::io::ErrorKind::Other, "disk full (injected)"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("config.json")).unwrap(),
            "old"
        );
        let panicked = std::panic::catch_unwind(|| {
            let _ = write_folder_atomic(&dir, |d| {
                write(d, "config.json", "new").unwrap();
                panic!("injected panic");
            });
        });
        assert!(panicked.is_err());
        assert_eq!(
            std::fs::read_to_string(dir.join("config.json")).unwrap(),
            "old"
        );
        assert!(leftovers(t.path()).is_empty(), "{:?}", leftovers(t.path()));
        // A successful save replaces it and removes the previous one.
        write_folder_atomic(&dir, |d| write(d, "config.json", "new")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("config.json")).unwrap(),
            "new"
        );
        assert!(leftovers(t.path()).is_empty(), "{:?}", leftovers(t.path()));
        // The two-rename fallback does the same.
        let tmp = t.path().join("next");
        std::fs::create_dir(&tmp).unwrap();
        write(&tmp, "config.json", "newer").unwrap();
        replace_by_two_renames(&tmp, &dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("config.json")).unwrap(),
            "newer"
        );
        assert!(leftovers(t.path()).is_empty(), "{:?}", leftovers(t.path()));
    }

    #[test]
    fn targets_that_are_not_model_folders_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("file");
        std::fs::write(&file, "user data").unwrap();
        let err = check_target(&file).unwrap_err().to_string();
        assert!(err.contains("is a file"), "{err}");
        let data = t.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("cells.h5ad"), "user data").unwrap();
        let err = write_folder_atomic(&data, |d| write(d, "config.json", "{}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no gimvi model"), "{err}");
        assert!(data.join("cells.h5ad").is_file());
        let err = check_target(&t.path().join("missing/model"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        let empty = t.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        check_target(&empty).unwrap();
    }
}
