//! Memory-mapped image shards and the tools around them: the shard file format ([`Shard`],
//! [`ShardWriter`]), datasets of shards with a JSON manifest ([`Dataset`], [`Manifest`]) and the
//! converter from image folders ([`convert`]).
//!
//! A dataset is a directory: `manifest.json` (format version, class names, the shard files with
//! their record counts, sizes and crc32c, the converter settings) and shard files of a few hundred
//! MiB, each a header, the records' bytes and a fixed-size index entry per record (offset, length,
//! label, width, height, crc32c). The byte layout is drawn in
//! [`shard::format`](mod@shard::format). Opening checks every offset and length, so reading a
//! record afterwards is a bounds-checked slice of the map: O(1) and allocation-free. Corrupt,
//! truncated or foreign files are errors naming the file, the record and the byte offset, never
//! panics.
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
//! let record = dataset.verify_record(0)?;
//! println!("{}x{} label {}", record.width, record.height, record.label);
//! # Ok(())
//! # }
//! ```

mod convert;
mod dataset;
mod error;
mod fsutil;
mod lock;
mod manifest;
mod order;
mod pipeline;
mod plan;
pub mod shard;
mod swap;

pub use crate::convert::{
    ConvertConfig, ConvertSummary, DEFAULT_QUALITY, DEFAULT_SHARD_SIZE, MAX_THREADS, Progress,
    SKIPPED_FILE, Skipped, Source, convert,
};
pub use crate::dataset::Dataset;
pub use crate::error::{ChecksumError, Error, FormatError, ManifestError, Result};
pub use crate::fsutil::write_atomic;
pub use crate::lock::{DirLock, LOCK_FILE};
pub use crate::manifest::{
    ConvertSettings, DATASET_FORMAT, DATASET_VERSION, MANIFEST_FILE, MAX_CLASSES, Manifest,
    ShardInfo,
};
pub use crate::order::{Order, OrderKind, Tail};
pub use crate::pipeline::{
    AlignedBuffer, AllocError, Batch, BufferAllocator, HeapAllocator, HostBuffer, Pipeline,
    PipelineConfig, PipelineStats, Substitution, ViewData, ViewLayout,
};
pub use crate::plan::{
    BatchPlan, ColorOn, Planner, Recipe, RecordSizes, Sampling, SwapPlanConfig, plan_views,
};
pub use crate::shard::reader::{Record, Shard};
pub use crate::shard::writer::ShardWriter;
pub use crate::swap::{SwapBox, SwapConfig, SwapSampler, pairing, sample_swap_box};
