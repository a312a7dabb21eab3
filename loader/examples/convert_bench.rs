//! Convert throughput next to the JPEG decode floor, on the same files in the same run.
//!
//! ```sh
//! cargo run --release -p regioncl-loader --example convert_bench -- .cache/data/imagenet-like \
//!     [--runs 5] [--threads 1,2]
//! ```
//!
//! For each thread count it measures, `--runs` times each, and prints medians:
//! - decode: full-size libjpeg-turbo decode (`regioncl_augment::decode_jpeg`, accurate IDCT) of
//!   every JPEG, bytes already in memory: the floor DESIGN.md budgets against;
//! - convert (as-is): `convert` with default settings (read, strict validation, shard writing with
//!   fsync, manifest), files in the page cache;
//! - convert (--max-side 256 --quality 90): decode, resize, re-encode, validate, write.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use regioncl_augment::{DecodeOptions, RgbImage, decode_jpeg};
use regioncl_loader::{ConvertConfig, Source, convert};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        {
            out.push(path);
        }
    }
}

/// Images per second decoding every file once on `threads` threads.
fn decode_rate(jpegs: &[Vec<u8>], threads: usize) -> f64 {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut image = RgbImage::new();
                let options = DecodeOptions::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(bytes) = jpegs.get(i) else { break };
                    decode_jpeg(bytes, &options, &mut image).expect("decode");
                }
            });
        }
    });
    jpegs.len() as f64 / start.elapsed().as_secs_f64()
}

/// Images per second converting `src` into a fresh directory.
fn convert_rate(src: &Path, scratch: &Path, config: &ConvertConfig) -> (f64, u64) {
    let out = scratch.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let summary =
        convert(&Source::ImageFolder(src.into()), &out, config, &mut |_| ControlFlow::Continue(()))
            .expect("convert");
    let _ = std::fs::remove_dir_all(&out);
    (summary.files_per_sec(), summary.num_bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let src =
        PathBuf::from(args.first().expect("usage: convert_bench DIR [--runs N] [--threads 1,2]"));
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let runs: usize = flag("--runs").map_or(5, |r| r.parse().expect("--runs N"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<usize> = flag("--threads").map_or(vec![1, cores], |t| {
        t.split(',').map(|x| x.parse().expect("--threads 1,2")).collect()
    });
    let mut paths = Vec::new();
    files(&src, &mut paths);
    let jpegs: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).expect("read")).collect();
    let total: usize = jpegs.iter().map(Vec::len).sum();
    let scratch =
        std::env::temp_dir().join(format!("regioncl-convert-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    println!(
        "{} JPEGs, {:.1} KB mean, from {}; {} runs each, medians; {cores} cores available",
        jpegs.len(),
        total as f64 / jpegs.len() as f64 / 1e3,
        src.display(),
        runs
    );
    println!(
        "{:>7}  {:>34}  {:>12}  {:>12}  {:>10}",
        "threads", "what", "images/s", "per thread", "vs decode"
    );
    for &t in &threads {
        let decode = median((0..runs).map(|_| decode_rate(&jpegs, t)).collect());
        let row = |what: &str, rate: f64| {
            println!(
                "{t:>7}  {what:>34}  {rate:>12.1}  {:>12.1}  {:>9.2}x",
                rate / t as f64,
                rate / decode
            );
        };
        row("decode (libjpeg-turbo, full size)", decode);
        let stored = ConvertConfig { threads: t, ..ConvertConfig::default() };
        let (rates, bytes): (Vec<f64>, Vec<u64>) =
            (0..runs).map(|_| convert_rate(&src, &scratch, &stored)).unzip();
        row(&format!("convert as-is ({:.0} MB)", bytes[0] as f64 / 1e6), median(rates));
        let small = ConvertConfig {
            threads: t,
            max_side: Some(256),
            quality: 90,
            ..ConvertConfig::default()
        };
        let (rates, bytes): (Vec<f64>, Vec<u64>) =
            (0..runs).map(|_| convert_rate(&src, &scratch, &small)).unzip();
        row(&format!("convert max-side 256 q90 ({:.0} MB)", bytes[0] as f64 / 1e6), median(rates));
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
