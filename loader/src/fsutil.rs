//! Files as the loader reads and writes them: only regular files are read, and never past a
//! limit; files are published atomically (temporary file, fsync, rename, fsync of the directory);
//! a directory being written is locked ([`DirLock`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of the temporary files the loader writes before renaming them into place. A temporary
/// file never has the name of anything else, so cleaning up never touches another program's
/// files.
pub(crate) const TMP_PREFIX: &str = ".regioncl-tmp-";

/// The temporary name a file is written under before it is renamed to `path`: [`TMP_PREFIX`] +
/// its name, in the same directory.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(TMP_PREFIX);
    name.push(path.file_name().unwrap_or_default());
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

/// Writes `bytes` to `path` atomically, as every file of a dataset is written: a reader sees the
/// old file or the whole new one, never a part, and a file `path` names (or links to) is
/// replaced, never written through. The bytes go to a temporary file in the same directory
/// (named `.regioncl-tmp-` + the file name), which is fsynced and renamed to `path`; then the
/// directory is fsynced.
///
/// # Errors
/// [`Error::Io`] naming the step that failed; the temporary file is then removed.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        file.write_all(bytes).map_err(|e| Error::io(&tmp, "write", e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, "fsync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename", e))
    })();
    if result.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path)
}

/// Opens `path` for reading if it is a regular file (after following symlinks), and returns it
/// with its length. The open does not block: a FIFO, a device or a socket is refused before a
/// byte is read, so that a FIFO cannot hang the reader and `/dev/zero` cannot fill memory.
///
/// # Errors
/// [`Error::Io`] with `action`, for an OS error or a file that is not a regular file.
pub(crate) fn open_regular(path: &Path, action: &'static str) -> Result<(File, u64)> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading blocks until a writer comes, unless non-blocking. The flag
        // changes nothing for a regular file.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| Error::io(path, action, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, action, e))?;
    if !meta.is_file() {
        let kind = file_kind(&meta.file_type());
        let source =
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{kind}, not a file"));
        return Err(Error::io(path, action, source));
    }
    Ok((file, meta.len()))
}

/// Reads the regular file `path` whole, refusing one longer than `max` bytes (`what` names the
/// limit in the error) before allocating for it.
///
/// # Errors
/// As [`open_regular`]; [`Error::Limit`] for a file over `max` bytes (also one that grew past
/// it while being read).
pub(crate) fn read_regular(
    path: &Path,
    action: &'static str,
    what: &'static str,
    max: u64,
) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path, action)?;
    let limit = |value| Error::Limit { path: path.into(), what, value, max };
    if len > max {
        return Err(limit(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, action, e))?;
    if bytes.len() as u64 > max {
        return Err(limit(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, for messages.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() { "a directory" } else { "not a regular file" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_carry_the_prefix() {
        assert_eq!(
            tmp_path(Path::new("out/shard-00001.rcl")),
            Path::new("out/.regioncl-tmp-shard-00001.rcl")
        );
        assert_eq!(tmp_path(Path::new("r.jpg")), Path::new(".regioncl-tmp-r.jpg"));
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_refused_unread() {
        let err = read_regular(Path::new("/dev/zero"), "read", "file size", 1 << 30).unwrap_err();
        assert!(err.to_string().contains("/dev/zero: read"), "{err}");
        let Error::Io { source, .. } = &err else { panic!("{err:?}") };
        assert_eq!(source.to_string(), "a character device, not a file");
        let err = read_regular(Path::new("/"), "read", "file size", 10).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.to_string().contains("a directory")),
            "{err:?}"
        );
    }
}
