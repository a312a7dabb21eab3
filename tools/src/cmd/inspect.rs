//! `regioncl inspect`: what a dataset holds; `--verify` checks every byte of it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use regioncl_loader::{Dataset, MAX_THREADS, write_atomic};
use serde::Serialize;

use super::printable;

/// Prints a dataset's counts, classes, shards and size statistics; verifies or extracts records.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The dataset directory (manifest.json + shard files).
    dataset: PathBuf,
    /// Check every shard's and record's crc32c and decode every record (strict); name each
    /// problem and exit non-zero if there is any.
    #[arg(long)]
    verify: bool,
    /// Threads for --verify (default: every core; at most 1024).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Write the bytes of record I (global index) to --out.
    #[arg(long, value_name = "I", requires = "out")]
    extract: Option<usize>,
    /// Where --extract writes.
    #[arg(long, value_name = "FILE", requires = "extract")]
    out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    dataset: String,
    format_version: u32,
    num_records: usize,
    num_classes: usize,
    num_shards: usize,
    num_bytes: u64,
    classes: Vec<ClassCount>,
    shards: Vec<ShardSummary>,
    record_bytes: Stats,
    width: Stats,
    height: Stats,
    converter: regioncl_loader::ConvertSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<Verify>,
}

#[derive(Debug, Serialize)]
struct ClassCount {
    label: usize,
    name: String,
    count: u64,
}

#[derive(Debug, Serialize)]
struct ShardSummary {
    file: String,
    num_records: u64,
    num_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
struct Stats {
    min: u64,
    mean: f64,
    max: u64,
}

#[derive(Debug, Serialize)]
struct Verify {
    records_checked: usize,
    problems: Vec<String>,
}

impl Stats {
    fn of(values: impl Iterator<Item = u64>) -> Stats {
        let (mut min, mut max, mut sum, mut n) = (u64::MAX, 0, 0u128, 0u64);
        for v in values {
            min = min.min(v);
            max = max.max(v);
            sum += u128::from(v);
            n += 1;
        }
        if n == 0 {
            return Stats::default();
        }
        Stats { min, mean: sum as f64 / n as f64, max }
    }
}

/// Runs `inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.threads <= MAX_THREADS,
        "threads {} exceeds the limit of {MAX_THREADS}",
        args.threads
    );
    let ds = Dataset::open(&args.dataset)
        .with_context(|| format!("open dataset {}", args.dataset.display()))?;
    if let (Some(index), Some(out)) = (args.extract, &args.out) {
        return extract(&ds, index, out);
    }
    let mut summary = summarize(&ds, &args.dataset)?;
    if args.verify {
        summary.verify = Some(verify(&ds, args.threads, args.json));
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary).context("serialize summary")?)?;
    } else {
        print_text(&summary)?;
    }
    if let Some(v) = &summary.verify
        && !v.problems.is_empty()
    {
        bail!("verify: {} problem(s) in {}", v.problems.len(), args.dataset.display());
    }
    Ok(())
}

/// Writes record `index`'s bytes to `out` atomically; `out` may not lie inside the dataset (the
/// temporary file and the rename would land among its shards).
fn extract(ds: &Dataset, index: usize, out: &Path) -> anyhow::Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let resolve =
        |p: &Path| std::fs::canonicalize(p).with_context(|| format!("resolve {}", p.display()));
    let dataset_dir = resolve(ds.dir())?;
    if resolve(parent)?.starts_with(&dataset_dir) {
        bail!(
            "--out {}: inside the dataset {}; write the record elsewhere",
            out.display(),
            ds.dir().display()
        );
    }
    let record = ds.verify_record(index).with_context(|| format!("extract record {index}"))?;
    write_atomic(out, record.bytes)?;
    let class = ds.class_names().get(record.label as usize).map_or("?", |s| s.as_str());
    eprintln!(
        "record {index}: {} bytes, {}x{}, label {} ({}) -> {}",
        record.bytes.len(),
        record.width,
        record.height,
        record.label,
        printable(class),
        out.display()
    );
    Ok(())
}

fn summarize(ds: &Dataset, dir: &std::path::Path) -> anyhow::Result<Summary> {
    let m = ds.manifest();
    let mut counts = vec![0u64; ds.num_classes()];
    let mut records = Vec::with_capacity(ds.len());
    for i in 0..ds.len() {
        let r = ds.record(i)?;
        counts[r.label as usize] += 1;
        records.push((r.bytes.len() as u64, u64::from(r.width), u64::from(r.height)));
    }
    Ok(Summary {
        dataset: dir.display().to_string(),
        format_version: m.format_version,
        num_records: ds.len(),
        num_classes: ds.num_classes(),
        num_shards: m.shards.len(),
        num_bytes: m.num_bytes,
        classes: ds
            .class_names()
            .iter()
            .zip(counts)
            .enumerate()
            .map(|(label, (name, count))| ClassCount { label, name: name.clone(), count })
            .collect(),
        shards: m
            .shards
            .iter()
            .map(|s| ShardSummary {
                file: s.file.clone(),
                num_records: s.num_records,
                num_bytes: s.num_bytes,
            })
            .collect(),
        record_bytes: Stats::of(records.iter().map(|r| r.0)),
        width: Stats::of(records.iter().map(|r| r.1)),
        height: Stats::of(records.iter().map(|r| r.2)),
        converter: m.converter.clone(),
        verify: None,
    })
}

/// [`Dataset::verify`] (the loader's one definition of a bad record: what training replaces and
/// evaluation refuses) with a progress bar. Returns the problems in record order, each with its
/// causes.
fn verify(ds: &Dataset, threads: usize, quiet: bool) -> Verify {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(ds.len() as u64) };
    if let Ok(style) =
        ProgressStyle::with_template("verify [{wide_bar}] {pos}/{len} {per_sec} ETA {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let report = ds.verify(threads, &|n| bar.inc(n));
    bar.finish_and_clear();
    let problems = report.problems.into_iter().map(|e| format!("{:#}", anyhow::Error::new(e)));
    Verify { records_checked: report.records_checked as usize, problems: problems.collect() }
}

fn print_text(s: &Summary) -> std::io::Result<()> {
    let dataset = printable(&s.dataset);
    outln!("dataset   {dataset} (format version {})", s.format_version)?;
    outln!("records   {}", s.num_records)?;
    outln!("bytes     {} ({:.1} MiB)", s.num_bytes, s.num_bytes as f64 / (1 << 20) as f64)?;
    let stat = |st: &Stats| format!("min {} / mean {:.1} / max {}", st.min, st.mean, st.max);
    outln!("record    bytes  {}", stat(&s.record_bytes))?;
    outln!("          width  {}", stat(&s.width))?;
    outln!("          height {}", stat(&s.height))?;
    outln!("classes   {}", s.num_classes)?;
    for c in &s.classes {
        outln!("  {:>5}  {:<24} {:>9}", c.label, printable(&c.name), c.count)?;
    }
    outln!("shards    {}", s.num_shards)?;
    for sh in &s.shards {
        let file = printable(&sh.file);
        outln!("          {file}  {:>9} records  {:>12} bytes", sh.num_records, sh.num_bytes)?;
    }
    let c = &s.converter;
    outln!(
        "converter {}; seed {}, quality {}, max side {}, shard size {}",
        printable(&c.tool),
        c.seed,
        c.quality,
        c.max_side.map_or("-".into(), |m| m.to_string()),
        c.shard_size
    )?;
    if let Some(v) = &s.verify {
        if v.problems.is_empty() {
            outln!(
                "verify    ok: {} records, every crc32c matches, every record decodes",
                v.records_checked
            )?;
        } else {
            outln!("verify    {} problem(s) in {} records:", v.problems.len(), v.records_checked)?;
            for p in &v.problems {
                outln!("  {}", printable(p))?;
            }
        }
    }
    Ok(())
}
