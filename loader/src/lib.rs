//! A deterministic multithreaded loader of multi-view image batches for self-supervised
//! pretraining, and the memory-mapped shard format it reads.
//!
//! - **Sources.** A [`Dataset`] of shards written by [`convert`] (a directory: `manifest.json`
//!   and shard files, each a header, the records' JPEG bytes and a fixed-size index entry per
//!   record; the byte layout is drawn in [`shard::format`](mod@shard::format)), or an
//!   [`ImageFolder`] of JPEGs read as they are. Opening checks every offset and length, so a record
//!   is a bounds-checked slice of the map: O(1) and allocation-free. Corrupt, truncated or foreign
//!   files are errors naming the file, the record and the byte offset, never panics. Any other
//!   [`RecordSource`] works too.
//! - **One builder.** [`LoaderBuilder`] is the only way to make a [`Planner`] or a [`Pipeline`]:
//!   a [`Recipe`] of views (presets: MoCo v2, SimCLR, BYOL, DINO multi-crop, supervised,
//!   evaluation centre crop), the global batch, seed, order, rank and world, threads, prefetch
//!   depth, start position, allocator and bad-record policy.
//!
//! ```no_run
//! use std::sync::Arc;
//! use regioncl_loader::{Dataset, LoaderBuilder, Recipe};
//!
//! # fn main() -> regioncl_loader::Result<()> {
//! let dataset = Arc::new(Dataset::open("shards/imagenet")?);
//! let loader = LoaderBuilder::new(dataset).recipe(Recipe::mocov2(224)).batch_size(256).build()?;
//! for batch in loader.take(100) {
//!     let batch = batch?; // two u8 [256, 224, 224, 3] views, their plan, labels
//!     println!("epoch {} step {}: {} samples", batch.epoch(), batch.step(), batch.len());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Rules a user can rely on
//!
//! - **Determinism.** Every random choice (the epoch order, each view's crop, flip and colour
//!   parameters, the swap box, a bad record's substitute) is drawn from a counter-based generator
//!   keyed by the seed and a position (epoch, step, record), before any byte is decoded. The
//!   batches are byte for byte the same for any number of threads and across runs; an image's
//!   views are keyed by its crc32c, so it gets the same views from its folder, its shards or
//!   Python.
//! - **Resume.** [`Pipeline::next_position`] is the `(epoch, step)` of the next batch; a loader
//!   built with [`LoaderBuilder::start`] at that position delivers exactly the batches the
//!   interrupted one would have. Nothing else needs saving.
//! - **Rank shares.** [`LoaderBuilder::batch_size`] is the global batch. Rank `r` of `W` gets the
//!   `r`-th `batch / W` samples of every global batch, so the shares are disjoint, equal, and the
//!   sequence of global batches does not depend on the world size: 1 and 8 GPUs train on the same
//!   batches, and a run may resume on another number of GPUs. Under the shard-local order each
//!   rank still reads mostly its own shards ([`OrderKind::ShardLocal`] says what that costs).
//! - **Memory.** The batch buffers are `batches_ahead` sets of one buffer per view, allocated once
//!   by the [`BufferAllocator`] and recycled when a [`Batch`] is dropped: the only memory that
//!   grows with prefetch depth, flat over epochs. Shards are memory-mapped (the page cache holds
//!   them, not the process). Holding all `batches_ahead` batches and asking for another is an
//!   error ([`PipelineError::AllBuffersHeld`]), not a hang.
//! - **Bad records.** One definition ([`BadRecord`]: a failed checksum, a header that disagrees
//!   with the index, a JPEG that does not decode cleanly) for [`Dataset::verify`], training and
//!   evaluation; the [`BadRecords`] policy replaces (training), fails (evaluation) or skips them.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use regioncl_loader::{ConvertConfig, Dataset, Source, convert};
//!
//! # fn main() -> regioncl_loader::Result<()> {
//! let config = ConvertConfig { threads: 4, ..ConvertConfig::default() };
//! let summary = convert(
//!     &Source::ImageFolder("imagenet/train".into()),
//!     "shards/imagenet".as_ref(),
//!     &config,
//!     &mut |_progress| ControlFlow::Continue(()),
//! )?;
//! println!("{} records, {} skipped", summary.num_records, summary.skipped.len());
//!
//! let dataset = Dataset::open("shards/imagenet")?;
//! let report = dataset.verify(0, &|_checked| {});
//! println!("{} records checked, {} problems", report.records_checked, report.problems.len());
//! # Ok(())
//! # }
//! ```

mod builder;
#[cfg(feature = "convert")]
mod convert;
mod dataset;
mod error;
mod folder;
mod fsutil;
mod lock;
mod manifest;
mod order;
mod pipeline;
mod plan;
mod recipe;
mod record;
pub mod shard;
mod source;
mod swap;
mod verify;

pub use crate::builder::LoaderBuilder;
#[cfg(feature = "convert")]
pub use crate::convert::{
    ConvertConfig, ConvertSummary, DEFAULT_QUALITY, DEFAULT_SHARD_SIZE, MAX_THREADS, Progress,
    SKIPPED_FILE, Skipped, Source, convert,
};
pub use crate::dataset::Dataset;
pub use crate::error::{ChecksumError, Error, FormatError, ManifestError, PipelineError, Result};
pub use crate::folder::{ImageFolder, MAX_FILE_BYTES};
pub use crate::fsutil::write_atomic;
pub use crate::lock::{DirLock, LOCK_FILE};
pub use crate::manifest::{
    ConvertSettings, DATASET_FORMAT, DATASET_VERSION, MANIFEST_FILE, MAX_CLASSES, Manifest,
    ShardInfo,
};
pub use crate::order::OrderKind;
pub use crate::pipeline::{
    AlignedBuffer, AllocError, BadRecords, Batch, BufferAllocator, HeapAllocator, HostBuffer,
    Pipeline, PipelineStats, SkippedRecord, Substitution, ViewData, ViewLayout,
};
pub use crate::plan::{BatchPlan, Planner};
pub use crate::recipe::{ColorOn, Recipe, Sampling};
pub use crate::record::{BadRecord, BadRecordKind};
pub use crate::shard::reader::{Record, Shard};
pub use crate::shard::writer::ShardWriter;
pub use crate::source::{RecordSizes, RecordSource};
pub use crate::swap::{SwapBox, SwapConfig, SwapPlanConfig, SwapSampler, pairing, sample_swap_box};
pub use crate::verify::VerifyReport;
