//! The worker side: one job per batch, split into chunks of samples; each sample is decoded once
//! (the cheapest decode covering all its views) and every view is written straight into its slot.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

use regioncl_augment::{
    DecodeOptions, DecodePlan, DecodePlanOptions, KeyedRng, Normalize, RgbImage, ViewGeometry,
    ViewOutput, ViewParams, ViewScratch, decode_jpeg, render_view,
};

use crate::dataset::Dataset;
use crate::pipeline::batch::{Substitution, ViewLayout};
use crate::pipeline::buffer::BufferSet;
use crate::pipeline::stats::Counters;
use crate::plan::{BatchPlan, Recipe, RecordSizes, plan_views};

/// Stream tag of substitute draws in the keyed generator.
const STREAM_SUBSTITUTE: u64 = 0x7375_6273; // "subs"
/// Substitutes tried before a batch fails.
const MAX_SUBSTITUTES: u64 = 16;

/// Where view `v`'s samples go: `base + i * sample_bytes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slots {
    base: *mut u8,
    sample_bytes: usize,
    layout: ViewLayout,
    width: u32,
    height: u32,
}

// SAFETY: `base` points into a HostBuffer owned by the same Job (which outlives every use), and
// distinct samples write disjoint `[i * sample_bytes, (i + 1) * sample_bytes)` ranges; each sample
// index belongs to exactly one task.
unsafe impl Send for Slots {}
// SAFETY: as above: concurrent users never touch the same bytes.
unsafe impl Sync for Slots {}

/// A batch in flight.
pub(crate) struct Job {
    pub seq: u64,
    pub plan: BatchPlan,
    pub slots: Vec<Slots>,
    pub buffers: Mutex<Option<BufferSet>>,
    pub labels: Vec<AtomicU32>,
    pub remaining: AtomicUsize,
    pub substitutions: Mutex<Vec<(Substitution, Vec<ViewParams>)>>,
    pub failure: Mutex<Option<String>>,
}

impl Job {
    /// Builds a job over `buffers` (one per view, each `batch * sample_bytes` long; a partial
    /// batch uses the front of them).
    pub fn new(
        seq: u64,
        plan: BatchPlan,
        mut buffers: BufferSet,
        layouts: &[(ViewLayout, u32, u32)],
    ) -> Self {
        let b = plan.batch_size();
        let slots = buffers
            .iter_mut()
            .zip(layouts)
            .map(|(buf, &(layout, width, height))| {
                let sample_bytes = layout.sample_bytes(width, height);
                let bytes = buf.as_mut_slice();
                assert!(bytes.len() >= b * sample_bytes, "view buffer size");
                Slots { base: bytes.as_mut_ptr(), sample_bytes, layout, width, height }
            })
            .collect();
        Self {
            seq,
            plan,
            slots,
            buffers: Mutex::new(Some(buffers)),
            labels: (0..b).map(|_| AtomicU32::new(0)).collect(),
            remaining: AtomicUsize::new(b),
            substitutions: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        }
    }
}

/// What every worker shares.
pub(crate) struct Shared {
    pub dataset: Arc<Dataset>,
    pub recipe: Recipe,
    pub seed: u64,
    pub decode: DecodePlanOptions,
    pub base_decode: DecodeOptions,
    pub normalize: Normalize,
    pub counters: Counters,
}

/// One worker's reusable buffers.
#[derive(Default)]
pub(crate) struct Scratch {
    image: RgbImage,
    decode: DecodePlan,
    views: ViewScratch,
    geometry: Vec<ViewGeometry>,
}

/// Runs samples `range` of `job`. Returns true when this call finished the job.
pub(crate) fn run_chunk(
    shared: &Shared,
    job: &Job,
    range: std::ops::Range<usize>,
    scratch: &mut Scratch,
) -> bool {
    let n = range.len();
    for i in range {
        run_sample(shared, job, i, scratch);
    }
    shared.counters.samples.fetch_add(n as u64, Ordering::Relaxed);
    // AcqRel: the last finisher sees every other worker's writes before handing the job over.
    job.remaining.fetch_sub(n, Ordering::AcqRel) == n
}

fn run_sample(shared: &Shared, job: &Job, i: usize, scratch: &mut Scratch) {
    let plan = &job.plan;
    let index = plan.indices[i];
    let params: Vec<&ViewParams> = plan.views.iter().map(|v| &v[i]).collect();
    let reason = match render_record(shared, job, i, index, &params, scratch) {
        Ok(()) => return,
        Err(reason) => reason,
    };
    let n = shared.dataset.num_records();
    for attempt in 0..MAX_SUBSTITUTES {
        let key = [shared.seed, STREAM_SUBSTITUTE, plan.epoch, plan.step, i as u64, attempt];
        let replacement = KeyedRng::new(&key).below(n);
        let size = shared.dataset.size(replacement);
        let views = plan_views(&shared.recipe, shared.seed, plan.epoch, replacement, size);
        let refs: Vec<&ViewParams> = views.iter().collect();
        if render_record(shared, job, i, replacement, &refs, scratch).is_ok() {
            shared.counters.substitutions.fetch_add(1, Ordering::Relaxed);
            let sub = Substitution { sample: i, failed: index, replacement, reason };
            job.substitutions.lock().unwrap_or_else(|e| e.into_inner()).push((sub, views));
            return;
        }
    }
    let mut failure = job.failure.lock().unwrap_or_else(|e| e.into_inner());
    failure.get_or_insert(format!(
        "record {index}: {reason}; and {MAX_SUBSTITUTES} substitutes failed to decode too"
    ));
}

/// Decodes record `index` once and renders all its views into sample slot `i`.
fn render_record(
    shared: &Shared,
    job: &Job,
    i: usize,
    index: u64,
    params: &[&ViewParams],
    s: &mut Scratch,
) -> Result<(), String> {
    let t0 = Instant::now();
    // The crc32c check (hardware crc, ~3 us for a 100 KB record) turns a flipped bit on disk into a
    // counted substitution instead of a silently wrong image.
    let record = shared.dataset.verify_record(index as usize).map_err(|e| e.to_string())?;
    let t1 = Instant::now();
    Counters::add(&shared.counters.read_ns, t1 - t0);
    s.geometry.clear();
    for (v, p) in params.iter().enumerate() {
        let spec = &shared.recipe.views[v];
        s.geometry.push(ViewGeometry { crop: p.crop, width: spec.width, height: spec.height });
    }
    s.decode
        .plan(record.width, record.height, &s.geometry, &shared.decode)
        .map_err(|e| format!("record {index}: {e}"))?;
    decode_jpeg(record.bytes, &s.decode.decode_options(&shared.base_decode), &mut s.image)
        .map_err(|e| format!("record {index}: {e}"))?;
    let t2 = Instant::now();
    Counters::add(&shared.counters.decode_ns, t2 - t1);
    for (v, slots) in job.slots.iter().enumerate() {
        // SAFETY: sample `i` of view `v` is the byte range [i * sample_bytes, (i+1) *
        // sample_bytes) of a live buffer owned by `job`; only this task writes sample `i` (see
        // `Slots`), and nobody reads the buffer until the job's last chunk completes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                slots.base.add(i * slots.sample_bytes),
                slots.sample_bytes,
            )
        };
        let out = match slots.layout {
            ViewLayout::U8Nhwc => {
                ViewOutput::U8Hwc { pixels: bytes, width: slots.width, height: slots.height }
            }
            ViewLayout::F32Nchw => {
                // SAFETY: buffers are 64-byte aligned and sample_bytes is a multiple of 4, so
                // the slot is 4-byte aligned; any bit pattern is a valid f32.
                let (pre, floats, post) = unsafe { bytes.align_to_mut::<f32>() };
                if !pre.is_empty() || !post.is_empty() {
                    return Err("f32 view buffer is not 4-byte aligned".into());
                }
                ViewOutput::F32Chw {
                    pixels: floats,
                    width: slots.width,
                    height: slots.height,
                    normalize: shared.normalize,
                }
            }
        };
        render_view(&s.image, &s.decode.boxes()[v], params[v], out, &mut s.views)
            .map_err(|e| format!("record {index}: view {v}: {e}"))?;
    }
    Counters::add(&shared.counters.render_ns, t2.elapsed());
    job.labels[i].store(record.label, Ordering::Relaxed);
    Ok(())
}
