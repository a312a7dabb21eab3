//! RegionCL-M / -D / -S and their base methods MoCo v2, DenseCL and SimSiam, pretrained on libtorch
//! (through tch): ResNet backbones with torchvision names, the momentum encoder and queues, the
//! single-GPU shuffle-BN emulation, colour augmentation on the device, region swapping and mask
//! pooling, the instance, region and dense InfoNCE losses and SimSiam's negative cosine, SGD with
//! checkpointable state, exact resume, and the training loop ([`Pretrainer`] per method).
//!
//! The methods follow `docs/method.md` (sections 2-6) and the paper (Xu et al., *RegionCL*,
//! <https://arxiv.org/abs/2111.12309>, Section 3). On CUDA the encoders run under bf16 autocast
//! with channels_last tensors (through a small C++ shim, `csrc/torch_shim.cpp`); on the CPU in
//! fp32 by default, or in bf16 with channels_last as on CUDA (`run.precision = "bf16"`), so the
//! reduced-precision path runs in tests without a GPU.
//!
//! ```no_run
//! use regioncl_trainer::{Config, SyntheticSource, TrainEvent, Trainer};
//!
//! # fn main() -> regioncl_trainer::Result<()> {
//! let config = Config::load("configs/tiny_cpu.toml".as_ref(), &["data.source=synthetic".into()])?;
//! let mut source = SyntheticSource::new(&config);
//! let summary = Trainer::new(&config, "runs/tiny")
//!     .on_event(|event| {
//!         if let TrainEvent::Step(r) = event {
//!             eprintln!("{}", r.progress_line());
//!         }
//!     })
//!     .run(&mut source)?;
//! println!("last loss {:?}", summary.losses.last());
//! # Ok(())
//! # }
//! ```
//!
//! A batch source (the loader's adapter) implements [`BatchSource`], handing over per step a
//! [`StepInput`]: per view a u8 `[B, H, W, 3]` tensor (pinned host memory from [`empty_pinned`]
//! for asynchronous copies), the per-sample [`regioncl_augment::ViewParams`], the loader's [`regioncl_loader::SwapBox`] and
//! the [`Pairing`].

mod bn;
mod checkpoint;
mod config;
mod dist;
mod ema;
mod error;
mod eval;
mod export;
mod gpu_augment;
mod init;
mod input;
mod loss;
mod memory;
mod method;
mod metrics;
mod model;
mod optim;
mod params;
mod queue;
mod rng;
mod run_dir;
mod runtime;
mod schedule;
mod setup;
mod shim;
mod source;
mod swap;
mod threads;
mod train;

pub use crate::bn::BnMode;
pub use crate::checkpoint::{export_backbone, latest as latest_checkpoint};
pub use crate::config::{
    Arch, AugmentConfig, BatchSplit, Config, DataConfig, DataSource, DenseClConfig, DeviceChoice,
    DistBackend, InitScheme, LrScaling, LrUpdate, Method, MobyConfig, MocoConfig, ModelConfig,
    OptimConfig, OptimizerKind, Precision, RegionConfig, RegionTerms, RunConfig, SimSiamConfig,
    SplitBnImpl, Stem, SwapSampler,
};
pub use crate::dist::{BnParams, Dist, DistHandle, DistOptions, Launch, Launcher, sync_batch_norm};
pub use crate::error::{Error, Result};
pub use crate::eval::{
    EvalSet, EvalView, FeatureSource, Features, KnnAccuracy, KnnConfig, KnnMonitor, KnnRecord,
    LinearConfig, LinearEpoch, LinearReport, ProbeSchedule, encode, knn_accuracy, linear_probe,
    linear_probe_features, load_encoder, pixel_features, random_encoder, resolve_checkpoint,
};
pub use crate::export::{ExportFormat, Exported, export};

pub use crate::input::{BatchSource, StepInput};

pub use crate::memory::PeakMemory;
pub use crate::method::{
    Moby, MomentumContrast, Pretrainer, Scheduled, SimSiam, StepLosses, build_pretrainer,
};
pub use crate::metrics::{LogRecord, RunLog, read_metrics};
pub use crate::model::{
    BackboneSpec, DropPath, Encoder, HeadSpec, MobyPredictor, Predictor, Projector, ResNet,
    ResNetSpec, Swin, SwinSpec, Vit, VitSpec,
};
pub use crate::optim::Optimizer;
pub use crate::params::ParamStore;
pub use crate::run_dir::RunStart;
pub use crate::runtime::Runtime;

pub use crate::setup::Setup;
pub use crate::shim::{empty_pinned, is_channels_last, is_pinned, to_channels_last};
pub use crate::source::{LoaderSource, RankShare, SyntheticSource};
pub use crate::swap::Pairing;

pub use crate::train::{SkippedCheckpoint, TrainEvent, TrainSummary, Trainer};

/// Whether CUDA is usable in this process.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}
