//! Filling shards in record order, and logging each finished one in the journal.

use std::path::{Path, PathBuf};

use crate::convert::Skipped;
use crate::convert::journal::{Journal, ShardDone};
use crate::convert::transcode::{Action, Prepared};
use crate::error::Result;
use crate::fsutil::sync_parent;
use crate::manifest::ShardInfo;
use crate::shard::format::ENTRY_LEN;
use crate::shard::writer::ShardWriter;

/// File name of shard `k` of a conversion.
fn shard_name(k: usize) -> String {
    format!("shard-{k:05}.rcl")
}

/// `k` if `name` is [`shard_name`]`(k)`.
pub(crate) fn shard_number(name: &str) -> Option<usize> {
    name.strip_prefix("shard-")?.strip_suffix(".rcl")?.parse().ok()
}

/// Fills shards in record order and logs each finished one in the journal.
pub(crate) struct Assembler<'j> {
    out: PathBuf,
    shard_size: u64,
    journal: &'j mut Journal,
    writer: Option<ShardWriter>,
    pub shards: Vec<ShardInfo>,
    /// First position not yet covered by a published shard.
    pub next: u64,
    pub skipped: Vec<Skipped>,
    /// How many entries of `skipped` are logged already.
    skipped_logged: usize,
    /// Bytes of the published shards.
    published: u64,
    pub stored: u64,
    pub converted: u64,
    pub resized: u64,
    /// Counts of the open shard.
    open: (u64, u64, u64),
}

impl<'j> Assembler<'j> {
    pub fn new(out: &Path, shard_size: u64, journal: &'j mut Journal) -> Self {
        let mut asm = Assembler {
            out: out.to_path_buf(),
            shard_size,
            writer: None,
            shards: Vec::new(),
            next: 0,
            skipped: Vec::new(),
            skipped_logged: 0,
            published: 0,
            stored: 0,
            converted: 0,
            resized: 0,
            open: (0, 0, 0),
            journal,
        };
        for done in &asm.journal.done {
            asm.shards.push(done.shard.clone());
            asm.next = done.next;
            asm.published += done.shard.num_bytes;
            asm.stored += done.stored;
            asm.converted += done.converted;
            asm.resized += done.resized;
            asm.skipped.extend(
                done.skipped.iter().map(|(p, r)| Skipped { path: p.clone(), reason: r.clone() }),
            );
        }
        asm.skipped_logged = asm.skipped.len();
        asm
    }

    /// Bytes written so far: published shards and the open one.
    pub fn bytes(&self) -> u64 {
        self.published + self.writer.as_ref().map_or(0, |w| w.file_len())
    }

    pub fn push(&mut self, pos: u64, label: u32, p: Prepared) -> Result<()> {
        let len = p.bytes.len() as u64;
        let full = self
            .writer
            .as_ref()
            .is_some_and(|w| !w.is_empty() && w.file_len() + len + ENTRY_LEN > self.shard_size);
        if full {
            self.close_shard(pos)?;
        }
        if self.writer.is_none() {
            self.writer = Some(ShardWriter::create(self.out.join(shard_name(self.shards.len())))?);
        }
        if let Some(w) = &mut self.writer {
            w.push(&p.bytes, label, p.width, p.height)?;
        }
        match p.action {
            Action::Stored => self.open.0 += 1,
            Action::Converted => self.open.1 += 1,
            Action::Resized => self.open.2 += 1,
        }
        Ok(())
    }

    /// Publishes the open shard (if any) and logs it; `next` is the first position after it.
    pub fn close_shard(&mut self, next: u64) -> Result<()> {
        let Some(writer) = self.writer.take() else { return Ok(()) };
        let info = writer.finish()?;
        let (stored, converted, resized) = std::mem::take(&mut self.open);
        self.stored += stored;
        self.converted += converted;
        self.resized += resized;
        let skipped = self.skipped[self.skipped_logged..]
            .iter()
            .map(|s| (s.path.clone(), s.reason.clone()))
            .collect();
        self.skipped_logged = self.skipped.len();
        self.journal.append(ShardDone {
            shard: info.clone(),
            next,
            stored,
            converted,
            resized,
            skipped,
        })?;
        self.published += info.num_bytes;
        self.shards.push(info);
        self.next = next;
        sync_parent(&self.out)
    }
}
