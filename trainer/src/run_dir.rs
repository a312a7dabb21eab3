//! A run directory belongs to one run. While a run trains, it holds an advisory lock on the
//! directory ([`regioncl_loader::DirLock`]), so a second training into it fails at once, naming
//! the first (pid and host). A directory that already holds something is only written into when
//! the run resumes it ([`RunStart::Resume`]) or replaces it ([`RunStart::Overwrite`]); a new run
//! ([`RunStart::New`]) refuses it, so two runs are never mixed.

use std::path::Path;

use regioncl_loader::{DirLock, LOCK_FILE};

use crate::error::{Error, Result};

/// What a run does with its run directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunStart {
    /// A new run: the directory must be empty or absent.
    #[default]
    New,
    /// Continue the run in the directory from its newest intact checkpoint (from step 0 when it
    /// has none).
    Resume,
    /// Replace the run in the directory: what regioncl wrote there (config.toml, metrics.jsonl,
    /// checkpoints, backbone.safetensors, plots) is deleted first; other files are left alone.
    Overwrite,
}

/// What a run writes into its directory.
pub const RUN_ENTRIES: [&str; 6] = [
    "checkpoints",
    "metrics.jsonl",
    "metrics.jsonl.tmp",
    "config.toml",
    "backbone.safetensors",
    "plots",
];

/// A run directory, locked for as long as this lives.
#[derive(Debug)]
pub(crate) struct RunDir {
    _lock: DirLock,
}

impl RunDir {
    /// Creates (if needed) and locks `path`, then applies `start`.
    ///
    /// # Errors
    /// [`Error::Loader`] (`regioncl_loader::Error::Locked`) naming the process that holds the
    /// directory; [`Error::RunDir`] when a
    /// new run finds it in use; I/O failures.
    pub(crate) fn open(path: &Path, start: RunStart) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, "create", e))?;
        let lock = DirLock::acquire(path, "train")?;
        let mut held = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, "read_dir", e))? {
            let name = entry.map_err(|e| Error::io(path, "read_dir", e))?.file_name();
            if name != LOCK_FILE {
                held.push(name.to_string_lossy().into_owned());
            }
        }
        held.sort();
        match start {
            RunStart::New if !held.is_empty() => {
                let shown = held.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
                let more = if held.len() > 4 { ", ..." } else { "" };
                return Err(Error::RunDir {
                    path: path.to_path_buf(),
                    message: format!(
                        "not empty ({shown}{more}): resume the run it holds or overwrite it \
                         (regioncl train --resume | --overwrite), or choose another directory"
                    ),
                });
            }
            RunStart::Overwrite => {
                for name in RUN_ENTRIES.iter().filter(|n| held.iter().any(|h| h == *n)) {
                    let p = path.join(name);
                    let removed = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    removed.map_err(|e| Error::io(&p, "remove", e))?;
                }
            }
            _ => {}
        }
        Ok(Self { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("regioncl-rundir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    /// A new run refuses a directory holding anything; a resume keeps it; an overwrite deletes
    /// what regioncl wrote and nothing else.
    #[test]
    fn existing_run_dir_is_refused_kept_or_overwritten() {
        let dir = temp("modes");
        drop(RunDir::open(&dir, RunStart::New).unwrap()); // created, empty: fine
        drop(RunDir::open(&dir, RunStart::New).unwrap()); // only the lock file: still empty
        std::fs::create_dir_all(dir.join("checkpoints/step-00000003")).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = RunDir::open(&dir, RunStart::New).unwrap_err();
        assert!(matches!(err, Error::RunDir { .. }), "{err}");
        assert!(err.to_string().contains("checkpoints, metrics.jsonl, notes.txt"), "{err}");
        assert!(dir.join("metrics.jsonl").is_file(), "a refusal deletes nothing");
        drop(RunDir::open(&dir, RunStart::Resume).unwrap());
        assert!(dir.join("checkpoints/step-00000003").is_dir());
        drop(RunDir::open(&dir, RunStart::Overwrite).unwrap());
        assert!(!dir.join("checkpoints").exists() && !dir.join("metrics.jsonl").exists());
        assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// While one holder lives, a second open fails naming it, whatever the start mode.
    #[test]
    fn locked_run_dir_names_the_holder() {
        let dir = temp("lock");
        let first = RunDir::open(&dir, RunStart::New).unwrap();
        let err = RunDir::open(&dir, RunStart::Resume).unwrap_err();
        assert!(matches!(err, Error::Loader(regioncl_loader::Error::Locked { .. })), "{err}");
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        drop(RunDir::open(&dir, RunStart::Resume).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
