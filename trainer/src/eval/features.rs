//! Feature extraction for evaluation: a frozen encoder in evaluation mode over every record of an
//! [`EvalSet`], or the raw pixels.

use tch::{Device, Tensor};

use super::data::{EvalSet, EvalView, normalize};
use crate::bn::BnMode;
use crate::error::{Error, Result};
use crate::model::{Encoder, l2_normalize};

/// Which representation of an image is evaluated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeatureSource {
    /// The backbone's global representation: the average of its last feature map (`D` = 2048
    /// for ResNet-50, 768 for Swin-T) or ViT's class token (384 for ViT-S/16). The standard.
    #[default]
    Backbone,
    /// The projector's output `g(avgpool(f(x)))` (the 128-d embedding the loss sees).
    Projector,
}

/// Features of every record of a dataset, with their labels, on the CPU.
#[derive(Debug)]
pub struct Features {
    /// float `[N, D]`.
    pub values: Tensor,
    /// int64 `[N]`.
    pub labels: Tensor,
}

impl Features {
    /// Number of samples.
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Feature dimension.
    pub fn dim(&self) -> i64 {
        self.values.size()[1]
    }

    /// These features with L2-normalised rows.
    pub fn normalized(&self) -> Features {
        Features { values: l2_normalize(&self.values), labels: self.labels.shallow_clone() }
    }

    fn collect(values: Vec<Tensor>, labels: Vec<i64>) -> Result<Self> {
        if values.is_empty() {
            return Err(Error::Data("no samples".into()));
        }
        Ok(Self { values: Tensor::cat(&values, 0), labels: Tensor::from_slice(&labels) })
    }
}

/// Pooled (or projected) features, **not normalised**, of a batch of normalised images, in
/// evaluation mode and without gradients.
///
/// # Shapes
/// `x: [B, 3, H, W]` -> float `[B, D]` on `x`'s device.
pub(crate) fn embed(encoder: &Encoder, source: FeatureSource, x: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let pooled = encoder.pooled(x, BnMode::eval()); // [B, D]
        match source {
            FeatureSource::Backbone => pooled,
            FeatureSource::Projector => encoder.project(&pooled),
        }
    })
}

fn encoder_device(encoder: &Encoder) -> Device {
    encoder.store().entries().first().map_or(Device::Cpu, |e| e.tensor.device())
}

/// Features of every record of `set` (evaluation view `view`, batches of `batch`, `threads`
/// loader workers), **not normalised** (the linear probe takes them as they are; the k-NN
/// normalises). The encoder runs where its weights are.
///
/// # Shapes
/// Returns `values: [N, D]` float and `labels: [N]` int64, on the CPU.
///
/// # Errors
/// Data errors (a record that fails to decode, with all its substitutes).
pub fn encode(
    encoder: &Encoder,
    source: FeatureSource,
    set: &EvalSet,
    view: EvalView,
    batch: usize,
    threads: usize,
) -> Result<Features> {
    let device = encoder_device(encoder);
    let (mut values, mut labels) = (Vec::new(), Vec::with_capacity(set.len()));
    set.for_each_center(view, batch, threads, |px, l| {
        let x = normalize(px, device); // [B, 3, crop, crop]
        values.push(embed(encoder, source, &x).to_device(Device::Cpu));
        labels.extend(l.iter().map(|&v| i64::from(v)));
        Ok(())
    })?;
    Features::collect(values, labels)
}

/// The raw-pixel baseline: the normalised evaluation view flattened to `3 * crop * crop` values.
///
/// # Shapes
/// Returns `values: [N, 3 * crop * crop]` float and `labels: [N]` int64, on the CPU.
///
/// # Errors
/// As [`encode`].
pub fn pixel_features(
    set: &EvalSet,
    view: EvalView,
    batch: usize,
    threads: usize,
) -> Result<Features> {
    let (mut values, mut labels) = (Vec::new(), Vec::with_capacity(set.len()));
    set.for_each_center(view, batch, threads, |px, l| {
        values.push(normalize(px, Device::Cpu).flatten(1, -1)); // [B, 3 * H * W]
        labels.extend(l.iter().map(|&v| i64::from(v)));
        Ok(())
    })?;
    Features::collect(values, labels)
}
