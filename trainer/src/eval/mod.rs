//! Evaluation of learned representations (docs/method.md section 9): the weighted k-NN classifier
//! of the MoCo CIFAR demo / InstDisc ([`knn_accuracy`], [`KnnMonitor`] for use during training) and
//! the linear probe ([`linear_probe`]: MoCo's protocol or SimSiam's with LARS, on every label or a
//! few-shot subset), over labeled shard datasets read through the loader's pipeline.
//!
//! Features are computed in evaluation mode (BN running statistics) from the deterministic
//! evaluation view: shorter side resized to `resize`, central `crop` x `crop` ([`EvalView`],
//! torchvision's `Resize(256)` + `CenterCrop(224)` for ImageNet), no flip, no colour, ImageNet
//! normalisation. The default feature is the global average of the backbone's last feature map
//! ([`FeatureSource::Backbone`], 2048-d for ResNet-50); the projector output and raw pixels are the
//! alternatives.
//!
//! ```no_run
//! use regioncl_trainer::{EvalSet, EvalView, FeatureSource, KnnConfig, encode, knn_accuracy,
//!     load_encoder};
//!
//! # fn main() -> regioncl_trainer::Result<()> {
//! let device = tch::Device::cuda_if_available();
//! let (encoder, config) = load_encoder("runs/demo".as_ref(), device)?;
//! let (train, test) = (EvalSet::open("shards/train".as_ref())?, EvalSet::open("shards/test".as_ref())?);
//! let view = EvalView::for_crop(config.data.image_size as u32);
//! let bank = encode(&encoder, FeatureSource::Backbone, &train, view, 256, 0)?;
//! let queries = encode(&encoder, FeatureSource::Backbone, &test, view, 256, 0)?;
//! for a in knn_accuracy(&bank, &queries, train.num_classes(), &KnnConfig::default())? {
//!     println!("k={} top-1 {:.2}% top-5 {:.2}%", a.k, 100.0 * a.top1, 100.0 * a.top5);
//! }
//! # Ok(())
//! # }
//! ```

mod data;
mod encoder;
mod features;
mod knn;
mod linear;

pub use data::{EvalSet, EvalView};
pub use encoder::{load_encoder, random_encoder, resolve_checkpoint};
pub use features::{FeatureSource, Features, encode, pixel_features};
pub use knn::{KnnAccuracy, KnnConfig, KnnMonitor, KnnRecord, knn_accuracy};
pub use linear::{
    LinearConfig, LinearEpoch, LinearReport, ProbeSchedule, linear_probe, linear_probe_features,
};
