//! `regioncl bench train`: training-step throughput (img/s) of a method, model and batch on random
//! pixels with real per-step plans (colour parameters, swap box, pairing), on the chosen device and
//! precision, and the peak memory of the run (model, optimiser state, queues and the steps'
//! activations: on CUDA the caching allocator's peak, on the CPU the process's peak resident set;
//! see `regioncl_trainer::PeakMemory`). GPU timings are synchronised (every step reads its loss
//! back). Compare with `scripts/bench_train_torch.py` on the same card, in the same call.
//!
//! Each method starts from its ImageNet recipe (`configs/<method>_r50_imagenet.toml`, MoBY's
//! `configs/<method>_{swin_t,vit_s16}_imagenet.toml`: heads, init, tau, optimiser, ...), then the
//! flags override backbone, batch, size, BN groups and device; `--method all` times the eight
//! methods one after the other.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use regioncl_trainer::{
    BatchSource, Config, Method, PeakMemory, Scheduled, Setup, SyntheticSource, build_pretrainer,
};

/// Method to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchMethod {
    /// RegionCL-M.
    Regionclm,
    /// MoCo v2.
    Mocov2,
    /// RegionCL-D.
    Regioncld,
    /// DenseCL.
    Densecl,
    /// RegionCL-S.
    Regioncls,
    /// SimSiam.
    Simsiam,
    /// RegionCL+MoBY (Swin-T unless `--arch vit_s16`).
    Regionclmoby,
    /// MoBY (Swin-T unless `--arch vit_s16`).
    Moby,
    /// The eight methods, one after the other.
    All,
}

impl BenchMethod {
    fn methods(self) -> Vec<Method> {
        match self {
            BenchMethod::Regionclm => vec![Method::RegionClm],
            BenchMethod::Mocov2 => vec![Method::MocoV2],
            BenchMethod::Regioncld => vec![Method::RegionCld],
            BenchMethod::Densecl => vec![Method::DenseCl],
            BenchMethod::Regioncls => vec![Method::RegionCls],
            BenchMethod::Simsiam => vec![Method::SimSiam],
            BenchMethod::Regionclmoby => vec![Method::RegionClMoby],
            BenchMethod::Moby => vec![Method::Moby],
            BenchMethod::All => Method::ALL.to_vec(),
        }
    }
}

/// The ImageNet recipe a method's benchmark starts from (for MoBY, the one of `arch`).
fn recipe(method: Method, arch: Option<&str>) -> &'static str {
    let vit = arch == Some("vit_s16");
    match method {
        Method::Moby if vit => "configs/moby_vit_s16_imagenet.toml",
        Method::Moby => "configs/moby_swin_t_imagenet.toml",
        Method::RegionClMoby if vit => "configs/regionclmoby_vit_s16_imagenet.toml",
        Method::RegionClMoby => "configs/regionclmoby_swin_t_imagenet.toml",
        Method::MocoV2 => "configs/mocov2_r50_imagenet.toml",
        Method::DenseCl => "configs/densecl_r50_imagenet.toml",
        Method::RegionCld => "configs/regioncld_r50_imagenet.toml",
        Method::SimSiam => "configs/simsiam_r50_imagenet.toml",
        Method::RegionCls => "configs/regioncls_r50_imagenet.toml",
        _ => "configs/regionclm_r50_imagenet.toml",
    }
}

/// Arguments of `regioncl bench train`.
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Base config (default: the method's configs/<method>_r50_imagenet.toml of the checkout).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Method.
    #[arg(long, value_enum, default_value = "regionclm")]
    pub method: BenchMethod,
    /// Backbone (`resnet18`, `resnet50`; `swin_t`, `vit_s16` for MoBY; default: the recipe's).
    #[arg(long)]
    pub arch: Option<String>,
    /// Batch size.
    #[arg(long, default_value_t = 256)]
    pub batch: i64,
    /// View size in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: i64,
    /// Split-BN groups of the momentum methods (1 = plain BN; SimSiam always uses 1).
    #[arg(long, default_value_t = 8)]
    pub bn_splits: i64,
    /// Split-BN formulation (`chunked`, `reshape`).
    #[arg(long, default_value = "chunked")]
    pub bn_impl: String,
    /// Device (`auto`, `cpu`, `cuda`).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Precision (`auto` = bf16 on CUDA, fp32 on CPU; `fp32`; `bf16`).
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// channels_last activations and weights.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub channels_last: bool,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: u64,
    /// More config overrides (`key=value`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print the result as one JSON line too.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark.
pub fn run(args: BenchTrainArgs) -> Result<()> {
    outln!(
        "method     model     batch  size  bn_splits  bn_impl   device                     img/s   ms/step  plan-wait  peak-mem"
    )?;
    for method in args.method.methods() {
        bench_one(&args, method).with_context(|| format!("bench {}", method.as_str()))?;
    }
    Ok(())
}

fn bench_one(args: &BenchTrainArgs, method: Method) -> Result<()> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None => crate::cmd::repo_file(recipe(method, args.arch.as_deref()))?,
    };
    let keys = if method.is_moby() { 4096 } else { 65536 };
    let queue = (keys / args.batch).max(1) * args.batch;
    let mut sets = vec![
        format!("method={}", method.as_str()),
        format!("optim.batch_size={}", args.batch),
        format!("data.image_size={}", args.size),
        format!("moco.bn_splits={}", args.bn_splits),
        format!("moco.bn_impl={}", args.bn_impl),
        format!("moco.queue_size={queue}"),
        format!("run.device={}", args.device),
        format!("run.precision={}", args.precision),
        format!("run.channels_last={}", args.channels_last),
        "data.source=synthetic".to_string(),
    ];
    sets.extend(args.arch.iter().map(|a| format!("model.arch={a}")));
    sets.extend(args.sets.iter().cloned());
    let config = Config::load(&path, &sets)?;
    let setup = Setup::single(&config)?;
    let rt = setup.runtime;
    PeakMemory::reset(rt.device).context("resetting the peak memory")?;
    let mut model = build_pretrainer(&config, rt)?;
    let mut opt = model.optimizer(&config);
    let mut source = SyntheticSource::new(&config);
    source.seek(0)?;
    let at = Scheduled::at_lr(setup.peak_lr);
    for _ in 0..args.warmup {
        model.step(source.next_batch()?, &mut opt, at)?;
    }
    let (mut wait, t0) = (0.0, Instant::now());
    let mut last = None;
    for _ in 0..args.steps {
        let t = Instant::now();
        let input = source.next_batch()?;
        wait += t.elapsed().as_secs_f64();
        last = Some(model.step(input, &mut opt, at)?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let peak = PeakMemory::since_reset(rt.device).context("reading the peak memory")?;
    let img_s = (args.steps as f64 * args.batch as f64) / secs;
    let ms = 1000.0 * secs / args.steps.max(1) as f64;
    let (name, arch) = (method.as_str(), config.model.arch.as_str());
    let groups = setup.batch.groups;
    outln!(
        "{:<10} {:<9} {:>5} {:>5} {:>10}  {:<8}  {:<24} {:>8.1} {:>9.2} {:>9.1}%  {:>6.2} GiB ({})",
        name,
        arch,
        args.batch,
        args.size,
        groups,
        args.bn_impl,
        rt.describe(),
        img_s,
        ms,
        100.0 * wait / secs,
        peak.bytes() as f64 / f64::from(1u32 << 30),
        peak.scope()
    )?;
    if args.json {
        let l = last.map(|l| l.loss).unwrap_or(f64::NAN);
        outln!(
            "{}",
            serde_json::json!({
                "impl": "rust-tch", "method": name, "arch": arch, "batch": args.batch, "size": args.size,
                "bn_splits": groups, "bn_impl": args.bn_impl, "runtime": rt.describe(),
                "img_per_s": img_s, "ms_per_step": ms, "steps": args.steps, "last_loss": l,
                "peak_bytes": peak.bytes(), "peak_scope": peak.scope(), "peak": peak.to_string(),
            })
        )?;
    }
    Ok(())
}
