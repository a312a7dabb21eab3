//! Pipeline tests on real photos (the ImageNet-like files of `make data`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use regioncl_augment::jpeg_info;

use super::*;
use crate::builder::LoaderBuilder;
use crate::dataset::Dataset;
use crate::manifest::Manifest;
use crate::recipe::Recipe;
use crate::swap::{SwapConfig, SwapPlanConfig};

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("REGIONCL_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/data"),
        PathBuf::from,
    );
    assert!(
        dir.join("imagenet-like").is_dir(),
        "{}: no test photos; run `make data`",
        dir.display()
    );
    dir
}

/// A dataset of `n` real JPEGs (plus `corrupt` records of garbage bytes) in two shards.
fn dataset(n: usize, corrupt: &[usize]) -> (tempdir::TempDir, Arc<Dataset>) {
    let src = data_dir().join("imagenet-like");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .flat_map(|c| std::fs::read_dir(c.unwrap().path()).unwrap().map(|f| f.unwrap().path()))
        .collect();
    files.sort();
    let step = files.len() / n;
    let dir = tempdir::TempDir::new();
    let mut shards = Vec::new();
    for (s, part) in [0..n / 2, n / 2..n].into_iter().enumerate() {
        let name = format!("shard-{s:05}.rcl");
        let mut w = crate::ShardWriter::create(dir.path().join(&name)).unwrap();
        for i in part {
            let bytes = std::fs::read(&files[i * step]).unwrap();
            let info = jpeg_info(&bytes).unwrap();
            if corrupt.contains(&i) {
                let junk: Vec<u8> = (0..5000u32).map(|k| (k * 7919 % 251) as u8).collect();
                w.push(&junk, 3, info.width, info.height).unwrap();
            } else {
                w.push(&bytes, (i % 10) as u32, info.width, info.height).unwrap();
            }
        }
        let mut info = w.finish().unwrap();
        info.file = name;
        shards.push(info);
    }
    let manifest = Manifest {
        format: crate::manifest::DATASET_FORMAT.into(),
        format_version: crate::manifest::DATASET_VERSION,
        num_records: shards.iter().map(|s| s.num_records).sum(),
        num_bytes: shards.iter().map(|s| s.num_bytes).sum(),
        class_names: (0..10).map(|c| format!("c{c}")).collect(),
        shards,
        converter: Default::default(),
    };
    manifest.write(dir.path()).unwrap();
    let ds = Arc::new(Dataset::open(dir.path()).unwrap());
    (dir, ds)
}

/// A loader over `ds`: seed 5, batches of `batch`, 2 threads, one epoch.
fn builder(ds: &Arc<Dataset>, batch: usize, recipe: Recipe) -> LoaderBuilder {
    LoaderBuilder::new(ds.clone())
        .recipe(recipe)
        .batch_size(batch)
        .seed(5)
        .threads(2)
        .end_epoch(Some(1))
}

fn swap() -> Option<SwapPlanConfig> {
    Some(SwapPlanConfig { swap: SwapConfig::paper(224), bn_groups: 2 })
}

fn digest(batches: impl Iterator<Item = Result<Batch>>) -> Vec<(u64, u64, u64)> {
    batches
        .map(|b| {
            let b = b.unwrap();
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            for v in 0..b.num_views() {
                for &x in b.view(v).bytes {
                    h = (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
                }
            }
            (b.epoch(), b.step(), h)
        })
        .collect()
}

#[test]
fn output_is_identical_for_any_thread_count_and_resume_reproduces_it() {
    let (_tmp, ds) = dataset(40, &[]);
    let run = |threads, (epoch, step)| {
        let b = builder(&ds, 8, Recipe::mocov2(224)).region_swap(swap()).end_epoch(Some(2));
        digest(b.threads(threads).start(epoch, step).build().unwrap())
    };
    let one = run(1, (0, 0));
    assert_eq!(one.len(), 10, "2 epochs of 5 steps");
    assert_eq!(one.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>()[..3], [(0, 0), (0, 1), (0, 2)]);
    assert_eq!(run(3, (0, 0)), one, "3 threads give the same bytes as 1");
    assert_eq!(run(2, (1, 2)), one[7..], "resume at (1, 2) gives the uninterrupted run's batches");
}

/// Without drop_last, an epoch of 20 records in batches of 8 is 8 + 8 + 4: every record once, the
/// short batch's views sized to its 4 samples and rendered as a full batch renders them.
#[test]
fn a_kept_partial_last_batch_covers_the_epoch() {
    let (_tmp, ds) = dataset(20, &[]);
    let recipe = Recipe::eval_center(73, 64);
    let kept = builder(&ds, 8, recipe.clone()).drop_last(false);
    assert_eq!(kept.steps_per_epoch().unwrap(), 3);
    let batches: Vec<Batch> = kept.build().unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), [8, 8, 4]);
    let mut seen: Vec<u64> = batches.iter().flat_map(|b| b.plan().indices.clone()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    let last = &batches[2];
    assert_eq!(last.view(0).bytes.len(), 4 * 64 * 64 * 3);
    assert_eq!(last.labels().len(), 4);
    // The same records in one full batch of 20 (view parameters depend on the record only).
    let all = builder(&ds, 20, recipe).threads(1).build().unwrap().next().unwrap().unwrap();
    let sample = 64 * 64 * 3;
    for (i, &idx) in last.plan().indices.iter().enumerate() {
        let j = all.plan().indices.iter().position(|&x| x == idx).unwrap();
        assert_eq!(
            last.view(0).bytes[i * sample..(i + 1) * sample],
            all.view(0).bytes[j * sample..(j + 1) * sample]
        );
    }
    // Drop-last stays the default; a swap refuses a partial batch.
    assert_eq!(builder(&ds, 8, Recipe::mocov2(224)).steps_per_epoch().unwrap(), 2);
    assert!(
        builder(&ds, 8, Recipe::mocov2(224)).region_swap(swap()).drop_last(false).build().is_err()
    );
}

#[test]
fn labels_and_views_follow_the_plan() {
    let (_tmp, ds) = dataset(24, &[]);
    let b = builder(&ds, 8, Recipe::mocov2(96)).build().unwrap().next().unwrap().unwrap();
    assert_eq!(b.len(), 8);
    assert_eq!(b.num_views(), 2);
    for (i, &idx) in b.plan().indices.iter().enumerate() {
        assert_eq!(b.labels()[i], ds.record(idx as usize).unwrap().label);
    }
    let v = b.view(1);
    assert_eq!(
        (v.layout, v.width, v.height, v.bytes.len()),
        (ViewLayout::U8Nhwc, 96, 96, 8 * 96 * 96 * 3)
    );
    // Real photos: views are not blank.
    assert!(v.bytes.iter().any(|&x| x > 30) && v.bytes.iter().any(|&x| x < 220));
    assert!(b.plan().swap.is_none());
}

#[test]
fn cpu_colour_recipe_writes_normalized_f32_views() {
    let (_tmp, ds) = dataset(16, &[]);
    let recipe = Recipe { color_on: ColorOn::Cpu, ..Recipe::mocov2(64) };
    let b = builder(&ds, 4, recipe).build().unwrap().next().unwrap().unwrap();
    let v = b.view(0);
    assert_eq!(v.layout, ViewLayout::F32Nchw);
    let x = v.as_f32();
    assert_eq!(x.len(), 4 * 3 * 64 * 64);
    // (0 - 0.485) / 0.229 = -2.12 and (1 - 0.406) / 0.225 = 2.64 bound every normalized value.
    assert!(x.iter().all(|&f| f.is_finite() && (-2.2..=2.7).contains(&f)));
    assert!(x.iter().any(|&f| f < -0.5) && x.iter().any(|&f| f > 0.5));
}

#[test]
fn corrupt_records_are_replaced_deterministically_and_reported() {
    let (_tmp, ds) = dataset(32, &[1, 2, 17]);
    let run = |threads| {
        let mut p = builder(&ds, 8, Recipe::mocov2(96)).threads(threads).build().unwrap();
        let mut subs = Vec::new();
        for b in p.by_ref() {
            let b = b.unwrap();
            for s in b.substitutions() {
                assert!([1, 2, 17].contains(&s.failed), "{s:?}");
                assert!(![1, 2, 17].contains(&s.replacement));
                assert_eq!(b.plan().indices[s.sample], s.replacement);
                assert!(s.reason.contains(&format!("(record {})", s.failed)), "{}", s.reason);
                assert!(s.reason.contains("does not decode"), "{}", s.reason);
                subs.push(s.clone());
            }
        }
        (subs, p.stats().substitutions)
    };
    let (a, na) = run(1);
    assert_eq!(a.len(), 3, "every corrupt record was drawn once in the epoch and replaced");
    assert_eq!(na, 3);
    assert_eq!(run(2).0, a, "the same substitutes whatever the thread count");
}

/// Evaluation's policies: `Fail` makes the batch holding a bad record an error naming it (the
/// lowest bad sample whatever the threads); `Skip` leaves it out, the batch shorter and its
/// remaining views those of the full batch.
#[test]
fn bad_records_fail_or_are_skipped_as_asked() {
    let (_tmp, ds) = dataset(16, &[3, 5]);
    let eval = || builder(&ds, 8, Recipe::eval_center(73, 64)).shuffle(false);
    let mut failing = eval().bad_records(BadRecords::Fail).build().unwrap();
    let err = failing.next().unwrap().unwrap_err();
    let Error::Pipeline(PipelineError::BadRecord { epoch: 0, step: 0, source }) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(source.index, 3, "{err}");
    assert!(source.location.contains("shard-00000.rcl: record 3 at offset"), "{}", source.location);
    assert_eq!(failing.next().unwrap().unwrap().len(), 8, "the next batch is fine");

    let mut skipping = eval().bad_records(BadRecords::Skip).build().unwrap();
    let b = skipping.next().unwrap().unwrap();
    assert_eq!(b.len(), 6);
    assert_eq!(b.plan().indices, [0, 1, 2, 4, 6, 7]);
    assert_eq!(b.skipped().iter().map(|s| s.record).collect::<Vec<_>>(), [3, 5]);
    assert_eq!(b.view(0).bytes.len(), 6 * 64 * 64 * 3);
    let full = eval().bad_records(BadRecords::Replace).build().unwrap().next().unwrap().unwrap();
    let px = 64 * 64 * 3;
    for (i, j) in [(0, 0), (3, 4), (5, 7)] {
        assert_eq!(b.view(0).bytes[i * px..(i + 1) * px], full.view(0).bytes[j * px..(j + 1) * px]);
    }
    assert_eq!(b.labels(), [0, 1, 2, 4, 6, 7].map(|i| i % 10));
    assert_eq!(skipping.stats().skipped, 2);
}

/// Issue 12 #17: a batch of nothing but bad records is an error, not a batch of substitutes.
#[test]
fn a_batch_whose_every_record_is_bad_is_an_error() {
    let (_tmp, ds) = dataset(8, &[0, 1, 2, 3]);
    for policy in [BadRecords::Replace, BadRecords::Skip] {
        let mut p = builder(&ds, 4, Recipe::eval_center(73, 64)).shuffle(false).bad_records(policy);
        let err = p.build().unwrap().next().unwrap().unwrap_err();
        assert!(
            matches!(err, Error::Pipeline(PipelineError::AllBad { len: 4, .. })),
            "{policy:?}: {err}"
        );
        p = p.start(0, 1);
        assert_eq!(p.build().unwrap().next().unwrap().unwrap().len(), 4);
    }
}

/// Issue 12 #17: collecting an evaluation epoch longer than the ring would wait forever for a
/// free buffer; it is an error naming the fix instead.
#[test]
fn a_consumer_holding_every_buffer_gets_an_error_not_a_hang() {
    let (_tmp, ds) = dataset(24, &[]);
    let p = builder(&ds, 4, Recipe::mocov2(64)).batches_ahead(3).build().unwrap();
    let results: Vec<Result<Batch>> = p.take(4).collect();
    assert!(results[..3].iter().all(|r| r.is_ok()));
    let err = results[3].as_ref().unwrap_err();
    assert!(
        matches!(err, Error::Pipeline(PipelineError::AllBuffersHeld { batches_ahead: 3 })),
        "{err}"
    );
    assert!(err.to_string().contains("raise batches_ahead"), "{err}");
}

/// Issue 12 #17: the steps of an epoch and the batches left are known from the pipeline itself.
#[test]
fn size_hint_and_steps_per_epoch_come_from_the_pipeline() {
    let (_tmp, ds) = dataset(24, &[]);
    let mut p = builder(&ds, 4, Recipe::mocov2(64)).end_epoch(Some(2)).start(0, 2).build().unwrap();
    assert_eq!(p.steps_per_epoch(), 6);
    assert_eq!(p.size_hint(), (10, Some(10)));
    assert_eq!(p.next_position(), (0, 2));
    drop(p.next());
    assert_eq!((p.size_hint(), p.next_position()), ((9, Some(9)), (0, 3)));
    assert_eq!(p.by_ref().count(), 9);
    assert_eq!(p.next_position(), (2, 0));
    let open = builder(&ds, 4, Recipe::mocov2(64)).end_epoch(None).build().unwrap();
    assert_eq!(open.size_hint(), (usize::MAX, None));
}

#[derive(Default)]
struct CountingAllocator(AtomicUsize);

impl BufferAllocator for CountingAllocator {
    fn allocate(&self, bytes: usize) -> std::result::Result<Box<dyn HostBuffer>, AllocError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        HeapAllocator.allocate(bytes)
    }
}

#[test]
fn buffers_come_from_the_allocator_once_and_circulate() {
    let (_tmp, ds) = dataset(24, &[]);
    let alloc = Arc::new(CountingAllocator::default());
    let p = builder(&ds, 4, Recipe::mocov2(64))
        .end_epoch(Some(4))
        .batches_ahead(3)
        .allocator(alloc.clone())
        .build()
        .unwrap();
    let mut held = Vec::new();
    let mut n = 0;
    for b in p {
        // Hold one batch at a time besides the pipeline's own: the ring must keep going.
        held.push(b.unwrap());
        if held.len() > 1 {
            held.remove(0);
        }
        n += 1;
    }
    assert_eq!(n, 4 * 6);
    assert_eq!(alloc.0.load(Ordering::Relaxed), 3 * 2, "batches_ahead sets of one buffer per view");
}

#[test]
fn center_crop_recipe_is_deterministic_and_unflipped() {
    let (_tmp, ds) = dataset(16, &[]);
    let b = builder(&ds, 8, Recipe::eval_center(73, 64)).shuffle(false).build().unwrap();
    let b = b.into_iter().next().unwrap().unwrap();
    assert_eq!(b.plan().indices, (0..8).collect::<Vec<u64>>());
    for (i, v) in b.plan().views[0].iter().enumerate() {
        let r = ds.record(i).unwrap();
        let short = r.width.min(r.height);
        assert!(!v.flip && !v.has_color_ops());
        // The plan holds torchvision's window rounded to whole pixels (the worker renders the
        // exact one): its short side is 64 resized pixels.
        let px = f64::from(short) / 73.0;
        let side = v.crop.w.min(v.crop.h);
        assert!(
            side.abs_diff((64.0 * px).round() as u32) <= 1,
            "{side} for a short side of {short}"
        );
        // Centred within one resized pixel (torchvision rounds the start in resized pixels, and
        // floors the longer side), plus a pixel of rounding at each edge.
        let off = |start: u32, len: u32, size: u32| f64::from((2 * start + len).abs_diff(size));
        assert!(off(v.crop.x, v.crop.w, r.width) <= 2.0 * px + 2.0, "{:?} of {}", v.crop, r.width);
        assert!(
            off(v.crop.y, v.crop.h, r.height) <= 2.0 * px + 2.0,
            "{:?} of {}",
            v.crop,
            r.height
        );
    }
}

/// A temporary directory removed on drop (no external crate needed).
mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("regioncl-pipeline-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
