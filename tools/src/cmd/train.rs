//! `regioncl train --config FILE --out RUN_DIR [--set key=value ...] [--resume]`: pretrain with
//! RegionCL-M or MoCo v2, printing a progress line per logged step and writing
//! `RUN_DIR/metrics.jsonl`, checkpoints and (at the end) `RUN_DIR/backbone.safetensors`.
//!
//! Data (`data.source`): `"shards"` runs the loader's multithreaded pipeline over a dataset made by
//! `regioncl convert` (`data.root`), with pinned buffers on CUDA; `"photos"` reads an image folder
//! with the trainer's single-threaded source (`data.root`, default `$REGIONCL_DATA/imagenet-like`);
//! `"synthetic"` uses random pixels.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use regioncl_trainer::{
    BatchSource, Config, DataSource, PhotoSource, ShardSource, SyntheticSource, TrainOptions, train,
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
    /// Continue from the newest checkpoint in RUN_DIR.
    #[arg(long)]
    pub resume: bool,
}

/// Runs the training.
pub fn run(args: TrainArgs) -> Result<()> {
    let config = Config::load(&args.config, &args.sets)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let mut source: Box<dyn BatchSource> = match config.data.source {
        DataSource::Photos => {
            Box::new(PhotoSource::new(&config).context("opening the photo source")?)
        }
        DataSource::Synthetic => Box::new(SyntheticSource::new(&config)),
        DataSource::Shards => {
            Box::new(ShardSource::new(&config).context("opening the shard loader")?)
        }
        other => anyhow::bail!("data.source {other:?} is not supported by this build"),
    };
    eprintln!(
        "regioncl train: {:?} {:?} batch {} lr {} ({} steps/epoch, {} epochs) -> {}",
        config.method,
        config.model.arch,
        config.optim.batch_size,
        config.peak_lr(),
        source.steps_per_epoch(),
        config.optim.epochs,
        args.out.display()
    );
    let opts = TrainOptions { run_dir: args.out.clone(), resume: args.resume };
    let summary =
        train(&config, source.as_mut(), &opts, &mut |r| eprintln!("{}", r.progress_line()))
            .context("training")?;
    if let Some(dir) = &summary.resumed_from {
        eprintln!("resumed from {}", dir.display());
    }
    eprintln!(
        "done: steps {}..{} on {}; last checkpoint {}",
        summary.start_step,
        summary.end_step,
        summary.runtime.describe(),
        summary.checkpoint.as_ref().map_or("none".into(), |p| p.display().to_string())
    );
    Ok(())
}
