//! `regioncl convert`: an ImageFolder tree or a list file to a dataset of shards.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use regioncl_loader::{ConvertConfig, ConvertSummary, SKIPPED_FILE, Source};

use super::printable;

/// Converts images to a dataset directory (manifest.json + shard files).
///
/// JPEGs that decode cleanly are stored byte-for-byte; other images (PNG, WebP, BMP, GIF, TIFF,
/// PNM, CMYK JPEGs) become RGB JPEGs, alpha composited onto white. Files that cannot be decoded
/// are skipped and listed in OUT/skipped.tsv. The output is byte-identical for any thread count;
/// a run that is interrupted resumes when started again with the same arguments.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// SRC OUT: the ImageFolder root (class = first-level directory) and the output directory.
    /// With --list, SRC is the directory the listed paths are relative to (or give --root and
    /// only OUT).
    #[arg(value_name = "SRC OUT", num_args = 1..=2, required = true)]
    paths: Vec<PathBuf>,
    /// A list file of `relative/path<TAB>integer label` lines instead of an ImageFolder tree.
    #[arg(long, value_name = "FILE")]
    list: Option<PathBuf>,
    /// The directory list-file paths are relative to (default: SRC).
    #[arg(long, value_name = "DIR", requires = "list")]
    root: Option<PathBuf>,
    /// Worker threads (default: every core).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Resize (antialiased) and re-encode every image whose longer side exceeds N pixels.
    #[arg(long, value_name = "N")]
    max_side: Option<u32>,
    /// JPEG quality of re-encoded images.
    #[arg(long, value_name = "Q", default_value_t = regioncl_loader::DEFAULT_QUALITY)]
    quality: u8,
    /// Target shard size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = regioncl_loader::DEFAULT_SHARD_SIZE)]
    shard_size: u64,
    /// Seed of the record order (a shuffle of the sorted file list).
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Skip images whose header claims more pixels than this.
    #[arg(long, value_name = "PIXELS", default_value_t = regioncl_augment::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs the conversion with a progress bar and prints the summary.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let (source, out) = source_and_out(&args)?;
    let config = ConvertConfig {
        threads: args.threads,
        max_side: args.max_side,
        quality: args.quality,
        shard_size: args.shard_size,
        seed: args.seed,
        max_pixels: args.max_pixels,
    };
    config.validate()?;
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    let mut started = false;
    let summary = regioncl_loader::convert(&source, &out, &config, &mut |p| {
        if !started {
            bar.set_length(p.total);
            bar.set_position(p.done);
            bar.reset_eta();
            if p.resumed > 0 {
                bar.println(format!("resuming: {} of {} files already done", p.resumed, p.total));
            }
            started = true;
        }
        bar.set_position(p.done);
        if p.skipped > 0 {
            bar.set_message(format!("({} skipped)", p.skipped));
        }
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    let summary =
        summary.with_context(|| format!("convert {} -> {}", describe(&source), out.display()))?;
    print_summary(&summary, &out, threads)?;
    Ok(())
}

fn source_and_out(args: &ConvertArgs) -> anyhow::Result<(Source, PathBuf)> {
    let mut paths = args.paths.iter().cloned();
    let (first, second) = (paths.next(), paths.next());
    Ok(match (&args.list, first, second) {
        (None, Some(src), Some(out)) => (Source::ImageFolder(src), out),
        (None, _, _) => bail!("convert needs SRC and OUT"),
        (Some(list), Some(src), Some(out)) => {
            let root = args.root.clone().unwrap_or(src);
            (Source::List { list: list.clone(), root }, out)
        }
        (Some(list), Some(out), None) => {
            let Some(root) = args.root.clone() else {
                bail!("with --list, give SRC OUT or --root DIR OUT");
            };
            (Source::List { list: list.clone(), root }, out)
        }
        (Some(_), None, _) => bail!("convert needs OUT"),
    })
}

fn describe(source: &Source) -> String {
    match source {
        Source::ImageFolder(root) => root.display().to_string(),
        Source::List { list, root } => format!("{} (root {})", list.display(), root.display()),
    }
}

fn print_summary(s: &ConvertSummary, out: &std::path::Path, threads: usize) -> std::io::Result<()> {
    let out = out.display().to_string();
    let out = printable(&out);
    if s.already_complete {
        outln!("{out} already holds this dataset: nothing to do")?;
    }
    outln!("records   {} in {} shard(s), {} classes", s.num_records, s.num_shards, s.num_classes)?;
    if !s.already_complete {
        outln!(
            "records   {} stored as-is, {} converted to JPEG, {} resized",
            s.num_stored,
            s.num_converted,
            s.num_resized
        )?;
    }
    outln!("skipped   {} (listed in {out}/{SKIPPED_FILE})", s.skipped.len())?;
    for skipped in s.skipped.iter().take(10) {
        outln!("          {}: {}", printable(&skipped.path), printable(&skipped.reason))?;
    }
    if s.skipped.len() > 10 {
        outln!("          ... and {} more", s.skipped.len() - 10)?;
    }
    if s.num_ignored > 0 {
        outln!("ignored   {} hidden, non-image or top-level file(s)", s.num_ignored)?;
    }
    if !s.empty_classes.is_empty() {
        let names: Vec<_> = s.empty_classes.iter().map(|c| printable(c)).collect();
        outln!("warning   empty class directories: {}", names.join(", "))?;
    }
    outln!("bytes     {} ({:.1} MiB)", s.num_bytes, s.num_bytes as f64 / (1 << 20) as f64)?;
    let secs = s.elapsed.as_secs_f64();
    let rate = s.files_per_sec();
    outln!(
        "time      {secs:.2} s for {} file(s): {rate:.1} images/s, {:.1} images/s per thread ({threads} threads)",
        s.num_processed,
        rate / threads as f64
    )
}
