//! `regioncl eval knn|linear`: evaluate a checkpoint's representation on a labeled train / test
//! pair of shard datasets (docs/method.md 9.1-9.3), next to a randomly initialised network of the
//! same architecture (`--random-init`) or raw pixels (`--pixels`) on the same split. `eval linear`
//! follows MoCo's protocol or SimSiam's (`--protocol`), on every label or a class-balanced
//! few-shot subset (`--labels-fraction`).
//!
//! Results go to stdout after the `--json` file is written, so a closed pipe (`| head -1`) loses
//! nothing; every size given on the command line is bounded before it is used.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use regioncl_trainer::{
    Config, Encoder, EvalSet, EvalView, FeatureSource, KnnConfig, LinearConfig, ProbeSchedule,
    encode, knn_accuracy, linear_probe, load_encoder, pixel_features, random_encoder,
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
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(1..=2048))]
    crop: Option<u32>,
    /// Shorter side before the crop (default: round(crop * 256 / 224)).
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(1..=4096))]
    resize: Option<u32>,
    /// Images per forward pass (and per probe step; default 256, SimSiam's probe 4096).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch: Option<u32>,
    /// Loader worker threads (0 = every core).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1024))]
    threads: u32,
    /// libtorch intra-op threads (0 = libtorch's default; 1 is fastest on a busy small CPU).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=1024))]
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

/// The linear probe's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// MoCo: SGD lr 30, batch 256, lr / 10 at 60% and 80% of 100 epochs.
    Moco,
    /// SimSiam: LARS over SGD, lr 0.1 x batch / 256, batch 4096, cosine over 90 epochs.
    Simsiam,
}

/// `regioncl eval linear`.
#[derive(Debug, Args)]
struct LinearArgs {
    #[command(flatten)]
    common: Common,
    /// The protocol: optimiser, batch, learning rate and its schedule.
    #[arg(long, value_enum, default_value_t = Protocol::Moco)]
    protocol: Protocol,
    /// Epochs (default: the protocol's, MoCo 100, SimSiam 90).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    epochs: Option<u64>,
    /// Learning rate (default: the protocol's, MoCo 30, SimSiam 0.1 x batch / 256).
    #[arg(long)]
    lr: Option<f64>,
    /// Train on a class-balanced subset holding this fraction of the labels (e.g. 0.01, 0.1),
    /// the same for every checkpoint (drawn from --subset-seed); needs --no-aug.
    #[arg(long, value_name = "F", requires = "no_aug")]
    labels_fraction: Option<f64>,
    /// Seed of the --labels-fraction subset.
    #[arg(long, default_value_t = 0)]
    subset_seed: u64,
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
    batch: usize,
    network: Option<(Encoder, Config)>,
    label: String,
    view: EvalView,
    train: EvalSet,
    test: EvalSet,
}

/// `batch`: `--batch` or the evaluation's default.
fn setup(c: &Common, pixels: bool, batch: usize) -> Result<Setup> {
    let device = c.device.resolve()?;
    if c.torch_threads > 0 {
        tch::set_num_threads(c.torch_threads);
    }
    let loaded = match &c.checkpoint {
        // The error names the checkpoint and its file.
        Some(dir) => Some(load_encoder(dir, Device::Cpu)?),
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
    // Floats of one batch of views: the largest buffer a forward pass holds.
    let floats = batch as u64 * 3 * u64::from(crop) * u64::from(crop);
    anyhow::ensure!(
        floats <= 1 << 31,
        "--batch {batch} of {crop} px views make {floats} floats, over the limit of 2^31 (8 GiB): \
         give a smaller --batch"
    );
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
        let set = EvalSet::open(p)?;
        anyhow::Ok(set.skip_bad(c.skip_bad))
    };
    let (train, test) = (open(&c.train)?, open(&c.test)?);
    train.check_same_classes(&test)?;
    Ok(Setup { batch, network, label: label.to_string(), view, train, test })
}

/// Says how many bad records `--skip-bad` left out of each set; the JSON field `skipped`.
fn report_skipped(s: &Setup) -> serde_json::Value {
    let (train, test) = (s.train.skipped(), s.test.skipped());
    if train + test > 0 {
        errln!("  skipped bad records: {train} of the train set, {test} of the test set");
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
    let s = setup(c, a.pixels, c.batch.map_or(256, |b| b as usize))?;
    let source = match a.feature {
        FeatureArg::Backbone => FeatureSource::Backbone,
        FeatureArg::Projector => FeatureSource::Projector,
    };
    let t0 = Instant::now();
    let (batch, threads) = (s.batch, c.threads as usize);
    let features = |set: &EvalSet| -> Result<regioncl_trainer::Features> {
        let t = Instant::now();
        let f = match &s.network {
            Some((enc, _)) => encode(enc, source, set, s.view, batch, threads)?,
            None => pixel_features(set, s.view, batch, threads)?,
        };
        errln!(
            "  {} images of {} -> {}-d features in {:.1}s",
            f.len(),
            set.path().display(),
            f.dim(),
            t.elapsed().as_secs_f64()
        );
        Ok(f)
    };
    errln!("eval knn: {} ({}px crop of {}px resize)", s.label, s.view.crop, s.view.resize);
    let (bank, queries) = (features(&s.train)?, features(&s.test)?);
    let config = KnnConfig { ks: a.ks.clone(), temperature: a.temperature, ..KnnConfig::default() };
    let acc = knn_accuracy(&bank, &queries, s.train.num_classes(), &config)?;
    let secs = t0.elapsed().as_secs_f64();
    errln!("  {:.1}s", secs);
    let features = match (a.pixels, a.feature) {
        (true, _) => "pixels",
        (false, FeatureArg::Backbone) => "backbone",
        (false, FeatureArg::Projector) => "projector",
    };
    let skipped = report_skipped(&s);
    write_json(
        &c.json,
        serde_json::json!({
            "what": s.label,
            "skipped": skipped,
            "features": features,
            "dim": bank.dim(),
            "train": s.train.path(), "test": s.test.path(),
            "num_train": bank.len(), "num_test": queries.len(),
            "crop": s.view.crop, "resize": s.view.resize,
            "temperature": a.temperature,
            "knn": acc,
            "seconds": secs,
        }),
    )?;
    for r in &acc {
        outln!(
            "knn {:<14} k={:<4} T={} top-1 {:6.2}%  top-5 {:6.2}%",
            s.label,
            r.k,
            a.temperature,
            100.0 * r.top1,
            100.0 * r.top5
        )?;
    }
    Ok(())
}

fn linear(a: LinearArgs) -> Result<()> {
    let c = &a.common;
    let default_batch = match a.protocol {
        Protocol::Moco => 256,
        Protocol::Simsiam => 4096,
    };
    let s = setup(c, false, c.batch.map_or(default_batch, |b| b as usize))?;
    let (enc, _) = s.network.as_ref().context("a network is required")?;
    let mut config = match a.protocol {
        Protocol::Moco => {
            LinearConfig { batch_size: s.batch, ..LinearConfig::moco(a.epochs.unwrap_or(100)) }
        }
        Protocol::Simsiam => LinearConfig::simsiam(a.epochs.unwrap_or(90), s.batch),
    };
    config.lr = a.lr.unwrap_or(config.lr);
    config.augment = !a.no_aug;
    config.view = s.view;
    config.seed = a.seed;
    config.labels_fraction = a.labels_fraction;
    config.subset_seed = a.subset_seed;
    config.threads = c.threads as usize;
    let schedule = match &config.schedule {
        ProbeSchedule::Steps(m) => format!(
            "x0.1 at epochs {:?}",
            m.iter().map(|f| (f * config.epochs as f64).round() as u64).collect::<Vec<_>>()
        ),
        _ => "cosine".to_string(),
    };
    errln!(
        "eval linear: {} ({:?} protocol: {} epochs, batch {}, lr {} {schedule}{}, {}{})",
        s.label,
        a.protocol,
        config.epochs,
        config.batch_size,
        config.lr,
        if config.lars.is_some() { ", LARS" } else { "" },
        if a.no_aug { "centre crop, cached features" } else { "RandomResizedCrop + flip" },
        a.labels_fraction.map_or(String::new(), |f| format!(", {f} of the labels"))
    );
    let t0 = Instant::now();
    let report = linear_probe(enc, &s.train, &s.test, &config, &mut |e| {
        errln!(
            "  epoch {:>3} lr {:<8.4} loss {:.4} top-1 {:6.2}% top-5 {:6.2}%",
            e.epoch,
            e.lr,
            e.loss,
            100.0 * e.top1,
            100.0 * e.top5
        );
    })?;
    let skipped = report_skipped(&s);
    write_json(
        &c.json,
        serde_json::json!({
            "what": s.label, "augment": !a.no_aug, "report": report, "skipped": skipped,
            "protocol": format!("{:?}", a.protocol).to_lowercase(),
            "labels_fraction": a.labels_fraction, "subset_seed": a.subset_seed,
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
    let (b, l) = (report.best, report.last);
    outln!(
        "linear {:<14} best top-1 {:6.2}% (top-5 {:6.2}%, epoch {}), last top-1 {:6.2}% top-5 {:6.2}%",
        s.label,
        100.0 * b.top1,
        100.0 * b.top5,
        b.epoch,
        100.0 * l.top1,
        100.0 * l.top5
    )?;
    Ok(())
}
