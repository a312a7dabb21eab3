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
//! also bounds how far the workers run ahead of the consumer. Work is split into chunks of a few
//! samples so all workers help with the oldest batch first, which keeps latency low. A record that
//! fails to decode is replaced by a deterministic substitute (keyed by seed, epoch, step, sample),
//! counted and reported in the batch; only when 16 substitutes in a row fail does the pipeline
//! return an error.

mod batch;
mod buffer;
mod stats;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use regioncl_augment::{DecodeOptions, DecodePlanOptions, Normalize};

pub use self::batch::{Batch, Substitution, ViewData, ViewLayout};
pub use self::buffer::{AlignedBuffer, AllocError, BufferAllocator, HeapAllocator, HostBuffer};
pub use self::stats::PipelineStats;

use self::buffer::BufferSet;
use self::stats::Counters;
use self::worker::{Job, Scratch, Shared, run_chunk};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::plan::{ColorOn, Planner};

/// Settings of a [`Pipeline`].
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    /// Worker threads (decode + render). Default: all cores.
    pub threads: usize,
    /// Buffer sets in the ring: batches being filled plus batches held by the consumer. At least 2.
    pub batches_ahead: usize,
    /// Samples per work item.
    pub chunk: usize,
    /// First (epoch, step) to produce: `(0, 0)` for a new run, the checkpoint's position to resume.
    pub start: (u64, u64),
    /// Stop after this epoch (exclusive); `None` runs until dropped.
    pub end_epoch: Option<u64>,
    /// DCT scaling and region decode switches.
    pub decode: DecodePlanOptions,
    /// Use libjpeg's fast integer IDCT.
    pub fast_dct: bool,
    /// Normalisation of CPU-coloured (f32) views.
    pub normalize: Normalize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            batches_ahead: 4,
            chunk: 8,
            start: (0, 0),
            end_epoch: None,
            decode: DecodePlanOptions::default(),
            fast_dct: false,
            normalize: Normalize::IMAGENET,
        }
    }
}

/// A running loader, an iterator of batches in step order; drop it to stop the threads.
pub struct Pipeline {
    done_rx: Receiver<Arc<Job>>,
    recycle_tx: Sender<BufferSet>,
    pending: BTreeMap<u64, Arc<Job>>,
    next_seq: u64,
    last_seq: Option<u64>,
    layouts: Vec<(ViewLayout, u32, u32)>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    num_workers: usize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("next_seq", &self.next_seq)
            .field("layouts", &self.layouts)
            .field("workers", &self.num_workers)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the coordinator and worker threads. Buffers come from `allocator`.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad setting or when the allocator fails.
    pub fn new(
        dataset: Arc<Dataset>,
        mut planner: Planner,
        config: PipelineConfig,
        allocator: &dyn BufferAllocator,
    ) -> Result<Self> {
        if config.threads == 0 || config.chunk == 0 {
            return Err(Error::Config("pipeline: threads and chunk must be at least 1".into()));
        }
        if config.batches_ahead < 2 {
            return Err(Error::Config("pipeline: batches_ahead must be at least 2".into()));
        }
        let steps = planner.steps_per_epoch();
        if config.start.1 >= steps {
            return Err(Error::Config(format!(
                "pipeline: start step {} beyond the epoch's {steps} steps",
                config.start.1
            )));
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
        for _ in 0..config.batches_ahead {
            let mut set = BufferSet::new();
            for &(l, w, h) in &layouts {
                let bytes = batch * l.sample_bytes(w, h);
                let buf = allocator.allocate(bytes).map_err(|e| {
                    Error::Config(format!("pipeline: allocating a {bytes}-byte view buffer: {e}"))
                })?;
                if buf.as_slice().len() != bytes {
                    return Err(Error::Config(format!(
                        "pipeline: allocator returned {} bytes for {bytes}",
                        buf.as_slice().len()
                    )));
                }
                set.push(buf);
            }
            recycle_tx.send(set).map_err(|_| Error::Config("pipeline: ring closed".into()))?;
        }
        let shared = Arc::new(Shared {
            dataset,
            recipe,
            seed: planner.seed(),
            decode: config.decode,
            base_decode: DecodeOptions { fast_dct: config.fast_dct, ..DecodeOptions::default() },
            normalize: config.normalize,
            counters: Counters::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        // Enough queued chunks to keep every worker busy on the oldest batches.
        let (task_tx, task_rx) = bounded::<(Arc<Job>, std::ops::Range<usize>)>(
            config.threads * 4 + batch.div_ceil(config.chunk),
        );
        let (done_tx, done_rx) = unbounded::<Arc<Job>>();
        let mut threads = Vec::with_capacity(config.threads + 1);
        for w in 0..config.threads {
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
                .map_err(|e| Error::Config(format!("pipeline: spawning a worker: {e}")))?;
            threads.push(handle);
        }
        drop(done_tx);
        let (stop_c, layouts_c, chunk) = (stop.clone(), layouts.clone(), config.chunk);
        let (start, end_epoch) = (config.start, config.end_epoch);
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
                    let len = plan.batch_size(); // < batch for a kept partial last batch
                    let job = Arc::new(Job::new(seq, plan, set, &layouts_c));
                    for start in (0..len).step_by(chunk) {
                        let range = start..(start + chunk).min(len);
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
            .map_err(|e| Error::Config(format!("pipeline: spawning the planner: {e}")))?;
        threads.push(coordinator);
        let last_seq = config.end_epoch.map(|e| {
            let total = e.saturating_sub(config.start.0) * steps;
            total.saturating_sub(config.start.1)
        });
        Ok(Self {
            done_rx,
            recycle_tx,
            pending: BTreeMap::new(),
            next_seq: 0,
            last_seq,
            layouts,
            shared,
            stop,
            threads,
            num_workers: config.threads,
        })
    }

    /// The next batch in step order; `None` after the last epoch. An `Err` item means a record
    /// and all of its substitutes failed to decode, or the workers are gone.
    fn next_batch(&mut self) -> Option<Result<Batch>> {
        if self.last_seq.is_some_and(|last| self.next_seq >= last) {
            return None;
        }
        let t0 = Instant::now();
        let job = loop {
            if let Some(job) = self.pending.remove(&self.next_seq) {
                break job;
            }
            match self.done_rx.recv() {
                Ok(job) => {
                    self.pending.insert(job.seq, job);
                }
                Err(_) => return Some(Err(Error::Config("pipeline: workers stopped".into()))),
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
        let buffers = job.buffers.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(why) = job.failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if let Some(b) = buffers {
                let _ = self.recycle_tx.send(b);
            }
            return Err(Error::Config(format!(
                "epoch {} step {}: {why}",
                job.plan.epoch, job.plan.step
            )));
        }
        let mut plan = job.plan.clone();
        let mut substitutions = Vec::new();
        let mut subs =
            std::mem::take(&mut *job.substitutions.lock().unwrap_or_else(|e| e.into_inner()));
        subs.sort_by_key(|(s, _)| s.sample);
        for (sub, views) in subs {
            plan.indices[sub.sample] = sub.replacement;
            for (v, p) in views.into_iter().enumerate() {
                plan.views[v][sub.sample] = p;
            }
            substitutions.push(sub);
        }
        Ok(Batch {
            plan,
            labels: job.labels.iter().map(|l| l.load(Ordering::Relaxed)).collect(),
            buffers,
            layouts: self.layouts.clone(),
            substitutions,
            recycle: Some(self.recycle_tx.clone()),
            wait,
        })
    }

    /// Throughput and per-stage time so far.
    pub fn stats(&self) -> PipelineStats {
        self.shared.counters.snapshot(self.num_workers)
    }
}

impl Iterator for Pipeline {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
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
