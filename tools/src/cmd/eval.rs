//! `regioncl eval knn|linear`: evaluate a checkpoint's representation on a labeled train / test
//! pair of shard datasets (docs/method.md 9.1, 9.2), next to a randomly initialised network of the
//! same architecture (`--random-init`) or raw pixels (`--pixels`) on the same split.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use regioncl_trainer::{
    Config, Encoder, EvalSet, EvalView, FeatureSource, KnnConfig, LinearConfig, encode,
    knn_accuracy, linear_probe, load_encoder, pixel_features, random_encoder,
};
use tch::Device;

/// Arguments of `regioncl eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Weighted k-NN on L2-normalised features (train set = the bank, test set = the queries).
    Knn(KnnArgs),
    /// Linear probe on the frozen backbone (MoCo protocol).
    Linear(LinearArgs),
}

/// Where the network runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// CUDA when available, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device 0.
    Cuda,
}

impl DeviceArg {
    fn resolve(self) -> Result<Device> {
        Ok(match self {
            DeviceArg::Auto => Device::cuda_if_available(),
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => {
                anyhow::ensure!(tch::Cuda::is_available(), "--device cuda: CUDA is not available");
                Device::Cuda(0)
            }
        })
    }
}

/// Which features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FeatureArg {
    /// Pooled backbone features.
    Backbone,
    /// Projector output.
    Projector,
}

/// What every evaluation shares.
#[derive(Debug, Args)]
struct Common {
    /// Checkpoint directory, or a run directory (its newest checkpoint).
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Labeled train dataset (shards).
    #[arg(long, value_name = "SHARDS")]
    train: PathBuf,
    /// Labeled test dataset (shards).
    #[arg(long, value_name = "SHARDS")]
    test: PathBuf,
    /// Evaluate a randomly initialised network of the checkpoint's architecture instead.
    #[arg(long)]
    random_init: bool,
    /// Seed of --random-init (default: the checkpoint's seed).
    #[arg(long, value_name = "S")]
    init_seed: Option<u64>,
    /// Central crop side (default: the checkpoint's data.image_size).
    #[arg(long, value_name = "PX")]
    crop: Option<u32>,
    /// Shorter side before the crop (default: round(crop * 256 / 224)).
    #[arg(long, value_name = "PX")]
    resize: Option<u32>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Loader worker threads (0 = every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// libtorch intra-op threads (0 = libtorch's default; 1 is fastest on a busy small CPU).
    #[arg(long, default_value_t = 0)]
    torch_threads: i32,
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Also write the result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Leave bad records (a failed checksum, a JPEG that does not decode cleanly) out of the
    /// evaluation and report how many, instead of failing on the first.
    #[arg(long)]
    skip_bad: bool,
}

/// `regioncl eval knn`.
#[derive(Debug, Args)]
struct KnnArgs {
    #[command(flatten)]
    common: Common,
    /// Neighbour counts, comma-separated.
    #[arg(long = "k", value_delimiter = ',', default_values_t = [20usize, 200])]
    ks: Vec<usize>,
    /// Temperature of the vote weights exp(sim / T).
    #[arg(long = "t", default_value_t = 0.07)]
    temperature: f64,
    /// Features: the pooled backbone (default) or the projector output.
    #[arg(long, value_enum, default_value_t = FeatureArg::Backbone)]
    feature: FeatureArg,
    /// Raw pixels (normalised, flattened centre crop) as the features (no network).
    #[arg(long, conflicts_with = "random_init")]
    pixels: bool,
}

/// `regioncl eval linear`.
#[derive(Debug, Args)]
struct LinearArgs {
    #[command(flatten)]
    common: Common,
    /// Epochs; the learning rate drops 10x at 60% and 80% of them (MoCo: 100, drops at 60, 80).
    #[arg(long, default_value_t = 100)]
    epochs: u64,
    /// Learning rate (MoCo: 30).
    #[arg(long, default_value_t = 30.0)]
    lr: f64,
    /// Train on the centre crop instead of RandomResizedCrop(0.08-1) + flip, with the frozen
    /// features computed once and cached (fast on a CPU; not the MoCo protocol).
    #[arg(long)]
    no_aug: bool,
    /// Seed of the fc init, orders and crops.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs `regioncl eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    match args.command {
        EvalCommand::Knn(a) => knn(a),
        EvalCommand::Linear(a) => linear(a),
    }
}

struct Setup {
    network: Option<(Encoder, Config)>,
    label: String,
    view: EvalView,
    train: EvalSet,
    test: EvalSet,
}

fn setup(c: &Common, pixels: bool) -> Result<Setup> {
    let device = c.device.resolve()?;
    if c.torch_threads > 0 {
        tch::set_num_threads(c.torch_threads);
    }
    let loaded = match &c.checkpoint {
        Some(dir) => Some(
            load_encoder(dir, Device::Cpu).with_context(|| format!("loading {}", dir.display()))?,
        ),
        None => None,
    };
    let crop = match (c.crop, &loaded) {
        (Some(px), _) => px,
        (None, Some((_, config))) => config.data.image_size as u32,
        (None, None) => anyhow::bail!("give --checkpoint (or --crop with --pixels)"),
    };
    let view = match c.resize {
        Some(resize) => EvalView { resize, crop },
        None => EvalView::for_crop(crop),
    };
    let (network, label) = match (pixels, loaded) {
        (true, _) => (None, "raw pixels"),
        (false, None) => anyhow::bail!("--checkpoint is required"),
        (false, Some((_, config))) if c.random_init => {
            let seed = c.init_seed.unwrap_or(config.seed);
            (Some((random_encoder(&config, seed, device)?, config)), "random init")
        }
        (false, Some((enc, config))) => {
            if device != Device::Cpu {
                enc.store().to_device(device);
            }
            (Some((enc, config)), "learned")
        }
    };
    let open = |p: &PathBuf| {
        let set = EvalSet::open(p).with_context(|| format!("opening {}", p.display()))?;
        anyhow::Ok(set.skip_bad(c.skip_bad))
    };
    let (train, test) = (open(&c.train)?, open(&c.test)?);
    train.check_same_classes(&test)?;
    Ok(Setup { network, label: label.to_string(), view, train, test })
}

/// Says how many bad records `--skip-bad` left out of each set; the JSON field `skipped`.
fn report_skipped(s: &Setup) -> serde_json::Value {
    let (train, test) = (s.train.skipped(), s.test.skipped());
    if train + test > 0 {
        eprintln!("  skipped bad records: {train} of the train set, {test} of the test set");
    }
    serde_json::json!({ "train": train, "test": test })
}

fn write_json(path: &Option<PathBuf>, value: serde_json::Value) -> Result<()> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(&value)?;
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn knn(a: KnnArgs) -> Result<()> {
    let c = &a.common;
    let s = setup(c, a.pixels)?;
    let source = match a.feature {
        FeatureArg::Backbone => FeatureSource::Backbone,
        FeatureArg::Projector => FeatureSource::Projector,
    };
    let t0 = Instant::now();
    let features = |set: &EvalSet| -> Result<regioncl_trainer::Features> {
        let t = Instant::now();
        let f = match &s.network {
            Some((enc, _)) => encode(enc, source, set, s.view, c.batch, c.threads)?,
            None => pixel_features(set, s.view, c.batch, c.threads)?,
        };
        eprintln!(
            "  {} images of {} -> {}-d features in {:.1}s",
            f.len(),
            set.path().display(),
            f.dim(),
            t.elapsed().as_secs_f64()
        );
        Ok(f)
    };
    eprintln!("eval knn: {} ({}px crop of {}px resize)", s.label, s.view.crop, s.view.resize);
    let (bank, queries) = (features(&s.train)?, features(&s.test)?);
    let config = KnnConfig { ks: a.ks.clone(), temperature: a.temperature, ..KnnConfig::default() };
    let acc = knn_accuracy(&bank, &queries, s.train.num_classes(), &config)?;
    for r in &acc {
        println!(
            "knn {:<14} k={:<4} T={} top-1 {:6.2}%  top-5 {:6.2}%",
            s.label,
            r.k,
            a.temperature,
            100.0 * r.top1,
            100.0 * r.top5
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("  {:.1}s", secs);
    let skipped = report_skipped(&s);
    write_json(
        &c.json,
        serde_json::json!({
            "what": s.label,
            "skipped": skipped,
            "features": if a.pixels { "pixels" } else { match a.feature { FeatureArg::Backbone => "backbone", FeatureArg::Projector => "projector" } },
            "dim": bank.dim(),
            "train": s.train.path(), "test": s.test.path(),
            "num_train": bank.len(), "num_test": queries.len(),
            "crop": s.view.crop, "resize": s.view.resize,
            "temperature": a.temperature,
            "knn": acc,
            "seconds": secs,
        }),
    )
}

fn linear(a: LinearArgs) -> Result<()> {
    let c = &a.common;
    let s = setup(c, false)?;
    let (enc, _) = s.network.as_ref().context("a network is required")?;
    let config = LinearConfig {
        epochs: a.epochs,
        batch_size: c.batch,
        lr: a.lr,
        augment: !a.no_aug,
        view: s.view,
        seed: a.seed,
        threads: c.threads,
        ..LinearConfig::default()
    };
    eprintln!(
        "eval linear: {} ({} epochs, lr {} x0.1 at epochs {:?}, {})",
        s.label,
        a.epochs,
        a.lr,
        config.milestones.iter().map(|f| (f * a.epochs as f64).round() as u64).collect::<Vec<_>>(),
        if a.no_aug { "centre crop, cached features" } else { "RandomResizedCrop + flip" }
    );
    let t0 = Instant::now();
    let report = linear_probe(enc, &s.train, &s.test, &config, &mut |e| {
        eprintln!(
            "  epoch {:>3} lr {:<8.4} loss {:.4} top-1 {:6.2}% top-5 {:6.2}%",
            e.epoch,
            e.lr,
            e.loss,
            100.0 * e.top1,
            100.0 * e.top5
        );
    })?;
    let (b, l) = (report.best, report.last);
    println!(
        "linear {:<14} best top-1 {:6.2}% (top-5 {:6.2}%, epoch {}), last top-1 {:6.2}% top-5 {:6.2}%",
        s.label,
        100.0 * b.top1,
        100.0 * b.top5,
        b.epoch,
        100.0 * l.top1,
        100.0 * l.top5
    );
    let skipped = report_skipped(&s);
    write_json(
        &c.json,
        serde_json::json!({
            "what": s.label, "augment": !a.no_aug, "report": report, "skipped": skipped,
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )
}
