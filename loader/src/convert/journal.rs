//! The conversion journal: `convert.journal` in the output directory, JSON lines. The first line
//! names the job (its fingerprint) and the prefix of its temporary files; each further line is a
//! shard that was published (fsynced and renamed) before the line was appended and fsynced. A run
//! that restarts keeps the shards of the journal's complete lines and redoes everything after
//! them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::{TMP_PREFIX, read_regular, sync_parent, write_atomic};
use crate::manifest::ShardInfo;

/// File name of the journal inside the output directory.
pub(crate) const JOURNAL_FILE: &str = "convert.journal";
/// Version 2 names the temporary-file prefix.
const JOURNAL_VERSION: u32 = 2;
/// A journal longer than this is refused unread (a line per shard: a few MiB for ImageNet).
const MAX_JOURNAL_BYTES: u64 = 1 << 30;

#[derive(Serialize, Deserialize)]
struct Head {
    journal: u32,
    fingerprint: String,
    /// The prefix of this job's temporary file names: a resumed run removes those, and only those.
    tmp_prefix: String,
}

/// One published shard and what the conversion had done when it was published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ShardDone {
    pub shard: ShardInfo,
    /// Position (in record order) of the first file not covered by this and earlier shards.
    pub next: u64,
    pub stored: u64,
    pub converted: u64,
    pub resized: u64,
    /// Files skipped since the previous shard: (relative path, reason).
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    /// The prefix of the job's temporary file names.
    pub tmp_prefix: String,
    pub done: Vec<ShardDone>,
    /// Byte length of the head line and of each entry line, to truncate.
    line_ends: Vec<u64>,
}

impl Journal {
    /// Starts a journal for the job `fingerprint` in `dir`.
    pub fn create(dir: &Path, fingerprint: &str) -> Result<Journal> {
        let path = dir.join(JOURNAL_FILE);
        let head = Head {
            journal: JOURNAL_VERSION,
            fingerprint: fingerprint.into(),
            tmp_prefix: TMP_PREFIX.into(),
        };
        let mut line = serde_json::to_string(&head).unwrap_or_default();
        line.push('\n');
        write_atomic(&path, line.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "open journal", e))?;
        Ok(Journal {
            path,
            file,
            tmp_prefix: head.tmp_prefix,
            done: Vec::new(),
            line_ends: vec![line.len() as u64],
        })
    }

    /// Opens the journal in `dir`, if there is one, keeping its complete lines (a line torn by a
    /// crash is cut off).
    ///
    /// # Errors
    /// [`Error::Config`] if it belongs to another job (other input or settings).
    pub fn open(dir: &Path, fingerprint: &str) -> Result<Option<Journal>> {
        let path = dir.join(JOURNAL_FILE);
        let text = match read_regular(&path, "read journal", "journal size", MAX_JOURNAL_BYTES) {
            Ok(t) => t,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut lines = text.split_inclusive(|&b| b == b'\n').filter(|l| l.ends_with(b"\n"));
        let head: Option<Head> = lines.next().and_then(|l| serde_json::from_slice(l).ok());
        let Some(head) = head.filter(|h| h.journal == JOURNAL_VERSION) else {
            return Err(Error::Config(format!(
                "{}: not a conversion journal of this version; remove the output directory",
                path.display()
            )));
        };
        if head.fingerprint != fingerprint {
            return Err(Error::Config(format!(
                "{} holds an unfinished conversion of other input or settings (job {}, this job \
                 {fingerprint}); remove it or convert into another directory",
                dir.display(),
                head.fingerprint
            )));
        }
        let mut end = text.iter().position(|&b| b == b'\n').map_or(0, |p| p as u64 + 1);
        let mut line_ends = vec![end];
        let mut done = Vec::new();
        for line in lines {
            let Ok(entry) = serde_json::from_slice::<ShardDone>(line) else { break };
            end += line.len() as u64;
            line_ends.push(end);
            done.push(entry);
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "open journal", e))?;
        let mut journal = Journal { path, file, tmp_prefix: head.tmp_prefix, done, line_ends };
        if end != text.len() as u64 {
            journal.truncate(journal.done.len())?;
        }
        Ok(Some(journal))
    }

    /// Keeps the first `n` shard entries.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        self.done.truncate(n);
        self.line_ends.truncate(n + 1);
        let end = self.line_ends.last().copied().unwrap_or(0);
        self.file.set_len(end).map_err(|e| Error::io(&self.path, "truncate journal", e))?;
        self.file.sync_all().map_err(|e| Error::io(&self.path, "fsync journal", e))
    }

    /// Appends a published shard, durably.
    pub fn append(&mut self, entry: ShardDone) -> Result<()> {
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| Error::io(&self.path, "append to journal", e))?;
        self.file.sync_data().map_err(|e| Error::io(&self.path, "fsync journal", e))?;
        let end = self.line_ends.last().copied().unwrap_or(0) + line.len() as u64;
        self.line_ends.push(end);
        self.done.push(entry);
        Ok(())
    }

    /// Deletes the journal (the manifest now says the job is complete).
    pub fn remove(self) -> Result<()> {
        drop(self.file);
        std::fs::remove_file(&self.path).map_err(|e| Error::io(&self.path, "remove journal", e))?;
        sync_parent(&self.path)
    }
}
