//! The schema of where and how a run trains: the data, the view augmentation, the device,
//! precision, logging, checkpoints and the multi-process run, as plain data.

use serde::{Deserialize, Serialize};

/// Where batches come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DataSource {
    /// A folder of JPEGs (class subfolders), read through the loader's pipeline as it is.
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
    /// Steps per epoch; 0 = images / batch_size (drop_last), less cuts every epoch short.
    pub steps_per_epoch: u64,
    /// Loader worker threads (`photos`, `shards`); 0 = all cores.
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
    /// BYOL's asymmetric pair (MoBY): the blur and solarize probabilities of the loader's
    /// [`Recipe::byol`](regioncl_loader::Recipe::byol) (view 0 always blurred and never solarised,
    /// view 1 blurred with probability 0.1 and solarised with 0.2) in place of `blur_p` and
    /// `solarize_p`.
    pub asymmetric: bool,
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
    /// bf16 autocast, on CUDA or on the CPU; the loss head and the colour ops stay fp32.
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
    /// channels_last activations and weights (on CUDA and on the CPU).
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
    /// libtorch intra-op threads. 0: libtorch's default (one per core), which `regioncl train`
    /// on the CPU lowers, while other processes take cores, to the cores they leave free
    /// ([`crate::Trainer::adapt_threads`]); N: exactly N, for bit-identical reruns.
    pub threads: i64,
    /// Collective library of a multi-process run (`torchrun`, `srun`): `auto` (NCCL on CUDA, Gloo
    /// on the CPU), `nccl` or `gloo`. A single process has none.
    pub dist_backend: DistBackend,
    /// Seconds a multi-process run waits for a peer (the rendezvous, each collective) before it
    /// fails with an error naming the rank.
    pub dist_timeout_s: u64,
}

/// Which collective library a multi-process run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DistBackend {
    /// NCCL when the run is on CUDA, Gloo on the CPU.
    #[default]
    Auto,
    /// NCCL (CUDA tensors, one GPU per process).
    Nccl,
    /// Gloo (CPU tensors; CUDA tensors are staged through host memory).
    Gloo,
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
            asymmetric: false,
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
