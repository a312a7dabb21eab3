//! `regioncl bench loader`: loader throughput against its two baselines, measured in the same run:
//! the pure libjpeg-turbo decode rate of the same records on the same threads (the floor every
//! JPEG loader stands on), and a PyTorch DataLoader with torchvision transforms on the same bytes
//! and cores (`scripts/bench_loader_torch.py`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use regioncl_augment::{DecodeOptions, Interpolation, RgbImage, ViewSpec, decode_jpeg};
use regioncl_loader::{ColorOn, Dataset, LoaderBuilder, Recipe, SwapConfig, SwapPlanConfig};
use serde::Serialize;

/// The view recipes the benchmark knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipeName {
    /// Two views, crop + resize + flip on the CPU, u8 out (colour is the trainer's, on the GPU).
    Geometry,
    /// Two views with the whole MoCo v2 augmentation on the CPU, normalized f32 out.
    Mocov2,
    /// 2 x size + 6 x 96 px views (multi-crop), geometry only.
    MultiCrop,
    /// One evaluation view: Resize(round(size * 256 / 224)) + CenterCrop(size), u8 out, rendered
    /// as torchvision's exact window from a full-scale decode.
    Eval,
}

/// Arguments of `regioncl bench loader`.
#[derive(Debug, Args)]
pub struct BenchLoaderArgs {
    /// Dataset directory (from `regioncl convert`).
    pub dataset: PathBuf,
    /// View recipe.
    #[arg(long, value_enum, default_value = "geometry")]
    pub recipe: RecipeName,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Samples per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Output size of the main views.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Timed batches per run (after one warm-up epoch of page-cache filling).
    #[arg(long, default_value_t = 40)]
    pub batches: usize,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also run the PyTorch DataLoader baseline (needs the venv: REGIONCL_PYTHON or .venv).
    #[arg(long)]
    pub compare_torchvision: bool,
    /// Print a hash of every byte delivered by the first run (to check determinism across thread
    /// counts from the shell).
    #[arg(long)]
    pub digest: bool,
    /// Run this many whole epochs instead, printing resident memory after each.
    #[arg(long)]
    pub memory_epochs: Option<u64>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    dataset: String,
    recipe: RecipeName,
    threads: usize,
    batch: usize,
    size: u32,
    samples_per_sec: f64,
    samples_per_sec_per_core: f64,
    decode_floor_per_sec: f64,
    ratio_to_decode_floor: f64,
    torchvision_samples_per_sec: Option<f64>,
    ratio_to_torchvision: Option<f64>,
    stage_ms_per_sample: Stages,
    digest: Option<String>,
    runs: Vec<f64>,
}

#[derive(Debug, Serialize, Default)]
struct Stages {
    read: f64,
    decode: f64,
    render: f64,
}

fn recipe(name: RecipeName, size: u32) -> Recipe {
    match name {
        RecipeName::Geometry => {
            Recipe { views: vec![ViewSpec::geometry_only(size); 2], ..Recipe::mocov2(size) }
        }
        RecipeName::Mocov2 => Recipe { color_on: ColorOn::Cpu, ..Recipe::mocov2(size) },
        RecipeName::Eval => {
            Recipe::eval_center(regioncl_trainer::EvalView::for_crop(size).resize, size)
        }
        RecipeName::MultiCrop => {
            // DINO's 2 + 6 crops and scales (global views at `size`), geometry only, bilinear.
            let mut r = Recipe::dino(2, 6);
            for v in &mut r.views {
                let side = if v.width == 224 { size } else { v.width };
                *v = ViewSpec {
                    width: side,
                    height: side,
                    interpolation: Interpolation::Bilinear,
                    jitter_p: 0.0,
                    grayscale_p: 0.0,
                    blur_p: 0.0,
                    solarize_p: 0.0,
                    ..*v
                };
            }
            r
        }
    }
}

/// The benchmark's loader: a fresh shuffle per epoch and, when the size allows, the RegionCL swap
/// box planned per batch (it is part of every RegionCL plan).
fn loader(ds: &Arc<Dataset>, args: &BenchLoaderArgs, threads: usize) -> LoaderBuilder {
    let swap = SwapConfig::paper(args.size);
    let swap = (swap.validate().is_ok() && args.batch.is_multiple_of(2))
        .then_some(SwapPlanConfig { swap, bn_groups: 1 });
    LoaderBuilder::new(ds.clone())
        .recipe(recipe(args.recipe, args.size))
        .batch_size(args.batch)
        .region_swap(swap)
        .threads(threads)
}

/// One timed run: returns (samples/s, stage times per sample, digest).
fn run_once(
    ds: &Arc<Dataset>,
    args: &BenchLoaderArgs,
    threads: usize,
) -> Result<(f64, Stages, u64)> {
    let loader = loader(ds, args, threads);
    let steps = loader.steps_per_epoch()? as usize;
    let mut pipeline = loader.build()?;
    // Warm-up: one pass over the data (page cache, allocator, thread start-up).
    for _ in 0..steps.min(args.batches) {
        pipeline.next().context("pipeline ended early")??;
    }
    let before = pipeline.stats();
    let t0 = Instant::now();
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..args.batches {
        let b = pipeline.next().context("pipeline ended early")??;
        if args.digest {
            for v in 0..b.num_views() {
                digest = fnv(digest, b.view(v).bytes);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = pipeline.stats();
    let n = (after.samples - before.samples).max(1) as f64;
    let ms = |a: std::time::Duration, b: std::time::Duration| (a - b).as_secs_f64() * 1e3 / n;
    let stages = Stages {
        read: ms(after.read, before.read),
        decode: ms(after.decode, before.decode),
        render: ms(after.render, before.render),
    };
    Ok(((args.batches * args.batch) as f64 / secs, stages, digest))
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Full libjpeg-turbo decodes of the same records on `threads` threads: images/s.
fn decode_floor(ds: &Arc<Dataset>, threads: usize, count: usize) -> Result<f64> {
    let n = ds.len().min(count).max(1);
    let t0 = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<()> {
                    let mut img = RgbImage::new();
                    for i in (t..n).step_by(threads) {
                        let r = ds.record(i)?;
                        decode_jpeg(r.bytes, &DecodeOptions::default(), &mut img)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("decode thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

fn torchvision(args: &BenchLoaderArgs, threads: usize) -> Result<f64> {
    let recipe = match args.recipe {
        RecipeName::Geometry => "geometry",
        RecipeName::Mocov2 => "mocov2",
        RecipeName::Eval => "eval",
        RecipeName::MultiCrop => bail!("the torchvision baseline covers geometry, mocov2 and eval"),
    };
    let python = crate::cmd::venv_python()?;
    let script = crate::cmd::repo_file("scripts/bench_loader_torch.py")?;
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&args.dataset)
        .args(["--recipe", recipe, "--size", &args.size.to_string()])
        .args(["--workers", &threads.to_string(), "--batch", &args.batch.to_string()])
        .args(["--batches", &args.batches.min(20).to_string()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or(""))
        .with_context(|| format!("parsing the baseline's output {line:?}"))?;
    v["samples_per_sec"].as_f64().context("no samples_per_sec in the baseline's output")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn memory(ds: &Arc<Dataset>, args: &BenchLoaderArgs, threads: usize, epochs: u64) -> Result<()> {
    const BATCHES_AHEAD: usize = 4;
    let loader = loader(ds, args, threads).end_epoch(Some(epochs)).batches_ahead(BATCHES_AHEAD);
    let steps = loader.steps_per_epoch()?;
    let ring: usize = {
        let r = recipe(args.recipe, args.size);
        let per = if r.color_on == ColorOn::Cpu { 12 } else { 3 };
        r.views.iter().map(|v| (v.width * v.height) as usize * per).sum::<usize>()
            * args.batch
            * BATCHES_AHEAD
    };
    println!(
        "ring: {} batches of {:.1} MiB = {:.1} MiB; dataset mapped: {:.1} MiB",
        BATCHES_AHEAD,
        ring as f64 / BATCHES_AHEAD as f64 / 1048576.0,
        ring as f64 / 1048576.0,
        ds.shards().iter().map(|s| s.file_len()).sum::<u64>() as f64 / 1048576.0
    );
    println!("before start: rss {:.1} MiB", rss_mib());
    let mut pipeline = loader.build()?;
    let mut n = 0u64;
    for b in pipeline.by_ref() {
        let b = b?;
        n += 1;
        if n.is_multiple_of(steps) {
            println!("epoch {}: rss {:.1} MiB", b.epoch(), rss_mib());
        }
    }
    let s = pipeline.stats();
    println!("{} batches, {:.0} samples/s", s.batches, s.samples_per_sec());
    Ok(())
}

/// Runs the benchmark.
pub fn run(args: BenchLoaderArgs) -> Result<()> {
    let ds = Arc::new(
        Dataset::open(&args.dataset)
            .with_context(|| format!("opening {}", args.dataset.display()))?,
    );
    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if let Some(epochs) = args.memory_epochs {
        return memory(&ds, &args, threads, epochs);
    }
    let mut rates = Vec::new();
    let mut floors = Vec::new();
    let mut stages = Stages::default();
    let mut digest = None;
    for run in 0..args.runs.max(1) {
        let (rate, st, d) = run_once(&ds, &args, threads)?;
        // The floor is measured between the loader runs, so both see the same machine state.
        floors.push(decode_floor(&ds, threads, args.batches * args.batch)?);
        if run == 0 {
            stages = st;
            digest = args.digest.then(|| format!("{d:016x}"));
        }
        rates.push(rate);
    }
    let samples_per_sec = median(&mut rates.clone());
    let floor = median(&mut floors);
    let tv = if args.compare_torchvision { Some(torchvision(&args, threads)?) } else { None };
    let report = Report {
        dataset: args.dataset.display().to_string(),
        recipe: args.recipe,
        threads,
        batch: args.batch,
        size: args.size,
        samples_per_sec,
        samples_per_sec_per_core: samples_per_sec / threads as f64,
        decode_floor_per_sec: floor,
        ratio_to_decode_floor: samples_per_sec / floor,
        torchvision_samples_per_sec: tv,
        ratio_to_torchvision: tv.map(|t| samples_per_sec / t),
        stage_ms_per_sample: stages,
        digest,
        runs: rates,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("dataset     {}  ({} records)", report.dataset, ds.len());
    println!(
        "recipe      {:?}, {} threads, batch {}, size {}",
        args.recipe, threads, args.batch, args.size
    );
    println!(
        "regioncl    {:>8.0} samples/s  ({:.0} per core; runs {:?})",
        report.samples_per_sec,
        report.samples_per_sec_per_core,
        report.runs.iter().map(|r| r.round()).collect::<Vec<_>>()
    );
    println!(
        "decode      {:>8.0} images/s   (libjpeg-turbo full decode, same records and threads)",
        floor
    );
    println!("ratio       {:>8.2} x the decode floor", report.ratio_to_decode_floor);
    if let (Some(t), Some(r)) = (report.torchvision_samples_per_sec, report.ratio_to_torchvision) {
        println!("torchvision {t:>8.0} samples/s  (DataLoader, {threads} workers, PIL)");
        println!("ratio       {r:>8.2} x torchvision");
    }
    println!(
        "per sample  read {:.3} ms, decode {:.3} ms, render {:.3} ms (thread time)",
        report.stage_ms_per_sample.read,
        report.stage_ms_per_sample.decode,
        report.stage_ms_per_sample.render
    );
    if let Some(d) = &report.digest {
        println!("digest      {d}");
    }
    Ok(())
}
