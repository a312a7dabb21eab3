//! [`DirLock`]: one writer per directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// File name of the lock inside a locked directory.
pub const LOCK_FILE: &str = ".regioncl.lock";

/// An advisory lock on a directory (`flock` on [`LOCK_FILE`] in it), held while this value
/// lives, so that two programs never write into one directory at once: `regioncl convert` holds
/// it on its output directory. The lock file names its holder (program, pid, host); a second
/// [`acquire`](Self::acquire) fails at once with [`Error::Locked`] quoting it. The lock is
/// released and its file removed on drop; the operating system releases it when its process
/// dies, so a lock file left by a killed run does not block the next one.
///
/// The lock is advisory: it binds programs that take it, and it is as reliable as `flock` on
/// the file system (on NFS, only between processes of one host).
///
/// ```no_run
/// # fn main() -> regioncl_loader::Result<()> {
/// let lock = regioncl_loader::DirLock::acquire("runs/r50", "train")?;
/// // ... write into runs/r50 ...
/// drop(lock);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    /// Holds the lock; closing it releases it.
    _file: File,
}

impl DirLock {
    /// Locks the existing directory `dir` for `program` (a word or two, such as `"convert"`).
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holder when another [`DirLock`] holds it (in this process
    /// or another); [`Error::Io`] when the lock file cannot be created or locked.
    pub fn acquire(dir: impl AsRef<Path>, program: &str) -> Result<DirLock> {
        let path = dir.as_ref().join(LOCK_FILE);
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, "open lock file", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Locked { holder: holder(&mut file), path });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io(&path, "lock", e));
                }
            }
            // A holder that was releasing removed the file after this open: that lock guards
            // nothing any more. Try again on the file the path names now.
            if !same_file(&file, &path) {
                continue;
            }
            let me = format!("regioncl {program}, pid {} on {}\n", std::process::id(), host());
            file.set_len(0)
                .and_then(|()| file.write_all(me.as_bytes()))
                .map_err(|e| Error::io(&path, "write lock file", e))?;
            return Ok(DirLock { path, _file: file });
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Removed while still locked, so that whoever opened it meanwhile sees it gone and
        // retries (see `acquire`). Failing to remove it is harmless: the next holder reuses it.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The holder a lock file names (its first line, at most 200 bytes).
fn holder(file: &mut File) -> String {
    let mut text = Vec::new();
    // The holder writes this line right after locking: it can be missing, not wrong.
    let _ = file.take(200).read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => line.to_string(),
        _ => "another process (it has not said which yet)".to_string(),
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

/// This machine's name, for the lock file.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unnamed host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_naming_the_first_and_a_released_lock_is_taken_again() {
        let dir = std::env::temp_dir().join(format!("regioncl-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = DirLock::acquire(&dir, "convert").unwrap();
        let err = DirLock::acquire(&dir, "train").unwrap_err();
        let message = err.to_string();
        let holder = format!("regioncl convert, pid {} on ", std::process::id());
        assert!(message.contains(&holder), "{message}");
        assert!(message.starts_with(&dir.join(LOCK_FILE).display().to_string()), "{message}");
        drop(first);
        assert!(!dir.join(LOCK_FILE).exists());
        // A lock file left behind by a killed holder is not a lock.
        std::fs::write(dir.join(LOCK_FILE), "regioncl convert, pid 1 on gone\n").unwrap();
        let again = DirLock::acquire(&dir, "train").unwrap();
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert!(text.starts_with("regioncl train, pid "), "{text}");
        drop(again);
        std::fs::remove_dir(&dir).unwrap();
    }
}
