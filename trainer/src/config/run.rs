//! The schema of where and how a run trains: the data, the view augmentation, the device,
//! precision, logging, checkpoints and the multi-process run, as plain data.

use regioncl_augment::ViewSpec;
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

/// MoCo v2's recipe: the loader's [`ViewSpec::mocov2`], each value the decimal it is written as
/// there (0.4, not the f64 nearest to the f32 0.4), so a config file shows the recipe's own
/// numbers and resumes of runs saved with them compare equal.
impl Default for AugmentConfig {
    fn default() -> Self {
        let v = ViewSpec::mocov2(224);
        Self {
            crop_scale_min: decimal(v.scale.0),
            jitter_p: decimal(v.jitter_p),
            brightness: decimal(v.brightness),
            contrast: decimal(v.contrast),
            saturation: decimal(v.saturation),
            hue: decimal(v.hue),
            grayscale_p: decimal(v.grayscale_p),
            blur_p: decimal(v.blur_p),
            blur_sigma_min: decimal(v.blur_sigma.0),
            blur_sigma_max: decimal(v.blur_sigma.1),
            solarize_p: decimal(v.solarize_p),
            flip_p: decimal(v.flip_p),
            asymmetric: false,
        }
    }
}

/// The f64 of the shortest decimal that reads back as `x` (`0.4f32` -> `0.4`).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().expect("a float's own digits parse")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The default recipe is the loader's MoCo v2 recipe, in the decimals written there.
    #[test]
    fn augment_defaults_are_the_loaders_mocov2_recipe() {
        let a = AugmentConfig::default();
        let v = ViewSpec::mocov2(224);
        let pairs = [
            (a.crop_scale_min, v.scale.0),
            (a.jitter_p, v.jitter_p),
            (a.brightness, v.brightness),
            (a.contrast, v.contrast),
            (a.saturation, v.saturation),
            (a.hue, v.hue),
            (a.grayscale_p, v.grayscale_p),
            (a.blur_p, v.blur_p),
            (a.blur_sigma_min, v.blur_sigma.0),
            (a.blur_sigma_max, v.blur_sigma.1),
            (a.solarize_p, v.solarize_p),
            (a.flip_p, v.flip_p),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours as f32, theirs);
        }
        assert_eq!(a.brightness.to_bits(), 0.4f64.to_bits(), "the decimal, not 0.4f32 widened");
        assert_eq!(decimal(0.1), 0.1);
        assert_eq!(decimal(2.0), 2.0);
    }
}
