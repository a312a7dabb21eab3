//! Converting an ImageFolder tree or a list file into a dataset directory.
//!
//! - **Input.** An ImageFolder tree (class = first-level directory, labels in sorted name order,
//!   files found recursively below it, symlinks followed, hidden entries and non-image files
//!   ignored by extension and magic bytes) or a list file (`relative/path<TAB>label` per line).
//! - **Records.** A JPEG that decodes without any warning (libjpeg-turbo, strict) is stored
//!   byte-for-byte, whatever its subsampling, progressive or not, grayscale or RGB-stored; a CMYK
//!   or YCCK JPEG and every other format the `image` crate reads (PNG, WebP, BMP, GIF's first
//!   frame, TIFF, PNM; grayscale, 16-bit, palette) is decoded and stored as an RGB JPEG at
//!   [`ConvertConfig::quality`]. Alpha is composited onto **white**. With
//!   [`ConvertConfig::max_side`], every image whose longer side exceeds it is resized (antialiased
//!   Catmull-Rom) and re-encoded, FFCV-style; smaller JPEGs stay as they are. Every record written
//!   has been decoded (strict) after any re-encode. EXIF orientation is kept in stored bytes and
//!   not applied, as torchvision's loader does not apply it.
//! - **Skipped files** (empty, truncated, corrupt, not an image, over
//!   [`ConvertConfig::max_pixels`], over 1 GiB, not a regular file: a FIFO or a device is never
//!   opened for reading) are never fatal: they are listed with the reason in `skipped.tsv` in the
//!   output directory. Input with no image file, or none that converts, is an error.
//! - **Order.** Records are ordered by a Fisher-Yates shuffle, seeded by [`ConvertConfig::seed`],
//!   of the file list sorted by relative path, so every shard mixes classes. Shards are filled in
//!   that order and closed before they would exceed [`ConvertConfig::shard_size`].
//! - **Determinism.** Files are prepared in parallel but written in record order: the output is
//!   byte-identical whatever the thread count (on one machine: libjpeg-turbo and the resizer pick
//!   SIMD paths by CPU, so re-encoded bytes may differ across CPU families).
//! - **Atomic and resumable.** Shards are written as temporary files (named `.regioncl-tmp-` +
//!   the shard's name), fsynced and renamed, then logged in a journal; the manifest is written
//!   last. A run killed at any moment and started again with the same input and settings keeps
//!   the logged shards, discards its own partial files, redoes the rest and produces the same
//!   bytes as an uninterrupted run.
//! - **Nothing else is touched.** The output directory is locked ([`DirLock`](crate::DirLock))
//!   while a conversion runs: a second one into it fails at once, naming the first. An output
//!   directory that holds anything but this conversion's files (or that is the input directory)
//!   is refused before anything in it is changed; only files the conversion made are removed.

mod assemble;
mod journal;
mod pipeline;
mod run;
mod scan;
mod transcode;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// File name of the report of skipped files in the output directory.
pub const SKIPPED_FILE: &str = "skipped.tsv";
/// Default target shard size: 512 MiB.
pub const DEFAULT_SHARD_SIZE: u64 = 512 << 20;
/// Default JPEG quality of re-encoded records.
pub const DEFAULT_QUALITY: u8 = 95;
/// The most worker threads a conversion (or any thread count the loader is given) may ask for.
pub const MAX_THREADS: usize = 1024;

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An ImageFolder tree: `root/<class>/**/<image>`.
    ImageFolder(PathBuf),
    /// A list file of `relative/path<TAB>label` lines; paths are relative to `root`. Class names
    /// are the labels as decimal strings, `0` to the largest label.
    List {
        /// The list file.
        list: PathBuf,
        /// The directory the paths are relative to.
        root: PathBuf,
    },
}

/// Conversion settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertConfig {
    /// Worker threads; 0 uses every core; at most [`MAX_THREADS`].
    pub threads: usize,
    /// Resize (and re-encode) every image whose longer side exceeds this.
    pub max_side: Option<u32>,
    /// JPEG quality (1..=100) of every re-encoded record.
    pub quality: u8,
    /// Target shard size in bytes; a shard is closed before a record would take it past this (a
    /// single larger record gets a shard of its own).
    pub shard_size: u64,
    /// Seed of the record order.
    pub seed: u64,
    /// Images whose header claims more pixels are skipped (decoder bombs).
    pub max_pixels: u64,
}

impl Default for ConvertConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            max_side: None,
            quality: DEFAULT_QUALITY,
            shard_size: DEFAULT_SHARD_SIZE,
            seed: 0,
            max_pixels: regioncl_augment::DEFAULT_MAX_PIXELS,
        }
    }
}

impl ConvertConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        if !(1..=100).contains(&self.quality) {
            return Err(Error::Config(format!("quality {} outside 1..=100", self.quality)));
        }
        if self.max_side == Some(0) {
            return Err(Error::Config("max side must be at least 1".into()));
        }
        if self.shard_size < 4096 {
            return Err(Error::Config(format!("shard size {} below 4096 bytes", self.shard_size)));
        }
        if self.max_pixels == 0 {
            return Err(Error::Config("max pixels must be at least 1".into()));
        }
        if self.threads > MAX_THREADS {
            return Err(Error::Config(format!(
                "threads {} exceeds the limit of {MAX_THREADS}",
                self.threads
            )));
        }
        Ok(())
    }

    pub(crate) fn num_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Where a conversion stands, passed to the progress callback after every file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Files handled (written or skipped), including those of earlier runs.
    pub done: u64,
    /// Files to handle in all.
    pub total: u64,
    /// Of which were done by an earlier, interrupted run.
    pub resumed: u64,
    /// Files skipped so far.
    pub skipped: u64,
    /// Record bytes written so far.
    pub bytes: u64,
}

/// A skipped input file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Path relative to the source root.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// What a conversion did.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ConvertSummary {
    /// Records in the dataset.
    pub num_records: u64,
    /// Classes.
    pub num_classes: usize,
    /// Shard files.
    pub num_shards: usize,
    /// Total size of the shard files.
    pub num_bytes: u64,
    /// JPEGs stored byte-for-byte.
    pub num_stored: u64,
    /// Images converted to JPEG at their size.
    pub num_converted: u64,
    /// Images resized and re-encoded.
    pub num_resized: u64,
    /// Files skipped, with reasons (also in `skipped.tsv`).
    pub skipped: Vec<Skipped>,
    /// Hidden files, non-image files and files outside class directories, ignored.
    pub num_ignored: u64,
    /// Classes without any image file.
    pub empty_classes: Vec<String>,
    /// Files handled by this run (the rest were done by an interrupted earlier run).
    pub num_processed: u64,
    /// Time this run took, scan included.
    pub elapsed: Duration,
    /// The output directory already held this dataset; nothing was done.
    pub already_complete: bool,
}

impl ConvertSummary {
    /// Files handled per second by this run.
    pub fn files_per_sec(&self) -> f64 {
        self.num_processed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Converts `source` into the dataset directory `out` (created if needed). `progress` is called
/// after every file; returning [`ControlFlow::Break`] stops the conversion with
/// [`Error::Cancelled`], leaving `out` resumable.
///
/// If `out` holds an unfinished conversion of the same input and settings, it is resumed; if it
/// holds the finished dataset, nothing is done.
///
/// # Errors
/// [`Error::Config`] for bad settings, a bad list file, input with no image file (or none that
/// converts), or an `out` that holds something else or is the input directory;
/// [`Error::Locked`] when another conversion holds `out`; [`Error::Limit`] for a list file over
/// its limit; [`Error::Io`] when the input cannot be listed or the output cannot be written.
/// Files that cannot be decoded are not errors: they are skipped and reported.
pub fn convert(
    source: &Source,
    out: &Path,
    config: &ConvertConfig,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<ConvertSummary> {
    config.validate()?;
    run::convert(source, out, config, progress)
}
