//! Atomic publication: temporary file, fsync, rename, fsync of the directory.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary name a file is written under before it is renamed to `path`.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Fsyncs the directory holding `path`, so that a rename into it survives a crash.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file = File::open(dir).map_err(|e| Error::io(dir, "open directory", e))?;
    file.sync_all().map_err(|e| Error::io(dir, "fsync directory", e))
}

/// Writes `bytes` to `path` atomically: a reader sees the old file or the whole new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        file.write_all(bytes).map_err(|e| Error::io(&tmp, "write", e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, "fsync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path)
}
