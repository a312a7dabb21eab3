//! The loader pipeline: plans in, batches of views out, in step order.
//!
//! ```text
//!  coordinator thread                 N worker threads                consumer (next())
//!  free ring --> buffer set ---+
//!  Planner::plan(e, s) ------> Job --chunks of samples--> decode once, render views into slots
//!                                                          last chunk done --> done channel
//!                                                                      reorder by step --> Batch
//!  Batch dropped --> buffer set back to the free ring
//! ```
//!
//! The ring holds `batches_ahead` buffer sets, the only memory that grows with prefetch depth; it
//! also bounds how far the workers run ahead of the consumer. A consumer that keeps every set
//! alive gets [`PipelineError::AllBuffersHeld`] from `next()` instead of waiting forever. Work is
//! split into chunks of a few samples so all workers help with the oldest batch first, which keeps
//! latency low. A bad record ([`BadRecord`](crate::BadRecord)) is replaced by a deterministic
//! substitute, an error, or skipped, as [`BadRecords`] says.

mod batch;
mod buffer;
mod stats;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use regioncl_augment::{DecodeOptions, DecodePlanOptions, Normalize};
use serde::{Deserialize, Serialize};

pub use self::batch::{Batch, SkippedRecord, Substitution, ViewData, ViewLayout};
pub use self::buffer::{AlignedBuffer, AllocError, BufferAllocator, HeapAllocator, HostBuffer};
pub use self::stats::PipelineStats;

use self::batch::remove_sorted;
use self::buffer::{BufferSet, compact};
use self::stats::Counters;
use self::worker::{Job, JobFailure, MAX_SUBSTITUTES, Scratch, Shared, run_chunk};
use crate::error::{Error, PipelineError, Result};
use crate::plan::Planner;
use crate::recipe::ColorOn;
use crate::source::RecordSource;

/// What the pipeline does with a bad record ([`BadRecord`](crate::BadRecord)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BadRecords {
    /// Replace it by a substitute drawn from `(seed, epoch, record)`, with views planned afresh,
    /// and report it in [`Batch::substitutions`]: training goes on. The batch is an error when
    /// [`MAX_SUBSTITUTES`] substitutes are bad too, or when every sample was replaced.
    #[default]
    Replace,
    /// The batch is an error ([`PipelineError::BadRecord`]): evaluation, where a replaced record
    /// would silently change the metric.
    Fail,
    /// Leave it out: the batch is shorter, and [`Batch::skipped`] says what is missing. A batch
    /// whose every record is bad is an error.
    Skip,
}

/// The pipeline half of the builder's settings.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PipelineSettings {
    pub threads: usize,
    pub batches_ahead: usize,
    pub start: (u64, u64),
    pub end_epoch: Option<u64>,
    pub decode: DecodePlanOptions,
    pub normalize: Normalize,
    pub bad_records: BadRecords,
}

/// Samples per work item.
const CHUNK: usize = 8;

/// A running loader, an iterator of batches in step order; drop it to stop the threads. Made by
/// [`LoaderBuilder::build`](crate::LoaderBuilder::build).
pub struct Pipeline {
    done_rx: Receiver<Arc<Job>>,
    recycle_tx: Sender<BufferSet>,
    pending: BTreeMap<u64, Arc<Job>>,
    next_seq: u64,
    last_seq: Option<u64>,
    start: (u64, u64),
    steps_per_epoch: u64,
    batches_ahead: usize,
    held: Arc<AtomicUsize>,
    layouts: Vec<(ViewLayout, u32, u32)>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    num_workers: usize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("next", &self.next_position())
            .field("steps_per_epoch", &self.steps_per_epoch)
            .field("layouts", &self.layouts)
            .field("workers", &self.num_workers)
            .finish_non_exhaustive()
    }
}

/// One buffer set: a buffer per view, each for `batch` samples, checked against the allocator's
/// contract.
fn allocate_set(
    allocator: &dyn BufferAllocator,
    layouts: &[(ViewLayout, u32, u32)],
    batch: usize,
) -> Result<BufferSet> {
    let mut set = BufferSet::new();
    for &(layout, w, h) in layouts {
        let bytes = batch * layout.sample_bytes(w, h);
        let buf =
            allocator.allocate(bytes).map_err(|source| PipelineError::Alloc { bytes, source })?;
        let (got, addr) = (buf.as_slice().len(), buf.as_slice().as_ptr() as usize);
        if got != bytes || addr % 4 != 0 {
            let align = 1 << addr.trailing_zeros().min(6);
            return Err(PipelineError::BadBuffer { bytes, got, align }.into());
        }
        set.push(buf);
    }
    Ok(set)
}

impl Pipeline {
    /// Starts the coordinator and worker threads.
    pub(crate) fn start(
        source: Arc<dyn RecordSource>,
        mut planner: Planner,
        settings: PipelineSettings,
        allocator: &dyn BufferAllocator,
    ) -> Result<Self> {
        let bad = |why: String| Err(Error::Config(why));
        if settings.threads == 0 {
            return bad("threads: must be at least 1".into());
        }
        if settings.batches_ahead < 2 {
            return bad("batches_ahead: must be at least 2".into());
        }
        let steps = planner.steps_per_epoch();
        if settings.start.1 >= steps {
            return bad(format!(
                "start: step {} is beyond the epoch's {steps} steps",
                settings.start.1
            ));
        }
        let recipe = planner.recipe().clone();
        let layout = match recipe.color_on {
            ColorOn::Consumer => ViewLayout::U8Nhwc,
            ColorOn::Cpu => ViewLayout::F32Nchw,
        };
        let layouts: Vec<(ViewLayout, u32, u32)> =
            recipe.views.iter().map(|v| (layout, v.width, v.height)).collect();
        let batch = planner.batch_size();
        let (recycle_tx, free_rx) = unbounded::<BufferSet>();
        for _ in 0..settings.batches_ahead {
            // The receiver lives in this function: the send cannot fail.
            let _ = recycle_tx.send(allocate_set(allocator, &layouts, batch)?);
        }
        let shared = Arc::new(Shared {
            source,
            recipe,
            seed: planner.seed(),
            decode: settings.decode,
            base_decode: DecodeOptions::default(),
            normalize: settings.normalize,
            bad_records: settings.bad_records,
            counters: Counters::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        // Enough queued chunks to keep every worker busy on the oldest batches.
        let (task_tx, task_rx) = bounded::<(Arc<Job>, std::ops::Range<usize>)>(
            settings.threads * 4 + batch.div_ceil(CHUNK),
        );
        let (done_tx, done_rx) = unbounded::<Arc<Job>>();
        let mut threads = Vec::with_capacity(settings.threads + 1);
        let spawn_err = |what| move |source| PipelineError::Spawn { what, source };
        for w in 0..settings.threads {
            let (rx, tx, shared) = (task_rx.clone(), done_tx.clone(), shared.clone());
            let stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("regioncl-worker-{w}"))
                .spawn(move || {
                    let mut scratch = Scratch::default();
                    while let Ok((job, range)) = rx.recv() {
                        if stop.load(Ordering::Relaxed) {
                            continue;
                        }
                        if run_chunk(&shared, &job, range, &mut scratch) && tx.send(job).is_err() {
                            break;
                        }
                    }
                })
                .map_err(spawn_err("worker"))?;
            threads.push(handle);
        }
        drop(done_tx);
        let (stop_c, layouts_c) = (stop.clone(), layouts.clone());
        let (start, end_epoch) = (settings.start, settings.end_epoch);
        let coordinator = std::thread::Builder::new()
            .name("regioncl-planner".into())
            .spawn(move || {
                let (mut epoch, mut step) = start;
                let mut seq = 0u64;
                while end_epoch.is_none_or(|e| epoch < e) {
                    let set = loop {
                        if stop_c.load(Ordering::Relaxed) {
                            return;
                        }
                        match free_rx.recv_timeout(Duration::from_millis(50)) {
                            Ok(set) => break set,
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                        }
                    };
                    let plan = planner.plan(epoch, step);
                    let len = plan.batch_size(); // < batch for a partial last batch
                    let job = Arc::new(Job::new(seq, plan, set, &layouts_c));
                    for start in (0..len).step_by(CHUNK) {
                        let range = start..(start + CHUNK).min(len);
                        if task_tx.send((job.clone(), range)).is_err() {
                            return;
                        }
                    }
                    seq += 1;
                    step += 1;
                    if step == steps {
                        step = 0;
                        epoch += 1;
                    }
                }
            })
            .map_err(spawn_err("planner"))?;
        threads.push(coordinator);
        let last_seq = settings.end_epoch.map(|e| {
            let total = e.saturating_sub(settings.start.0) * steps;
            total.saturating_sub(settings.start.1)
        });
        Ok(Self {
            done_rx,
            recycle_tx,
            pending: BTreeMap::new(),
            next_seq: 0,
            last_seq,
            start: settings.start,
            steps_per_epoch: steps,
            batches_ahead: settings.batches_ahead,
            held: Arc::new(AtomicUsize::new(0)),
            layouts,
            shared,
            stop,
            threads,
            num_workers: settings.threads,
        })
    }

    /// Steps per epoch (the planner's).
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// `(epoch, step)` of the batch the next call to `next()` returns: where a checkpoint taken
    /// now resumes ([`LoaderBuilder::start`](crate::LoaderBuilder::start)).
    pub fn next_position(&self) -> (u64, u64) {
        let (epoch, step) = self.start;
        let at = step + self.next_seq;
        (epoch + at / self.steps_per_epoch, at % self.steps_per_epoch)
    }

    /// Batches left before the end epoch; `None` without one.
    pub fn remaining(&self) -> Option<u64> {
        self.last_seq.map(|last| last.saturating_sub(self.next_seq))
    }

    /// The next batch in step order; `None` after the last epoch.
    fn next_batch(&mut self) -> Option<Result<Batch>> {
        if self.remaining() == Some(0) {
            return None;
        }
        let t0 = Instant::now();
        let job = loop {
            if let Some(job) = self.pending.remove(&self.next_seq) {
                break job;
            }
            if self.held.load(Ordering::Acquire) >= self.batches_ahead {
                let batches_ahead = self.batches_ahead;
                return Some(Err(PipelineError::AllBuffersHeld { batches_ahead }.into()));
            }
            match self.done_rx.recv() {
                Ok(job) => {
                    self.pending.insert(job.seq, job);
                }
                Err(_) => return Some(Err(PipelineError::WorkersStopped.into())),
            }
        };
        let wait = t0.elapsed();
        Counters::add(&self.shared.counters.wait_ns, wait);
        self.shared.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.next_seq += 1;
        Some(self.finish(&job, wait))
    }

    fn finish(&self, job: &Job, wait: Duration) -> Result<Batch> {
        // Workers may still hold clones of the Arc for an instant after their last write, so the
        // job's contents are taken out rather than the job unwrapped.
        let mut buffers = job.buffers.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut subs = take(&job.substitutions);
        let mut skipped = take(&job.skipped);
        let failure = job.failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (epoch, step, len) = (job.plan.epoch, job.plan.step, job.plan.batch_size());
        let error = match failure {
            Some((_, JobFailure::Bad(source))) => {
                Some(PipelineError::BadRecord { epoch, step, source })
            }
            Some((_, JobFailure::NoSubstitute(source))) => {
                Some(PipelineError::NoSubstitute { epoch, step, tried: MAX_SUBSTITUTES, source })
            }
            None if subs.len() + skipped.len() == len => {
                subs.sort_by_key(|(s, _)| s.sample);
                skipped.sort_by_key(|(i, _)| *i);
                let first = subs.first().map(|(s, _)| s.reason.clone());
                let first = first.or_else(|| skipped.first().map(|(_, s)| s.reason.clone()));
                Some(PipelineError::AllBad { epoch, step, len, first: first.unwrap_or_default() })
            }
            None => None,
        };
        if let Some(e) = error {
            if let Some(b) = buffers {
                let _ = self.recycle_tx.send(b);
            }
            return Err(e.into());
        }
        let mut plan = job.plan.clone();
        let mut labels: Vec<u32> = job.labels.iter().map(|l| l.load(Ordering::Relaxed)).collect();
        subs.sort_by_key(|(s, _)| s.sample);
        let mut substitutions = Vec::with_capacity(subs.len());
        for (sub, views) in subs {
            plan.indices[sub.sample] = sub.replacement;
            for (v, p) in views.into_iter().enumerate() {
                plan.views[v][sub.sample] = p;
            }
            substitutions.push(sub);
        }
        skipped.sort_by_key(|(i, _)| *i);
        if !skipped.is_empty() {
            let gone: Vec<usize> = skipped.iter().map(|(i, _)| *i).collect();
            if let Some(set) = buffers.as_mut() {
                compact(set, &self.layouts, len, &gone);
            }
            remove_sorted(&mut plan.indices, &gone);
            remove_sorted(&mut labels, &gone);
            for v in &mut plan.views {
                remove_sorted(v, &gone);
            }
        }
        self.held.fetch_add(1, Ordering::AcqRel);
        Ok(Batch {
            plan,
            labels,
            buffers,
            layouts: self.layouts.clone(),
            substitutions,
            skipped: skipped.into_iter().map(|(_, s)| s).collect(),
            recycle: Some(self.recycle_tx.clone()),
            held: self.held.clone(),
            wait,
        })
    }

    /// Throughput and per-stage time so far.
    pub fn stats(&self) -> PipelineStats {
        self.shared.counters.snapshot(self.num_workers)
    }
}

/// The contents of a job's list, taken out (a worker that panicked holding the lock left nothing
/// half-written in it: every push is one call).
fn take<T>(list: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *list.lock().unwrap_or_else(|e| e.into_inner()))
}

impl Iterator for Pipeline {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }

    /// Exact with an end epoch; unbounded otherwise.
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.remaining() {
            Some(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                (n, Some(n))
            }
            None => (usize::MAX, None),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock workers waiting to hand over a job, then wait for everyone.
        self.pending.clear();
        while self.done_rx.try_recv().is_ok() {}
        for t in self.threads.drain(..) {
            // Workers drain the task queue (the planner has stopped feeding it) and exit.
            let _ = t.join();
            while self.done_rx.try_recv().is_ok() {}
        }
    }
}

#[cfg(test)]
mod tests;
