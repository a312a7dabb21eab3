//! What the consumer receives: the views of one step, their plan, labels and substitutions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::pipeline::buffer::BufferSet;
use crate::plan::BatchPlan;

/// How the pixels of a view are laid out in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViewLayout {
    /// u8 `[B, H, W, 3]`, geometry only (colour left to the consumer). NHWC is channels_last.
    U8Nhwc,
    /// f32 `[B, 3, H, W]`, fully augmented and normalized on the CPU.
    F32Nchw,
}

impl ViewLayout {
    /// Bytes of one sample of a `width` x `height` view.
    pub fn sample_bytes(self, width: u32, height: u32) -> usize {
        let px = width as usize * height as usize * 3;
        match self {
            ViewLayout::U8Nhwc => px,
            ViewLayout::F32Nchw => px * 4,
        }
    }
}

/// A bad record and what replaced it ([`BadRecords::Replace`](crate::BadRecords::Replace)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Substitution {
    /// Position in the batch.
    pub sample: usize,
    /// The record that failed.
    pub failed: u64,
    /// The record used instead (its views were planned afresh from its own size).
    pub replacement: u64,
    /// Why the record is bad (the error and its causes).
    pub reason: String,
}

/// Removes the elements at the sorted positions `gone` from `v`.
pub(crate) fn remove_sorted<T>(v: &mut Vec<T>, gone: &[usize]) {
    let mut i = 0;
    v.retain(|_| {
        let keep = gone.binary_search(&i).is_err();
        i += 1;
        keep
    });
}

/// A record left out of its batch under [`BadRecords::Skip`](crate::BadRecords::Skip).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRecord {
    /// The record.
    pub record: u64,
    /// Why it is bad (the error and its causes).
    pub reason: String,
}

/// One view of a batch.
#[derive(Debug)]
pub struct ViewData<'a> {
    /// The bytes: `[B, H, W, 3]` u8 or `[B, 3, H, W]` f32 (native endian), per `layout`.
    pub bytes: &'a [u8],
    /// Layout of `bytes`.
    pub layout: ViewLayout,
    /// View width.
    pub width: u32,
    /// View height.
    pub height: u32,
}

impl ViewData<'_> {
    /// The f32 values of an [`ViewLayout::F32Nchw`] view.
    ///
    /// # Panics
    /// If the view is u8.
    pub fn as_f32(&self) -> &[f32] {
        assert_eq!(self.layout, ViewLayout::F32Nchw, "as_f32 on a u8 view");
        // SAFETY: host buffers are at least 4-byte aligned (HostBuffer's contract, checked again
        // here by align_to leaving no prefix) and f32 has no invalid bit patterns.
        let (pre, mid, post) = unsafe { self.bytes.align_to::<f32>() };
        assert!(pre.is_empty() && post.is_empty(), "f32 view buffer misaligned");
        mid
    }
}

/// A batch: the views of one step, in the plan's sample order. Dropping it returns its buffers to
/// the pipeline's ring.
pub struct Batch {
    pub(crate) plan: BatchPlan,
    pub(crate) labels: Vec<u32>,
    pub(crate) buffers: Option<BufferSet>,
    pub(crate) layouts: Vec<(ViewLayout, u32, u32)>,
    pub(crate) substitutions: Vec<Substitution>,
    pub(crate) skipped: Vec<SkippedRecord>,
    pub(crate) recycle: Option<Sender<BufferSet>>,
    /// Buffer sets the consumer holds (this batch counts until it is dropped).
    pub(crate) held: Arc<AtomicUsize>,
    pub(crate) wait: Duration,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("epoch", &self.plan.epoch)
            .field("step", &self.plan.step)
            .field("batch_size", &self.plan.batch_size())
            .field("layouts", &self.layouts)
            .field("substitutions", &self.substitutions)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// The plan, with any substituted records (and their re-planned views) already in place.
    pub fn plan(&self) -> &BatchPlan {
        &self.plan
    }

    /// Epoch of this batch.
    pub fn epoch(&self) -> u64 {
        self.plan.epoch
    }

    /// Step within the epoch.
    pub fn step(&self) -> u64 {
        self.plan.step
    }

    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.plan.batch_size()
    }

    /// Whether the batch is empty (never, for a pipeline's batches).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of views.
    pub fn num_views(&self) -> usize {
        self.layouts.len()
    }

    /// View `v`.
    ///
    /// # Panics
    /// If `v >= num_views()`.
    pub fn view(&self, v: usize) -> ViewData<'_> {
        let (layout, width, height) = self.layouts[v];
        let len = self.len() * layout.sample_bytes(width, height);
        let bytes = self.buffers.as_ref().map_or(&[][..], |b| &b[v].as_slice()[..len]);
        ViewData { bytes, layout, width, height }
    }

    /// Class labels from the shards, one per sample.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Bad records of this batch and what replaced them ([`BadRecords::Replace`](crate::BadRecords::Replace)).
    pub fn substitutions(&self) -> &[Substitution] {
        &self.substitutions
    }

    /// Bad records left out of this batch ([`BadRecords::Skip`](crate::BadRecords::Skip)); the
    /// batch is that much shorter.
    pub fn skipped(&self) -> &[SkippedRecord] {
        &self.skipped
    }

    /// How long the consumer waited for this batch in the pipeline's `next()`.
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let (Some(buffers), Some(tx)) = (self.buffers.take(), self.recycle.take()) {
            // Released before the buffers travel back, so the pipeline never sees a free set
            // counted as held (it would report every buffer held when one is on its way).
            self.held.fetch_sub(1, Ordering::AcqRel);
            // The pipeline may be gone already; then the buffers are simply freed.
            let _ = tx.send(buffers);
        }
    }
}
