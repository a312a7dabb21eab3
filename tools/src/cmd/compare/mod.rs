//! `regioncl compare`: does the region swap help? Pretrains each method of the given pairs
//! (RegionCL-M against MoCo v2 by default) from the same config, at the same budget (steps,
//! batch, learning-rate schedule, augmentation) and for the same seeds, evaluates every run the
//! same way, and reports mean ± std over the seeds, the difference of each pair and whether it
//! exceeds the seed noise (Welch's t-test, `report.rs`): a table on stdout and in
//! `OUT/results.md`, every number in `OUT/results.json`, and a plot of every seed with the means
//! and standard deviations in `OUT/results.png`.
//!
//! Each run is evaluated on its frozen backbone's pooled features of the labeled `--train` and
//! `--test` sets (centre view, computed once per run): weighted k-NN (k = 20 and 200, T = 0.07),
//! the linear probe on every label and on class-balanced few-shot subsets (`--fractions`, the
//! same subset for every method at a seed). The probe follows MoCo's protocol, or SimSiam's for
//! pairs of SimSiam-based methods; it trains on cached centre-crop features (no augmentation), as
//! `regioncl eval linear --no-aug` does, and reports its last epoch (no selection on the test set).
//!
//! It resumes after a kill: a run with `eval.json` is reused, a run killed while training
//! resumes from its last checkpoint (`--checkpoint-every`), so a comparison that is started
//! again ends with the numbers an uninterrupted one gives.

mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use regioncl_trainer::{
    Config, EvalSet, EvalView, FeatureSource, KnnConfig, LinearConfig, Method, RankShare, RunStart,
    Trainer, encode, knn_accuracy, linear_probe_features, load_encoder,
};
use tch::Device;

pub(crate) use self::report::Summary;
use self::report::{Metric, RunResult, pair_table};
use super::plot::{MethodValues, write_comparison};

/// Arguments of `regioncl compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Training config shared by every run (TOML), e.g. configs/demo_fashion_mnist.toml.
    #[arg(long)]
    config: PathBuf,
    /// Override a config key of every run, e.g. `--set data.root=SHARDS` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Method pairs `A:B`, comma-separated (the RegionCL variant first): regionclm:mocov2,
    /// regioncld:densecl, regioncls:simsiam.
    #[arg(long, value_delimiter = ',', default_value = "regionclm:mocov2")]
    pairs: Vec<String>,
    /// Pretraining seeds, comma-separated (at least 2: the seed noise is their spread).
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 1, 2])]
    seeds: Vec<u64>,
    /// Labeled train dataset (shards): the k-NN bank and the probes' training set.
    #[arg(long, value_name = "SHARDS")]
    train: PathBuf,
    /// Labeled test dataset (shards).
    #[arg(long, value_name = "SHARDS")]
    test: PathBuf,
    /// Output directory: a run directory per method and seed, results.md, results.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Central crop side of the evaluation view (default: the config's data.image_size).
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(1..=2048))]
    crop: Option<u32>,
    /// Shorter side before the crop (default: round(crop * 256 / 224)).
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(1..=4096))]
    resize: Option<u32>,
    /// Label fractions of the few-shot probes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.01, 0.1])]
    fractions: Vec<f64>,
    /// Epochs of every probe (default: the protocol's, MoCo 100, SimSiam 90).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    linear_epochs: Option<u64>,
    /// Checkpoint every N steps, so a killed comparison resumes close to where it stopped.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    /// Loader threads of the evaluation (0 = every core).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1024))]
    threads: u32,
}

fn method_of(name: &str) -> Result<Method> {
    Method::ALL.into_iter().find(|m| m.as_str() == name).with_context(|| {
        let all: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        format!("--pairs: unknown method {name:?} (one of {})", all.join(", "))
    })
}

/// The paper's name of a method.
fn display(m: Method) -> &'static str {
    match m {
        Method::RegionClm => "RegionCL-M",
        Method::MocoV2 => "MoCo v2",
        Method::DenseCl => "DenseCL",
        Method::RegionCld => "RegionCL-D",
        Method::SimSiam => "SimSiam",
        Method::RegionCls => "RegionCL-S",
        _ => m.as_str(),
    }
}

/// Runs `regioncl compare`.
pub fn run(args: CompareArgs) -> Result<()> {
    let mut pairs = Vec::new();
    for p in &args.pairs {
        let (a, b) = p.split_once(':').with_context(|| format!("--pairs: {p:?} is not A:B"))?;
        pairs.push((method_of(a)?, method_of(b)?));
    }
    anyhow::ensure!(args.seeds.len() >= 2, "--seeds: give at least 2 (the noise is their spread)");
    for &f in &args.fractions {
        anyhow::ensure!(f > 0.0 && f <= 1.0, "--fractions: {f} is not in (0, 1]");
    }
    let mut methods: Vec<Method> = Vec::new();
    for m in pairs.iter().flat_map(|&(a, b)| [a, b]) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let config_of = |m: Method, seed: u64| -> Result<Config> {
        let mut sets = args.sets.clone();
        sets.push(format!("method={}", m.as_str()));
        sets.push(format!("seed={seed}"));
        sets.push(format!("run.checkpoint_every={}", args.checkpoint_every));
        Ok(Config::load(&args.config, &sets)?)
    };
    let base = config_of(methods[0], args.seeds[0])?;
    let crop = args.crop.unwrap_or(base.data.image_size as u32);
    let view = match args.resize {
        Some(resize) => EvalView { resize, crop },
        None => EvalView::for_crop(crop),
    };
    let (train_set, test_set) = (EvalSet::open(&args.train)?, EvalSet::open(&args.test)?);
    train_set.check_same_classes(&test_set)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let plan: Vec<(u64, Method)> =
        args.seeds.iter().flat_map(|&s| methods.iter().map(move |&m| (s, m))).collect();
    errln!(
        "compare: {} x {} seeds = {} runs ({} each, batch {}) into {}",
        methods.iter().map(|&m| display(m)).collect::<Vec<_>>().join(", "),
        args.seeds.len(),
        plan.len(),
        match base.run.max_steps {
            0 => format!("{} epochs", base.optim.epochs),
            n => format!("{n} steps"),
        },
        base.optim.batch_size,
        args.out.display()
    );
    let eval = Eval { train: &train_set, test: &test_set, view, args: &args, pairs: &pairs };
    let t0 = Instant::now();
    let mut results = Vec::new();
    for (i, &(seed, method)) in plan.iter().enumerate() {
        let tag = format!("[{}/{}] {} seed {seed}", i + 1, plan.len(), method.as_str());
        let dir = args.out.join(format!("{}-seed{seed}", method.as_str()));
        let file = dir.join("eval.json");
        if let Ok(text) = std::fs::read_to_string(&file) {
            let r: RunResult = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a comparison result", file.display()))?;
            errln!("{tag}: reused {}", file.display());
            results.push(r);
            continue;
        }
        let config = config_of(method, seed)?;
        let steps = pretrain(&config, &dir, &tag)?;
        errln!("{tag}: evaluating ({:.0} s so far)", t0.elapsed().as_secs_f64());
        let r = eval.run(&dir, method, seed, steps)?;
        let tmp = dir.join("eval.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &file).with_context(|| format!("renaming {}", file.display()))?;
        let summary: Vec<String> =
            r.metrics.iter().map(|m| format!("{} {:.2}%", m.name, 100.0 * m.top1)).collect();
        errln!("{tag}: {}", summary.join(", "));
        results.push(r);
    }
    let mut text = vec![format!(
        "{} seeds ({}); {} steps of batch {} per run; eval on {} ({} images) / {} ({} images)",
        args.seeds.len(),
        args.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        results.first().map_or(0, |r| r.steps),
        base.optim.batch_size,
        args.train.display(),
        train_set.len(),
        args.test.display(),
        test_set.len()
    )];
    for &(a, b) in &pairs {
        text.push(String::new());
        text.push(pair_table(&results, (a.as_str(), display(a)), (b.as_str(), display(b))));
    }
    let text = text.join("\n") + "\n";
    for (name, content) in [
        ("results.md", text.clone()),
        ("results.json", serde_json::to_string_pretty(&results)? + "\n"),
    ] {
        let path = args.out.join(name);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    plot(&args.out.join("results.png"), &results, &pairs)?;
    errln!(
        "compare: done in {:.0} s; {}",
        t0.elapsed().as_secs_f64(),
        args.out.join("results.md").display()
    );
    outln!("{text}")?;
    Ok(())
}

/// Trains (or resumes) one run into `dir`; returns its step count.
fn pretrain(config: &Config, dir: &Path, tag: &str) -> Result<u64> {
    let mut source = super::train::open_source(config, RankShare::WHOLE)?;
    let prefix = format!("{tag}: ");
    let summary = Trainer::new(config, dir)
        .start(RunStart::Resume)
        .adapt_threads(true)
        .on_event(|event| super::train::print_event(&prefix, event))
        .run(source.as_mut())
        .with_context(|| format!("training {}", dir.display()))?;
    Ok(summary.end_step)
}

/// What every run is evaluated on.
struct Eval<'a> {
    train: &'a EvalSet,
    test: &'a EvalSet,
    view: EvalView,
    args: &'a CompareArgs,
    pairs: &'a [(Method, Method)],
}

impl Eval<'_> {
    fn run(&self, dir: &Path, method: Method, seed: u64, steps: u64) -> Result<RunResult> {
        let (encoder, _) = load_encoder(dir, Device::Cpu)?;
        let threads = self.args.threads as usize;
        let features =
            |set: &EvalSet| encode(&encoder, FeatureSource::Backbone, set, self.view, 256, threads);
        let (bank, queries) = (features(self.train)?, features(self.test)?);
        let classes = self.train.num_classes();
        let mut metrics = Vec::new();
        for a in knn_accuracy(&bank, &queries, classes, &KnnConfig::default())? {
            metrics.push(Metric { name: format!("k-NN k={}", a.k), top1: a.top1 });
        }
        // SimSiam-based pairs are probed with SimSiam's protocol, the others with MoCo's.
        let simsiam = self
            .pairs
            .iter()
            .any(|&(a, b)| (a == method || b == method) && !a.uses_queue() && !b.uses_queue());
        let mut probe = if simsiam {
            LinearConfig::simsiam(self.args.linear_epochs.unwrap_or(90), 4096)
        } else {
            LinearConfig::moco(self.args.linear_epochs.unwrap_or(100))
        };
        probe.augment = false;
        probe.seed = seed;
        probe.subset_seed = seed;
        let fractions = std::iter::once(None).chain(self.args.fractions.iter().map(|&f| Some(f)));
        for fraction in fractions {
            probe.labels_fraction = fraction;
            let r =
                linear_probe_features(&bank, &queries, classes, Device::Cpu, &probe, &mut |_| {})?;
            let name = match fraction {
                None => "linear".to_string(),
                Some(f) => format!("linear {}% labels", 100.0 * f),
            };
            metrics.push(Metric { name, top1: r.last.top1 });
        }
        Ok(RunResult { method: method.as_str().to_string(), seed, steps, metrics })
    }
}

/// `results.png`: every method of `pairs` (each once, in pair order) on every metric.
fn plot(path: &Path, results: &[RunResult], pairs: &[(Method, Method)]) -> Result<()> {
    let Some(first) = results.first() else { return Ok(()) };
    let metrics: Vec<String> = first.metrics.iter().map(|m| m.name.clone()).collect();
    let mut methods: Vec<Method> = Vec::new();
    for m in pairs.iter().flat_map(|&(a, b)| [a, b]) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let values = |m: Method| MethodValues {
        name: display(m).to_string(),
        values: metrics
            .iter()
            .map(|name| {
                let runs = results.iter().filter(|r| r.method == m.as_str());
                runs.flat_map(|r| r.metrics.iter().filter(|x| &x.name == name).map(|x| x.top1))
                    .collect()
            })
            .collect(),
    };
    let methods: Vec<MethodValues> = methods.into_iter().map(values).collect();
    write_comparison(path, &metrics, &methods)
}
