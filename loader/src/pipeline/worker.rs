//! The worker side: one job per batch, split into chunks of samples; each sample is decoded once
//! (the cheapest decode covering all its views) and every view is written straight into its slot.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use regioncl_augment::{
    CropBox, DecodeOptions, DecodePlan, DecodePlanOptions, KeyedRng, Normalize, Rect, RgbImage,
    ViewGeometry, ViewOutput, ViewParams, ViewScratch, ViewSpec, render_view, render_window,
};

use crate::pipeline::BadRecords;
use crate::pipeline::batch::{SkippedRecord, Substitution, ViewLayout};
use crate::pipeline::buffer::BufferSet;
use crate::pipeline::stats::Counters;
use crate::plan::{BatchPlan, center_box, plan_views};
use crate::recipe::{Recipe, Sampling};
use crate::record::{BadRecord, BadRecordKind, chain, decode};
use crate::source::RecordSource;

/// Stream tag of substitute draws in the keyed generator.
const STREAM_SUBSTITUTE: u64 = 0x7375_6273; // "subs"
/// Substitutes tried before a batch fails.
pub(crate) const MAX_SUBSTITUTES: u64 = 16;

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

/// Why a job failed, with the sample it failed at (the lowest wins, so the error does not depend
/// on the thread count).
#[derive(Debug)]
pub(crate) enum JobFailure {
    /// A bad record under [`BadRecords::Fail`].
    Bad(BadRecord),
    /// A bad record whose substitutes were all bad too.
    NoSubstitute(BadRecord),
}

/// A batch in flight.
pub(crate) struct Job {
    pub seq: u64,
    pub plan: BatchPlan,
    pub slots: Vec<Slots>,
    pub buffers: Mutex<Option<BufferSet>>,
    pub labels: Vec<AtomicU32>,
    pub remaining: AtomicUsize,
    pub substitutions: Mutex<Vec<(Substitution, Vec<ViewParams>)>>,
    pub skipped: Mutex<Vec<(usize, SkippedRecord)>>,
    pub failure: Mutex<Option<(usize, JobFailure)>>,
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
            skipped: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        }
    }

    fn fail(&self, sample: usize, failure: JobFailure) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|(s, _)| sample < *s) {
            *slot = Some((sample, failure));
        }
    }
}

/// What every worker shares.
pub(crate) struct Shared {
    pub source: Arc<dyn RecordSource>,
    pub recipe: Recipe,
    pub seed: u64,
    pub decode: DecodePlanOptions,
    pub base_decode: DecodeOptions,
    pub normalize: Normalize,
    pub bad_records: BadRecords,
    pub counters: Counters,
}

/// One worker's reusable buffers.
#[derive(Default)]
pub(crate) struct Scratch {
    bytes: Vec<u8>,
    image: RgbImage,
    decode: DecodePlan,
    views: ViewScratch,
    geometry: Vec<ViewGeometry>,
    /// The evaluation crop's exact windows, per view.
    windows: Vec<CropBox>,
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
    let bad = match render_record(shared, job, i, index, &params, scratch) {
        Ok(()) => return,
        Err(bad) => bad,
    };
    match shared.bad_records {
        BadRecords::Fail => job.fail(i, JobFailure::Bad(bad)),
        BadRecords::Skip => {
            shared.counters.skipped.fetch_add(1, Ordering::Relaxed);
            let skipped = SkippedRecord { record: index, reason: chain(&bad) };
            job.skipped.lock().unwrap_or_else(|e| e.into_inner()).push((i, skipped));
        }
        BadRecords::Replace => {
            let n = shared.source.num_records();
            for attempt in 0..MAX_SUBSTITUTES {
                // Keyed by the failed record, not its position: the same substitute whatever the
                // batch and world size.
                let key = [shared.seed, STREAM_SUBSTITUTE, plan.epoch, index, attempt];
                let replacement = KeyedRng::new(&key).below(n);
                let (recipe, source) = (&shared.recipe, shared.source.as_ref());
                let views = plan_views(recipe, shared.seed, plan.epoch, source, replacement);
                let refs: Vec<&ViewParams> = views.iter().collect();
                if render_record(shared, job, i, replacement, &refs, scratch).is_ok() {
                    shared.counters.substitutions.fetch_add(1, Ordering::Relaxed);
                    let reason = chain(&bad);
                    let sub = Substitution { sample: i, failed: index, replacement, reason };
                    job.substitutions.lock().unwrap_or_else(|e| e.into_inner()).push((sub, views));
                    return;
                }
            }
            job.fail(i, JobFailure::NoSubstitute(bad));
        }
    }
}

/// Decodes record `index` once and renders all its views into sample slot `i`.
fn render_record(
    shared: &Shared,
    job: &Job,
    i: usize,
    index: u64,
    params: &[&ViewParams],
    s: &mut Scratch,
) -> Result<(), BadRecord> {
    let source = shared.source.as_ref();
    let bad = |kind| BadRecord::new(source, index, kind);
    let t0 = Instant::now();
    let record =
        source.read(index, &mut s.bytes).map_err(|e| bad(BadRecordKind::Read(Box::new(e))))?;
    let t1 = Instant::now();
    Counters::add(&shared.counters.read_ns, t1 - t0);
    // The evaluation crop (torchvision's Resize + CenterCrop) is rendered as the exact window of
    // the full resize, from a full-scale decode that holds the filter's reach around it: a DCT
    // scale or a crop cut to whole pixels would each move it several levels from torchvision's.
    let center = match shared.recipe.sampling {
        Sampling::Center { resize } => Some(resize),
        _ => None,
    };
    s.geometry.clear();
    s.windows.clear();
    for (v, p) in params.iter().enumerate() {
        let spec = &shared.recipe.views[v];
        let crop = match center {
            None => p.crop,
            Some(resize) => {
                let window =
                    center_box(record.width, record.height, resize, spec.width, spec.height);
                s.windows.push(window);
                reach(&window, spec, record.width, record.height)
            }
        };
        s.geometry.push(ViewGeometry { crop, width: spec.width, height: spec.height });
    }
    let options = match center {
        None => shared.decode,
        Some(_) => DecodePlanOptions { dct_scaling: false, ..shared.decode },
    };
    s.decode
        .plan(record.width, record.height, &s.geometry, &options)
        .map_err(|e| bad(BadRecordKind::Decode(e)))?;
    decode(&record, &s.decode.decode_options(&shared.base_decode), &mut s.image).map_err(bad)?;
    let label = record.label;
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
                // SAFETY: any bit pattern is a valid f32. The pipeline checked at start that the
                // buffers are 4-byte aligned and sample_bytes is a multiple of 4, so `floats` is
                // the whole slot (were it not, render_view would refuse its length).
                let (_, floats, _) = unsafe { bytes.align_to_mut::<f32>() };
                ViewOutput::F32Chw {
                    pixels: floats,
                    width: slots.width,
                    height: slots.height,
                    normalize: shared.normalize,
                }
            }
        };
        let rendered = match center {
            None => render_view(&s.image, &s.decode.boxes()[v], params[v], out, &mut s.views),
            Some(_) => {
                // The window, in the coordinates of the decoded region (full scale).
                let (region, w) = (s.decode.region(), s.windows[v]);
                let window =
                    CropBox { x: w.x - f64::from(region.x), y: w.y - f64::from(region.y), ..w };
                render_window(&s.image, &window, params[v], out, &mut s.views)
            }
        };
        rendered.map_err(|source| bad(BadRecordKind::Render { view: v, source }))?;
    }
    Counters::add(&shared.counters.render_ns, t2.elapsed());
    job.labels[i].store(label, Ordering::Relaxed);
    Ok(())
}

/// The pixels of a `w` x `h` image that resizing `window` to `spec`'s size reads: the window grown
/// by the filter's reach (its support times the downscale, at least the support) and one pixel,
/// clamped to the image.
fn reach(window: &CropBox, spec: &ViewSpec, w: u32, h: u32) -> Rect {
    let support = spec.interpolation.support();
    let rx = support * (window.w / f64::from(spec.width)).max(1.0) + 1.0;
    let ry = support * (window.h / f64::from(spec.height)).max(1.0) + 1.0;
    let x0 = (window.x - rx).floor().max(0.0) as u32;
    let y0 = (window.y - ry).floor().max(0.0) as u32;
    let x1 = ((window.x + window.w + rx).ceil() as u32).min(w);
    let y1 = ((window.y + window.h + ry).ceil() as u32).min(h);
    Rect::new(x0, y0, x1 - x0, y1 - y0)
}
