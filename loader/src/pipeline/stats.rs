//! Counters the workers and the consumer update, and the snapshot users read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared counters (nanoseconds summed over all worker threads).
#[derive(Debug)]
pub(crate) struct Counters {
    pub started: Instant,
    pub samples: AtomicU64,
    pub batches: AtomicU64,
    pub read_ns: AtomicU64,
    pub decode_ns: AtomicU64,
    pub render_ns: AtomicU64,
    pub substitutions: AtomicU64,
    pub skipped: AtomicU64,
    pub wait_ns: AtomicU64,
}

impl Counters {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            samples: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            read_ns: AtomicU64::new(0),
            decode_ns: AtomicU64::new(0),
            render_ns: AtomicU64::new(0),
            substitutions: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            wait_ns: AtomicU64::new(0),
        }
    }

    pub fn add(counter: &AtomicU64, d: Duration) {
        counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self, threads: usize) -> PipelineStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PipelineStats {
            elapsed: self.started.elapsed(),
            threads,
            samples: get(&self.samples),
            batches: get(&self.batches),
            read: Duration::from_nanos(get(&self.read_ns)),
            decode: Duration::from_nanos(get(&self.decode_ns)),
            render: Duration::from_nanos(get(&self.render_ns)),
            substitutions: get(&self.substitutions),
            skipped: get(&self.skipped),
            consumer_wait: Duration::from_nanos(get(&self.wait_ns)),
        }
    }
}

/// A snapshot of a pipeline's throughput and where its time goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PipelineStats {
    /// Since the pipeline started.
    pub elapsed: Duration,
    /// Worker threads.
    pub threads: usize,
    /// Samples finished by the workers (including batches not yet consumed).
    pub samples: u64,
    /// Batches handed to the consumer.
    pub batches: u64,
    /// Worker time reading records (mmap page faults land here), summed over threads.
    pub read: Duration,
    /// Worker time decoding JPEGs, summed over threads.
    pub decode: Duration,
    /// Worker time cropping, resizing and (on the CPU) colouring views, summed over threads.
    pub render: Duration,
    /// Bad records replaced ([`BadRecords::Replace`](crate::BadRecords::Replace)).
    pub substitutions: u64,
    /// Bad records left out ([`BadRecords::Skip`](crate::BadRecords::Skip)).
    pub skipped: u64,
    /// Time the consumer spent waiting in `next()`.
    pub consumer_wait: Duration,
}

impl PipelineStats {
    /// Samples per second since the start.
    pub fn samples_per_sec(&self) -> f64 {
        self.samples as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Fraction of the elapsed time the consumer spent waiting for data.
    pub fn wait_fraction(&self) -> f64 {
        self.consumer_wait.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }
}
