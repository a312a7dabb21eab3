//! `regioncl train --config FILE --out RUN_DIR [--set key=value ...] [--resume | --overwrite]`:
//! pretrain with any method, printing a progress line per logged step and writing
//! `RUN_DIR/metrics.jsonl`, checkpoints and (at the end) `RUN_DIR/backbone.safetensors`.
//!
//! A run directory belongs to one run: a new run refuses a directory that is not empty, `--resume`
//! continues the run in it from its newest intact checkpoint (saying which damaged ones it
//! skipped), `--overwrite` replaces it; a second training into a directory in use fails at once,
//! naming the process that holds it.
//!
//! Data (`data.source`): `"shards"` runs the loader's multithreaded pipeline over a dataset made by
//! `regioncl convert` (`data.root`), with pinned buffers on CUDA; `"photos"` runs the same pipeline
//! over an image folder of class subfolders (`data.root`, default `$REGIONCL_DATA/imagenet-like`);
//! `"synthetic"` uses random pixels.
//!
//! `--knn-train SHARDS --knn-test SHARDS [--knn-every N]` runs the online k-NN monitor (pooled
//! backbone features, k = 20 and 200, T = 0.07) every N epochs, logged to metrics.jsonl. At the
//! end, the charts of metrics.jsonl are drawn into `RUN_DIR/plots` (`regioncl plot`).
//!
//! Under `torchrun --no-python --nproc-per-node N regioncl train ...` or SLURM `srun` the same
//! command is one rank of a multi-process run (`Setup::join`: `run.dist_backend`,
//! `run.dist_timeout_s`): `optim.batch_size` is the global batch, each rank reads its share, and
//! rank 0 alone prints, writes the run directory and draws the plots.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use regioncl_trainer::{
    BatchSource, Config, DataSource, EvalView, KnnMonitor, KnnRecord, LoaderSource, RankShare,
    RunStart, Setup, SyntheticSource, TrainEvent, Trainer,
};

/// Arguments of `regioncl train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training config (TOML), e.g. configs/regionclm_r50_imagenet.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Run directory (created): checkpoints, metrics.jsonl, config.toml.
    #[arg(long)]
    pub out: PathBuf,
    /// Override a config key, e.g. `--set optim.batch_size=256` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Continue the run in RUN_DIR from its newest intact checkpoint.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Replace the run in RUN_DIR (its checkpoints, metrics and plots are deleted first).
    #[arg(long)]
    pub overwrite: bool,
    /// Online k-NN monitor: the labeled dataset (shards) whose features are the bank.
    #[arg(long, value_name = "SHARDS", requires = "knn_test")]
    pub knn_train: Option<PathBuf>,
    /// Online k-NN monitor: the labeled dataset (shards) classified against the bank.
    #[arg(long, value_name = "SHARDS", requires = "knn_train")]
    pub knn_test: Option<PathBuf>,
    /// Run the k-NN monitor every N epochs (and after the last step); logged to metrics.jsonl.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub knn_every: u64,
}

/// The batch source of `config.data.source` for rank `share`.
///
/// # Errors
/// The data cannot be opened.
pub(crate) fn open_source(config: &Config, share: RankShare) -> Result<Box<dyn BatchSource>> {
    Ok(match config.data.source {
        DataSource::Synthetic => Box::new(
            SyntheticSource::for_rank(config, share).context("opening the synthetic source")?,
        ),
        _ => Box::new(LoaderSource::for_rank(config, share).context("opening the loader")?),
    })
}

/// Prints a training's progress line, what its resume skipped and where it resumed, or a replaced
/// bad record, each line prefixed with `prefix`.
pub(crate) fn print_event(prefix: &str, event: &TrainEvent) {
    match event {
        TrainEvent::Step(r) => errln!("{prefix}{}", r.progress_line()),
        TrainEvent::Resumed { from, step, skipped } => {
            for s in *skipped {
                errln!("{prefix}resume: skipping {}: {}", s.dir.display(), s.error);
            }
            errln!("{prefix}resumed from {} (step {step})", from.display());
        }
        TrainEvent::Replaced { step, epoch, substitution: s } => errln!(
            "{prefix}warning: epoch {epoch} step {step}: record {} replaced by record {}: {}",
            s.failed,
            s.replacement,
            s.reason
        ),
        _ => {}
    }
}

/// Runs the training.
pub fn run(args: TrainArgs) -> Result<()> {
    // Its errors name the file and the key.
    let config = Config::load(&args.config, &args.sets)?;
    // One process, or one rank of a torchrun / srun launch.
    let setup = Setup::join(&config).context("joining the run")?;
    let dist = &setup.dist;
    let share = RankShare::of(dist);
    let main = dist.is_main();
    let mut source = open_source(&config, share)?;
    if main {
        errln!(
            "regioncl train: {:?} {:?} batch {} lr {} ({} steps/epoch, {} epochs) -> {}",
            config.method,
            config.model.arch,
            config.optim.batch_size,
            setup.peak_lr,
            source.steps_per_epoch(),
            config.optim.epochs,
            args.out.display()
        );
    }
    if dist.is_distributed() {
        errln!(
            "regioncl train: {}, {} samples per rank per step",
            dist.describe(),
            config.optim.batch_size / dist.world() as i64
        );
    }
    let start = match (args.resume, args.overwrite) {
        (true, _) => RunStart::Resume,
        (_, true) => RunStart::Overwrite,
        _ => RunStart::New,
    };
    // The k-NN monitor (eval/knn.rs), when asked for: every rank knows it, rank 0 runs it.
    let monitor = match (&args.knn_train, &args.knn_test) {
        (Some(train), Some(test)) => {
            let view = EvalView::for_crop(config.data.image_size as u32);
            Some(KnnMonitor::new(train, test, view, args.knn_every).context("k-NN monitor")?)
        }
        _ => None,
    };
    let on_knn = |r: &KnnRecord| {
        let accs: Vec<String> =
            r.knn.iter().map(|a| format!("k={} {:.2}%", a.k, 100.0 * a.top1)).collect();
        errln!("k-NN top-1 after epoch {}: {} ({:.1}s)", r.epoch, accs.join(", "), r.eval_s);
    };
    let mut trainer = Trainer::new(&config, &args.out)
        .start(start)
        .setup(&setup)
        .adapt_threads(true)
        .on_event(|event| print_event("", event));
    if let Some(monitor) = &monitor {
        trainer = trainer.monitor(monitor, on_knn);
    }
    let summary =
        trainer.run(source.as_mut()).with_context(|| format!("training ({})", dist.describe()))?;
    dist.shutdown().context("leaving the run")?;
    if !main {
        return Ok(());
    }
    errln!(
        "done: steps {}..{} on {}; last checkpoint {}",
        summary.start_step,
        summary.end_step,
        summary.runtime.describe(),
        summary.checkpoint.as_ref().map_or("none".into(), |p| p.display().to_string())
    );
    // Charts of metrics.jsonl (cmd/plot.rs); a failure to draw does not fail the run.
    match super::plot::write_plots(&args.out, &args.out.join("plots")) {
        Ok(_) => errln!("plots: {}", args.out.join("plots").display()),
        Err(e) => errln!("plots: not written: {e:#}"),
    }
    Ok(())
}
