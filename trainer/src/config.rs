//! The training configuration: a serde struct loaded from a TOML file in `configs/`, with
//! `--set key=value` overrides (dotted keys). Unknown keys, values of the wrong type and values out
//! of range are errors that name the key. The resolved config is saved in every checkpoint.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bn::SplitBnImpl;
use crate::dist::{DistBackend, DistOptions};
use crate::error::{Error, Result};
use crate::init::InitScheme;
use crate::loss::RegionTerms;
use crate::model::{Arch, ResNetSpec, Stem};
use crate::swap::SwapSampler;

/// The pretraining method: three base methods, each with its RegionCL variant (the base method
/// plus the region branch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Method {
    /// RegionCL-M (MoCo v2 + region swapping), docs/method.md 4.
    RegionClm,
    /// MoCo v2: the same step with the region branch off.
    MocoV2,
    /// DenseCL (docs/method.md 5.1): MoCo v2 plus the dense head, loss and queue.
    DenseCl,
    /// RegionCL-D (docs/method.md 5.2): DenseCL plus the region loss through the global head.
    RegionCld,
    /// SimSiam (docs/method.md 6.1): predictor, negative cosine, stop-gradient; no queue.
    SimSiam,
    /// RegionCL-S (docs/method.md 6.2): SimSiam plus the region positives.
    RegionCls,
}

impl Method {
    /// Every method, base methods after their RegionCL variant.
    pub const ALL: [Method; 6] = [
        Method::RegionClm,
        Method::MocoV2,
        Method::RegionCld,
        Method::DenseCl,
        Method::RegionCls,
        Method::SimSiam,
    ];

    /// The config spelling (`regionclm`, `mocov2`, `densecl`, `regioncld`, `simsiam`, `regioncls`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::RegionClm => "regionclm",
            Method::MocoV2 => "mocov2",
            Method::DenseCl => "densecl",
            Method::RegionCld => "regioncld",
            Method::SimSiam => "simsiam",
            Method::RegionCls => "regioncls",
        }
    }

    /// Whether the region branch (swap, mask pooling, region loss) runs.
    pub fn has_region(self) -> bool {
        matches!(self, Method::RegionClm | Method::RegionCld | Method::RegionCls)
    }

    /// Whether the method has a momentum encoder and a queue of negatives (MoCo v2, DenseCL and
    /// their RegionCL variants; not SimSiam).
    pub fn uses_queue(self) -> bool {
        !matches!(self, Method::SimSiam | Method::RegionCls)
    }

    /// The checkpoint prefix of the online encoder (backbone `0.*`, head `1.*`): `encoder_q.`, or
    /// `encoder.` for SimSiam (which has no key encoder).
    pub fn encoder_prefix(self) -> &'static str {
        if self.uses_queue() { "encoder_q." } else { "encoder." }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Method.
    pub method: Method,
    /// Seed of every random draw (model init, queue init, key shuffles, data plans).
    pub seed: u64,
    /// Networks.
    pub model: ModelConfig,
    /// Momentum encoder, queue, contrastive head, BN emulation.
    pub moco: MocoConfig,
    /// Region swapping (the RegionCL variants).
    pub region: RegionConfig,
    /// DenseCL and RegionCL-D.
    pub densecl: DenseClConfig,
    /// SimSiam and RegionCL-S.
    pub simsiam: SimSiamConfig,
    /// Optimiser and schedule.
    pub optim: OptimConfig,
    /// Input data.
    pub data: DataConfig,
    /// View augmentation (used by the trainer's own sources; the loader takes it over).
    pub augment: AugmentConfig,
    /// Device, precision, logging and checkpoints.
    pub run: RunConfig,
}

/// Networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `resnet18` or `resnet50`.
    pub arch: Arch,
    /// `imagenet` (stride 32) or `small` (3x3 stem, no max-pool, stride 8).
    pub stem: Stem,
    /// Base width (64 = torchvision).
    pub width: i64,
    /// `openselfsup` (official RegionCL-M) or `torchvision` (official MoCo v2).
    pub init: InitScheme,
    /// Projector hidden width; 0 = the backbone's feature dim (2048 for ResNet-50).
    pub proj_hidden: i64,
    /// Embedding dim (128 for the contrastive methods, 2048 for SimSiam).
    pub proj_dim: i64,
    /// Zero the last BN scale of every residual block (SimSiam's torchvision init).
    pub zero_init_residual: bool,
}

/// DenseCL's dense term and RegionCL-D's region weight (docs/method.md 5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseClConfig {
    /// `lambda`: `L = (1 - lambda) L_single + lambda L_dense` (official 0.5).
    pub lambda: f64,
    /// RegionCL-D's weight `w_r` of the region term, added to the DenseCL loss. No code was
    /// released; the default 0.5 = `1 - lambda` gives the region term the weight of the global term
    /// it extends, as in RegionCL-M where both weigh 1 (docs/method.md 5.2).
    pub region_weight: f64,
}

/// SimSiam's predictor and learning rate, and RegionCL-S's region weight (docs/method.md 6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSiamConfig {
    /// Hidden width of the predictor (512 for a 2048-d projector).
    pub pred_hidden: i64,
    /// Keep the predictor's learning rate at the peak LR (`--fix-pred-lr` of the official recipe);
    /// only the encoder's follows the cosine.
    pub fix_pred_lr: bool,
    /// RegionCL-S's weight of the region positives, added to the SimSiam loss (1, as RegionCL-M's
    /// region term; docs/method.md 6.2).
    pub region_weight: f64,
}

/// Momentum encoder, queue and head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoConfig {
    /// Queue length K (a multiple of the batch size).
    pub queue_size: i64,
    /// Temperature tau.
    pub tau: f64,
    /// EMA momentum m.
    pub momentum: f64,
    /// BN groups S of the single-GPU shuffle-BN emulation (1 = whole-batch BN).
    pub bn_splits: i64,
    /// `chunked` (one BN call per group, keeps channels_last) or `reshape` (the MoCo demo's trick).
    pub bn_impl: SplitBnImpl,
    /// Shuffle the key batch before the key encoder (shuffle-BN).
    pub shuffle_keys: bool,
}

/// Region swapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegionConfig {
    /// `official` (released code, off-by-one clamp) or `aligned` (paper intent).
    pub sampler: SwapSampler,
    /// Smallest box side in cells (C_L).
    pub c_lower: i64,
    /// Largest box side in cells (C_U), inclusive.
    pub c_upper: i64,
    /// Paste rows of Eq. 2 (Table 10).
    pub paste: bool,
    /// Canvas rows of Eq. 2.
    pub canvas: bool,
    /// Intra-image negative.
    pub negative: bool,
}

/// How the learning rate follows the batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LrScaling {
    /// `lr = base_lr * batch_size / ref_batch` (official RegionCL-M: 0.15 at 1024).
    Linear,
    /// `lr = base_lr`.
    None,
}

/// Optimiser and schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Global batch size B.
    pub batch_size: i64,
    /// Learning rate at `ref_batch`.
    pub base_lr: f64,
    /// Batch size at which `base_lr` applies.
    pub ref_batch: i64,
    /// Scaling rule.
    pub lr_scaling: LrScaling,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (on every parameter, BN and biases included).
    pub weight_decay: f64,
    /// Epochs of the cosine schedule (per-epoch updates, no warm-up).
    pub epochs: u64,
}

/// Where batches come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DataSource {
    /// The trainer's single-threaded photo folder source (tests, until the loader is wired).
    Photos,
    /// Random pixels (benchmarks).
    Synthetic,
    /// A shard dataset (`regioncl convert`) through the loader's multithreaded pipeline.
    Shards,
}

/// Input data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Source.
    pub source: DataSource,
    /// `photos`: an image folder (class subfolders of JPEGs), empty = `$REGIONCL_DATA/imagenet-like`,
    /// falling back to `<workspace>/.cache/data/imagenet-like`. `shards`: the dataset directory.
    pub root: String,
    /// Side of both square views, pixels (a multiple of the backbone stride).
    pub image_size: i64,
    /// Steps per epoch; 0 = images / batch_size (drop_last). The shard loader takes only 0.
    pub steps_per_epoch: u64,
    /// Loader worker threads (`shards`); 0 = all cores.
    pub loader_threads: u64,
}

/// The MoCo v2 view recipe (docs/method.md 8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// RandomResizedCrop smallest area fraction.
    pub crop_scale_min: f64,
    /// Probability of ColorJitter.
    pub jitter_p: f64,
    /// Brightness strength.
    pub brightness: f64,
    /// Contrast strength.
    pub contrast: f64,
    /// Saturation strength.
    pub saturation: f64,
    /// Hue strength.
    pub hue: f64,
    /// Probability of grayscale.
    pub grayscale_p: f64,
    /// Probability of blur.
    pub blur_p: f64,
    /// Blur sigma range, low.
    pub blur_sigma_min: f64,
    /// Blur sigma range, high.
    pub blur_sigma_max: f64,
    /// Probability of solarize (0 in MoCo v2).
    pub solarize_p: f64,
    /// Probability of a horizontal flip.
    pub flip_p: f64,
}

/// Device choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DeviceChoice {
    /// CUDA when available, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device 0.
    Cuda,
}

/// Numeric precision of the encoders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Precision {
    /// bf16 on CUDA, fp32 on the CPU.
    Auto,
    /// fp32 everywhere.
    Fp32,
    /// bf16 autocast (CUDA only); the loss head stays fp32.
    Bf16,
}

/// Device, precision, logging and checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Device.
    pub device: DeviceChoice,
    /// Precision.
    pub precision: Precision,
    /// channels_last activations and weights (CUDA only; ignored on the CPU).
    pub channels_last: bool,
    /// cuDNN autotuning.
    pub cudnn_benchmark: bool,
    /// Log (progress line and metrics.jsonl) every N steps.
    pub log_every: u64,
    /// Checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept (older ones are deleted).
    pub keep_checkpoints: u64,
    /// Stop after this many global steps (0 = run every epoch).
    pub max_steps: u64,
    /// libtorch intra-op threads (0 = libtorch's default).
    pub threads: i64,
    /// Collective library of a multi-process run (`torchrun`, `srun`): `auto` (NCCL on CUDA, Gloo
    /// on the CPU), `nccl` or `gloo`. A single process has none.
    pub dist_backend: DistBackend,
    /// Seconds a multi-process run waits for a peer (the rendezvous, each collective) before it
    /// fails with an error naming the rank.
    pub dist_timeout_s: u64,
}

impl RunConfig {
    /// How this run joins a multi-process launch: the backend, the timeout, and CUDA unless
    /// `device = "cpu"` (or `auto` without CUDA).
    pub fn dist_options(&self) -> DistOptions {
        DistOptions {
            backend: self.dist_backend,
            cuda: match self.device {
                DeviceChoice::Cpu => false,
                DeviceChoice::Auto => tch::Cuda::is_available(),
                _ => true,
            },
            timeout: std::time::Duration::from_secs(self.dist_timeout_s),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            method: Method::RegionClm,
            seed: 0,
            model: ModelConfig::default(),
            moco: MocoConfig::default(),
            region: RegionConfig::default(),
            densecl: DenseClConfig::default(),
            simsiam: SimSiamConfig::default(),
            optim: OptimConfig::default(),
            data: DataConfig::default(),
            augment: AugmentConfig::default(),
            run: RunConfig::default(),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::ResNet50,
            stem: Stem::ImageNet,
            width: 64,
            init: InitScheme::OpenSelfSup,
            proj_hidden: 0,
            proj_dim: 128,
            zero_init_residual: false,
        }
    }
}

impl Default for DenseClConfig {
    fn default() -> Self {
        Self { lambda: 0.5, region_weight: 0.5 }
    }
}

impl Default for SimSiamConfig {
    fn default() -> Self {
        Self { pred_hidden: 512, fix_pred_lr: true, region_weight: 1.0 }
    }
}

impl Default for MocoConfig {
    fn default() -> Self {
        Self {
            queue_size: 65536,
            tau: 0.2,
            momentum: 0.999,
            bn_splits: 8,
            bn_impl: SplitBnImpl::Chunked,
            shuffle_keys: true,
        }
    }
}

impl Default for RegionConfig {
    fn default() -> Self {
        Self {
            sampler: SwapSampler::Official,
            c_lower: 3,
            c_upper: 5,
            paste: true,
            canvas: true,
            negative: true,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            batch_size: 1024,
            base_lr: 0.15,
            ref_batch: 1024,
            lr_scaling: LrScaling::Linear,
            momentum: 0.9,
            weight_decay: 1e-4,
            epochs: 200,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: DataSource::Photos,
            root: String::new(),
            image_size: 224,
            steps_per_epoch: 0,
            loader_threads: 0,
        }
    }
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop_scale_min: 0.2,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 0.5,
            blur_sigma_min: 0.1,
            blur_sigma_max: 2.0,
            solarize_p: 0.0,
            flip_p: 0.5,
        }
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            precision: Precision::Auto,
            channels_last: true,
            cudnn_benchmark: true,
            log_every: 10,
            checkpoint_every: 1000,
            keep_checkpoints: 2,
            max_steps: 0,
            threads: 0,
            dist_backend: DistBackend::Auto,
            dist_timeout_s: 1800,
        }
    }
}

impl Config {
    /// Reads a TOML file and applies `key=value` overrides, then validates.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Config`] naming the key for a parse
    /// error, an unknown key, a value of the wrong type, or one out of range.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        Self::from_toml(&text, sets).map_err(|e| match e {
            Error::Config { key, message } if key.is_empty() => {
                Error::config(path.display().to_string(), message)
            }
            other => other,
        })
    }

    /// Parses TOML text, applies overrides, validates.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str, sets: &[String]) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::config("", format!("toml: {e}")))?;
        for set in sets {
            apply_set(&mut table, set)?;
        }
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| Error::config("", format!("serialize defaults: {e}")))?;
        check_keys(&mut table, &defaults, "")?;
        // Each leaf alone over the defaults: a type or variant error then names its key.
        let mut leaves = Vec::new();
        collect_leaves(&table, "", &mut leaves);
        for (key, value) in leaves {
            let mut probe = defaults.clone();
            set_path(&mut probe, &key, value)?;
            probe.try_into::<Config>().map_err(|e| Error::config(&key, e.message().to_string()))?;
        }
        let config: Config =
            table.try_into().map_err(|e| Error::config("", e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    /// The backbone this config builds.
    pub fn resnet_spec(&self) -> ResNetSpec {
        ResNetSpec {
            arch: self.model.arch,
            stem: self.model.stem,
            width: self.model.width,
            init: self.model.init,
            zero_init_residual: self.model.zero_init_residual,
        }
    }

    /// Which region terms are on (none for the base methods; RegionCL-S has no negatives).
    pub fn region_terms(&self) -> RegionTerms {
        if !self.method.has_region() {
            return RegionTerms { paste: false, canvas: false, negative: false };
        }
        RegionTerms {
            paste: self.region.paste,
            canvas: self.region.canvas,
            negative: self.region.negative && self.method.uses_queue(),
        }
    }

    /// BN groups of a training forward: `moco.bn_splits` for the momentum methods (the per-GPU BN
    /// emulation), 1 for SimSiam (SyncBN over the whole batch). The pairing is reversed inside
    /// each group.
    pub fn bn_groups(&self) -> i64 {
        if self.method.uses_queue() { self.moco.bn_splits } else { 1 }
    }

    /// The learning rate at epoch 0 after the scaling rule.
    pub fn peak_lr(&self) -> f64 {
        crate::schedule::scaled_lr(
            self.optim.base_lr,
            self.optim.batch_size,
            self.optim.ref_batch,
            self.optim.lr_scaling,
        )
    }

    /// Checks every value, naming the first bad key.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(key, msg));
        let m = &self.model;
        if !(1..=4096).contains(&m.width) {
            return bad("model.width", format!("{} is not in 1..=4096", m.width));
        }
        if m.proj_hidden < 0 || m.proj_dim < 1 {
            return bad("model.proj_dim", "projector sizes must be positive".into());
        }
        let o = &self.optim;
        if o.batch_size < 2 || o.batch_size % 2 != 0 {
            return bad("optim.batch_size", format!("{} must be even and >= 2", o.batch_size));
        }
        if !(o.base_lr > 0.0 && o.base_lr.is_finite()) {
            return bad("optim.base_lr", format!("{} must be positive", o.base_lr));
        }
        if o.ref_batch < 1 {
            return bad("optim.ref_batch", format!("{} must be positive", o.ref_batch));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return bad("optim.momentum", format!("{} is not in [0, 1)", o.momentum));
        }
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return bad("optim.weight_decay", format!("{} must be >= 0", o.weight_decay));
        }
        if o.epochs == 0 {
            return bad("optim.epochs", "must be at least 1".into());
        }
        let q = &self.moco;
        let queued = self.method.uses_queue();
        if queued && (q.queue_size < o.batch_size || q.queue_size % o.batch_size != 0) {
            return bad(
                "moco.queue_size",
                format!("{} must be a multiple of optim.batch_size {}", q.queue_size, o.batch_size),
            );
        }
        if !(q.tau > 0.0 && q.tau.is_finite()) {
            return bad("moco.tau", format!("{} must be positive", q.tau));
        }
        if !(0.0..=1.0).contains(&q.momentum) {
            return bad("moco.momentum", format!("{} is not in [0, 1]", q.momentum));
        }
        if q.bn_splits < 1 || o.batch_size % q.bn_splits != 0 {
            return bad(
                "moco.bn_splits",
                format!("{} must divide optim.batch_size {}", q.bn_splits, o.batch_size),
            );
        }
        if self.region_terms().any() && (o.batch_size / self.bn_groups()) % 2 != 0 {
            return bad(
                "moco.bn_splits",
                format!(
                    "each of the {} BN groups must hold an even number of samples for the pairing",
                    q.bn_splits
                ),
            );
        }
        let dc = &self.densecl;
        if !(0.0..=1.0).contains(&dc.lambda) {
            return bad("densecl.lambda", format!("{} is not in [0, 1]", dc.lambda));
        }
        for (key, w) in [
            ("densecl.region_weight", dc.region_weight),
            ("simsiam.region_weight", self.simsiam.region_weight),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return bad(key, format!("{w} must be >= 0"));
            }
        }
        if self.simsiam.pred_hidden < 1 {
            return bad("simsiam.pred_hidden", "must be positive".into());
        }
        let d = &self.data;
        let stride = self.resnet_spec().stride();
        if d.image_size < stride || d.image_size % stride != 0 {
            return bad(
                "data.image_size",
                format!("{} must be a multiple of the stride {stride}", d.image_size),
            );
        }
        let grid = d.image_size / stride;
        let r = &self.region;
        if self.region_terms().any() {
            if r.c_lower < 1 || r.c_lower > r.c_upper {
                return bad(
                    "region.c_lower",
                    format!("{} must be in 1..=c_upper ({})", r.c_lower, r.c_upper),
                );
            }
            if r.c_upper > grid - 1 {
                return bad(
                    "region.c_upper",
                    format!("{} leaves no canvas on a {grid}x{grid} grid", r.c_upper),
                );
            }
        }
        let a = &self.augment;
        for (key, p) in [
            ("augment.jitter_p", a.jitter_p),
            ("augment.grayscale_p", a.grayscale_p),
            ("augment.blur_p", a.blur_p),
            ("augment.solarize_p", a.solarize_p),
            ("augment.flip_p", a.flip_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(key, format!("{p} is not a probability"));
            }
        }
        if !(a.crop_scale_min > 0.0 && a.crop_scale_min <= 1.0) {
            return bad("augment.crop_scale_min", format!("{} is not in (0, 1]", a.crop_scale_min));
        }
        if !(0.0..=0.5).contains(&a.hue) {
            return bad("augment.hue", format!("{} is not in [0, 0.5]", a.hue));
        }
        if !(a.blur_sigma_min > 0.0 && a.blur_sigma_min <= a.blur_sigma_max) {
            return bad(
                "augment.blur_sigma_min",
                "needs 0 < blur_sigma_min <= blur_sigma_max".into(),
            );
        }
        if 3.0 * a.blur_sigma_max + 1.0 >= d.image_size as f64 {
            return bad(
                "augment.blur_sigma_max",
                format!("{} is too wide for {} px views", a.blur_sigma_max, d.image_size),
            );
        }
        if self.run.log_every == 0 {
            return bad("run.log_every", "must be at least 1".into());
        }
        if self.run.keep_checkpoints == 0 {
            return bad("run.keep_checkpoints", "must be at least 1".into());
        }
        if self.run.dist_timeout_s == 0 {
            return bad("run.dist_timeout_s", "must be at least 1".into());
        }
        Ok(())
    }

    /// A rank's share of the global batch in a world of `world` processes: `optim.batch_size`
    /// is the global batch (the queue advances by it every step), each rank takes
    /// `batch_size / world` samples.
    ///
    /// # Errors
    /// [`Error::Config`] naming `optim.batch_size` when the world does not divide it.
    pub fn rank_batch(&self, world: usize) -> Result<i64> {
        let (b, w) = (self.optim.batch_size, world.max(1) as i64);
        if b % w != 0 {
            return Err(Error::config(
                "optim.batch_size",
                format!("{b} (the global batch) is not divisible by the {w} processes of the run"),
            ));
        }
        Ok(b / w)
    }

    /// The BN groups of one rank's share of the batch in a world of `world` processes, inside
    /// which the RegionCL pairing is reversed: [`Config::bn_groups`] counts groups of the
    /// **global** batch, so a rank holds `bn_groups / world` of them (one = plain per-GPU BN, as
    /// the official 8-GPU runs), and one group over every rank (SyncBN, `bn_groups = 1`) leaves
    /// each rank one group of its own for the pairing. A world of one gives `bn_groups()`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `optim.batch_size` when the world does not divide the batch, and
    /// `moco.bn_splits` when the groups do not spread over the ranks or a rank's group is odd
    /// while the region branch pairs its samples.
    pub fn rank_groups(&self, world: usize) -> Result<i64> {
        let b = self.rank_batch(world)?;
        let (g, w) = (self.bn_groups(), world.max(1) as i64);
        let groups = match g {
            _ if w == 1 => g,
            1 => 1,
            _ if g % w == 0 => g / w,
            _ => {
                return Err(Error::config(
                    "moco.bn_splits",
                    format!(
                        "{g} BN groups cannot be spread over {w} processes: use 1 (SyncBN) or a \
                         multiple of {w}"
                    ),
                ));
            }
        };
        if self.region_terms().any() && (b % groups != 0 || (b / groups) % 2 != 0) {
            return Err(Error::config(
                "moco.bn_splits",
                format!(
                    "each rank's batch of {b} must split into {groups} BN groups of an even size \
                     for the pairing"
                ),
            ));
        }
        Ok(groups)
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    v.type_str()
}

fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields one part");
    let mut t = table;
    let mut prefix = String::new();
    for p in parts {
        prefix = if prefix.is_empty() { p.to_string() } else { format!("{prefix}.{p}") };
        let entry =
            t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| Error::config(&prefix, "is not a table"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

fn apply_set(table: &mut toml::Table, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| Error::config(set, "an override must look like key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(Error::config(set, "empty key"));
    }
    set_path(table, key, parse_value(raw.trim()))
}

/// Rejects keys that the defaults lack, and coerces integers into float fields.
fn check_keys(table: &mut toml::Table, defaults: &toml::Table, prefix: &str) -> Result<()> {
    for (k, v) in table.iter_mut() {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        let Some(d) = defaults.get(k) else {
            return Err(Error::config(&key, "unknown key"));
        };
        match (d, &mut *v) {
            (toml::Value::Table(dt), toml::Value::Table(vt)) => check_keys(vt, dt, &key)?,
            (toml::Value::Table(_), other) => {
                return Err(Error::config(
                    &key,
                    format!("expected a table, found {}", type_name(other)),
                ));
            }
            (toml::Value::Float(_), toml::Value::Integer(i)) => *v = toml::Value::Float(*i as f64),
            (d, v) if type_name(d) != type_name(v) => {
                return Err(Error::config(
                    &key,
                    format!("expected {}, found {}", type_name(d), type_name(v)),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn collect_leaves(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => collect_leaves(t, &key, out),
            other => out.push((key, other.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, sets: &[&str]) -> String {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::from_toml(text, &sets).unwrap_err().to_string()
    }

    /// Every recipe in `configs/` loads, and the ImageNet ones spread over 8 GPUs (one BN group,
    /// 1 / 8 of the global batch, per rank).
    #[test]
    fn recipes_load_and_spread_over_8_ranks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let c = Config::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
            if path.to_string_lossy().contains("r50_imagenet") {
                assert_eq!(c.run.dist_backend, DistBackend::Auto, "{}", path.display());
                assert_eq!(c.rank_batch(8).unwrap(), c.optim.batch_size / 8);
                assert_eq!(c.rank_groups(8).unwrap(), 1, "{}", path.display());
            }
        }
        assert!(n >= 7, "{n} recipes");
    }

    /// The world must divide the global batch and its BN groups; a bad backend names its key.
    #[test]
    fn rank_groups_name_the_key() {
        let c = Config::from_toml("", &[]).unwrap(); // batch 1024 in 8 groups
        assert_eq!((c.rank_groups(1).unwrap(), c.rank_groups(2).unwrap()), (8, 4));
        assert!(c.rank_groups(3).unwrap_err().to_string().contains("optim.batch_size"));
        assert!(c.rank_groups(16).unwrap_err().to_string().contains("moco.bn_splits"));
        let sync = Config::from_toml("", &["moco.bn_splits=1".into()]).unwrap();
        assert_eq!(sync.rank_groups(16).unwrap(), 1, "SyncBN: the pairing in each rank's batch");
        let s = Config::from_toml("", &["method=simsiam".into()]).unwrap();
        assert_eq!(s.rank_groups(16).unwrap(), 1);
        assert!(err("", &["run.dist_backend=mpi"]).contains("run.dist_backend"));
    }

    #[test]
    fn defaults_are_the_paper_recipe() {
        let c = Config::from_toml("", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.optim.batch_size, 1024);
        assert!((c.peak_lr() - 0.15).abs() < 1e-12);
        let back = Config::from_toml(&c.to_toml(), &[]).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn overrides_and_errors_name_the_key() {
        let c = Config::from_toml(
            "[optim]\nbatch_size = 256\n",
            &["optim.base_lr=0.03".into(), "optim.ref_batch=256".into(), "method=mocov2".into()],
        )
        .unwrap();
        assert_eq!((c.optim.batch_size, c.method), (256, Method::MocoV2));
        assert!((c.peak_lr() - 0.03).abs() < 1e-12);
        let c = Config::from_toml("", &["moco.tau=1".into()]).unwrap();
        assert_eq!(c.moco.tau, 1.0, "integer into a float field");
        assert!(err("[model]\ndepth = 3\n", &[]).contains("`model.depth`: unknown key"));
        assert!(err("", &["optim.lr=0.1"]).contains("`optim.lr`: unknown key"));
        assert!(
            err("", &["optim.batch_size=big"]).contains("`optim.batch_size`: expected integer")
        );
        assert!(err("", &["model.arch=resnet34"]).contains("`model.arch`"));
        assert!(err("", &["optim.batch_size=1000"]).contains("`moco.queue_size`"));
        assert!(err("", &["region.c_upper=7"]).contains("`region.c_upper`"));
        assert!(err("", &["moco.bn_splits=3"]).contains("`moco.bn_splits`"));
        assert!(err("", &["nokey"]).contains("key=value"));
        assert!(err("model = 3", &[]).contains("`model`: expected a table"));
        assert!(err("[optim\n", &[]).contains("toml"));
        assert!(err("", &["densecl.lambda=1.5"]).contains("`densecl.lambda`"));
        assert!(err("", &["simsiam.region_weight=-1"]).contains("`simsiam.region_weight`"));
        assert!(err("", &["method=barlow"]).contains("`method`"));
    }

    #[test]
    fn methods_round_trip_and_their_switches() {
        for m in Method::ALL {
            let c = Config::from_toml(&format!("method = \"{}\"", m.as_str()), &[]).unwrap();
            assert_eq!(c.method, m);
            assert_eq!(c.region_terms().any(), m.has_region(), "{m:?}");
        }
        // SimSiam: no queue constraints, one BN group, no intra negatives.
        let c = Config::from_toml(
            "method = \"regioncls\"\n[optim]\nbatch_size = 384\n",
            &["moco.bn_splits=8".into()],
        )
        .unwrap();
        assert_eq!((c.bn_groups(), c.region_terms().negative), (1, false));
        assert_eq!(c.method.encoder_prefix(), "encoder.");
        let c = Config::from_toml("method = \"regioncld\"", &[]).unwrap();
        assert_eq!((c.bn_groups(), c.region_terms().negative), (8, true));
        assert_eq!(c.method.encoder_prefix(), "encoder_q.");
        assert!(err("method = \"densecl\"\n[optim]\nbatch_size = 384\n", &[]).contains("queue"));
    }
}
