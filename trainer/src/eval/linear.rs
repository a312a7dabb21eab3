//! The MoCo linear probe (docs/method.md 9.2): a frozen backbone in evaluation mode (BN running
//! statistics read, never updated), global average pooling, one fc layer initialised N(0, 0.01)
//! with zero bias, trained with SGD (lr 30, momentum 0.9, weight decay 0) and the learning rate
//! divided by 10 at 60% and 80% of the epochs (epochs 60 and 80 of MoCo's 100). Training views are
//! RandomResizedCrop (scale 0.08-1) + flip; test views the centre crop. Top-1 and top-5 on the test
//! set after every epoch; the report gives the best epoch's and the last.
//!
//! Without augmentation (`augment = false`) the training view is the centre crop, so the frozen
//! backbone's features do not change between epochs: they are computed once and cached, and each
//! epoch is a shuffled pass over the cache (seconds instead of a forward pass over the train set).
//! The test features are always computed once.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::data::{EvalSet, EvalView, normalize};
use super::features::{FeatureSource, Features, embed, encode};
use crate::error::{Error, Result};
use crate::model::Encoder;
use crate::rng::KeyedRng;

/// Probe settings; the defaults are MoCo's protocol (except `epochs`, which callers set).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearConfig {
    /// Epochs (MoCo: 100).
    pub epochs: u64,
    /// Images per step (MoCo: 256).
    pub batch_size: usize,
    /// Initial learning rate (MoCo: 30).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Fractions of `epochs` at which the learning rate is divided by 10 (MoCo: 60/100, 80/100).
    pub milestones: Vec<f64>,
    /// RandomResizedCrop + flip training views (true), or the centre crop with cached features.
    pub augment: bool,
    /// Smallest crop area of the RandomResizedCrop.
    pub crop_scale_min: f32,
    /// The test (and, without augmentation, train) view.
    pub view: EvalView,
    /// Seed of the fc init, the epoch orders and the crops.
    pub seed: u64,
    /// Loader workers (0 = every core).
    pub threads: usize,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 256,
            lr: 30.0,
            momentum: 0.9,
            weight_decay: 0.0,
            milestones: vec![0.6, 0.8],
            augment: true,
            crop_scale_min: 0.08,
            view: EvalView::IMAGENET,
            seed: 0,
            threads: 0,
        }
    }
}

impl LinearConfig {
    /// The learning rate of `epoch` (0-based): `lr * 0.1^m`, `m` the milestones at or before it,
    /// each milestone `round(fraction * epochs)`.
    pub fn lr_at(&self, epoch: u64) -> f64 {
        let passed = self
            .milestones
            .iter()
            .filter(|&&f| epoch >= (f * self.epochs as f64).round() as u64)
            .count();
        self.lr * 0.1f64.powi(passed as i32)
    }
}

/// One epoch of the probe.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearEpoch {
    /// 0-based epoch.
    pub epoch: u64,
    /// Its learning rate.
    pub lr: f64,
    /// Mean training cross-entropy.
    pub loss: f64,
    /// Test top-1 after the epoch, in `[0, 1]`.
    pub top1: f64,
    /// Test top-5 after the epoch.
    pub top5: f64,
}

/// What the probe measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearReport {
    /// Every epoch.
    pub epochs: Vec<LinearEpoch>,
    /// The epoch with the best top-1 (MoCo reports it).
    pub best: LinearEpoch,
    /// The last epoch.
    pub last: LinearEpoch,
}

/// The fc layer and its SGD state (PyTorch's SGD: `buf = m * buf + g + wd * p; p -= lr * buf`).
struct Fc {
    w: Tensor,
    b: Tensor,
    bufs: [Option<Tensor>; 2],
}

impl Fc {
    fn new(dim: i64, classes: i64, device: Device) -> Self {
        let w = Tensor::empty([classes, dim], (Kind::Float, device)).normal_(0.0, 0.01);
        let b = Tensor::zeros([classes], (Kind::Float, device));
        Self { w: w.set_requires_grad(true), b: b.set_requires_grad(true), bufs: [None, None] }
    }

    /// `[B, D] -> [B, classes]` logits.
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, Some(&self.b))
    }

    /// One SGD step on `[B, D]` features with labels `[B]`; returns the loss.
    fn step(&mut self, x: &Tensor, y: &Tensor, cfg: &LinearConfig, lr: f64) -> f64 {
        let loss = self.forward(x).cross_entropy_for_logits(y);
        let grads = Tensor::run_backward(&[&loss], &[&self.w, &self.b], false, false);
        tch::no_grad(|| {
            for (i, (p, g)) in [&self.w, &self.b].into_iter().zip(grads).enumerate() {
                let g = if cfg.weight_decay > 0.0 { g + p * cfg.weight_decay } else { g };
                let buf = match self.bufs[i].take() {
                    Some(buf) => buf * cfg.momentum + g,
                    None => g,
                };
                let _ = p.shallow_clone().g_sub_(&(&buf * lr));
                self.bufs[i] = Some(buf);
            }
        });
        loss.double_value(&[])
    }

    /// (top-1, top-5) on features `[N, D]` in blocks.
    fn accuracy(&self, test: &Features, device: Device) -> (f64, f64) {
        tch::no_grad(|| {
            let n = test.len();
            let classes = self.w.size()[0];
            let (mut c1, mut c5) = (0i64, 0i64);
            let mut start = 0;
            while start < n {
                let len = 1024.min(n - start);
                let x = test.values.narrow(0, start, len).to_device(device);
                let y = test.labels.narrow(0, start, len).to_device(device);
                let (_, pred) = self.forward(&x).topk(5.min(classes), 1, true, true); // [len, 5]
                let hits = pred.eq_tensor(&y.unsqueeze(1));
                c1 += hits.select(1, 0).sum(Kind::Int64).int64_value(&[]);
                c5 += hits.any_dim(1, false).sum(Kind::Int64).int64_value(&[]);
                start += len;
            }
            (c1 as f64 / n as f64, c5 as f64 / n as f64)
        })
    }
}

/// Stream tag of the cached-feature epoch shuffles.
const STREAM_PROBE: u64 = 0x70_726f_6265; // "probe"

/// Trains and tests a linear classifier on the frozen `encoder`'s pooled backbone features,
/// calling `on_epoch` after every epoch.
///
/// # Errors
/// [`Error::Input`] for zero epochs or datasets labelling different classes; data and libtorch
/// errors.
pub fn linear_probe(
    encoder: &Encoder,
    train: &EvalSet,
    test: &EvalSet,
    config: &LinearConfig,
    on_epoch: &mut dyn FnMut(&LinearEpoch),
) -> Result<LinearReport> {
    if config.epochs == 0 || config.batch_size == 0 {
        return Err(Error::Input("linear probe: epochs and batch size must be positive".into()));
    }
    train.check_same_classes(test)?;
    let device = encoder.store().entries().first().map_or(Device::Cpu, |e| e.tensor.device());
    let classes = train.num_classes().max(test.num_classes()) as i64;
    let source = FeatureSource::Backbone;
    let (b, threads) = (config.batch_size, config.threads);
    let test_f = encode(encoder, source, test, config.view, b, threads)?;
    let cached = if config.augment {
        None
    } else {
        Some(encode(encoder, source, train, config.view, b, threads)?)
    };
    tch::manual_seed(config.seed as i64);
    let mut fc = Fc::new(encoder.spec().feature_dim(), classes, device);
    let mut epochs = Vec::with_capacity(config.epochs as usize);
    for epoch in 0..config.epochs {
        let lr = config.lr_at(epoch);
        let (mut sum, mut steps) = (0.0, 0u64);
        if let Some(f) = &cached {
            // Shuffled full batches of the cache (drop-last, as the loader's epochs).
            let order =
                KeyedRng::new(&[config.seed, epoch, STREAM_PROBE]).permutation(f.len() as usize);
            let order = Tensor::from_slice(&order);
            let n = f.len() / b as i64 * b as i64;
            for start in (0..n.max(1)).step_by(b) {
                let idx = order.narrow(0, start, (b as i64).min(f.len() - start));
                let x = f.values.index_select(0, &idx).to_device(device);
                let y = f.labels.index_select(0, &idx).to_device(device);
                sum += fc.step(&x, &y, config, lr);
                steps += 1;
            }
        } else {
            let scale = (config.crop_scale_min, 1.0);
            train.for_each_random(
                config.view.crop,
                scale,
                config.seed,
                epoch,
                b,
                threads,
                |px, l| {
                    let x = embed(encoder, source, &normalize(px, device)); // [B, D]
                    let y: Vec<i64> = l.iter().map(|&v| i64::from(v)).collect();
                    sum += fc.step(&x, &Tensor::from_slice(&y).to_device(device), config, lr);
                    steps += 1;
                    Ok(())
                },
            )?;
        }
        let (top1, top5) = fc.accuracy(&test_f, device);
        let e = LinearEpoch { epoch, lr, loss: sum / steps.max(1) as f64, top1, top5 };
        on_epoch(&e);
        epochs.push(e);
    }
    let last = *epochs.last().expect("at least one epoch");
    let best = *epochs
        .iter()
        .max_by(|a, c| a.top1.total_cmp(&c.top1).then(c.epoch.cmp(&a.epoch)))
        .expect("at least one epoch");
    Ok(LinearReport { epochs, best, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_scales_moco_milestones() {
        let c = LinearConfig { epochs: 100, ..LinearConfig::default() };
        assert_eq!(c.lr_at(0), 30.0);
        assert_eq!(c.lr_at(59), 30.0);
        assert!((c.lr_at(60) - 3.0).abs() < 1e-12);
        assert!((c.lr_at(79) - 3.0).abs() < 1e-12);
        assert!((c.lr_at(80) - 0.3).abs() < 1e-12);
        let c = LinearConfig { epochs: 10, ..LinearConfig::default() };
        for (epoch, want) in [(5, 30.0), (6, 3.0), (7, 3.0), (8, 0.3), (9, 0.3)] {
            assert!((c.lr_at(epoch) - want).abs() < 1e-12, "epoch {epoch}: {}", c.lr_at(epoch));
        }
    }

    /// The fc's SGD is PyTorch's: after two steps on a fixed batch, momentum buffer and weights
    /// match the closed form for a quadratic-free check (gradient of the mean logit of one class).
    #[test]
    fn sgd_matches_pytorch_update() {
        tch::manual_seed(1);
        let cfg = LinearConfig { momentum: 0.9, ..LinearConfig::default() };
        let mut fc = Fc::new(4, 3, Device::Cpu);
        let w0 = fc.w.detach().copy();
        let x = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
        // Reference gradient from autograd on a copy.
        let w = w0.copy().set_requires_grad(true);
        let b = Tensor::zeros([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let g = Tensor::run_backward(
            &[&x.linear(&w, Some(&b)).cross_entropy_for_logits(&y)],
            &[&w],
            false,
            false,
        )
        .remove(0);
        let _ = fc.step(&x, &y, &cfg, 0.5);
        let diff = (&fc.w.detach() - (&w0 - &g * 0.5)).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "first step: {diff}");
        assert!(fc.bufs[0].as_ref().unwrap().allclose(&g, 1e-6, 1e-7, false));
    }
}
