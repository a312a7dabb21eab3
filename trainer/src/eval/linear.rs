//! Linear evaluation of a frozen backbone (docs/method.md 9.2, 9.3): the backbone in evaluation
//! mode (BN running statistics read, never updated), global average pooling, one fc layer
//! initialised N(0, 0.01) with zero bias, trained on the train set and tested on the test set after
//! every epoch (top-1, top-5); the report gives the best epoch's and the last. Two protocols:
//!
//! - **MoCo** ([`LinearConfig::moco`]): SGD lr 30, momentum 0.9, weight decay 0, batch 256, the
//!   learning rate divided by 10 at 60% and 80% of the epochs (epochs 60 and 80 of 100).
//! - **SimSiam** ([`LinearConfig::simsiam`]): SGD with momentum 0.9 under LARS (apex's LARC, trust
//!   coefficient 0.001, no clipping: each parameter's gradient scaled by
//!   `0.001 |w| / (|g| + wd |w| + 1e-8)` unless `|w|` or `|g|` is 0), lr `0.1 x batch / 256`
//!   (1.6 at its batch of 4096), a per-epoch cosine to 0 over 90 epochs, weight decay 0.
//!
//! Training views are RandomResizedCrop (scale 0.08-1) + flip, test views the centre crop.
//! Without augmentation (`augment = false`) the training view is the centre crop too, so the
//! frozen features are computed once and cached ([`linear_probe_features`]): each epoch is a
//! shuffled pass over the cache, seconds instead of a forward pass over the train set.
//!
//! Few-shot evaluation (the paper's Table 3): `labels_fraction` trains on a class-balanced subset
//! of the train set ([`few_shot_subset`]): the same number of samples of each class, drawn by a
//! generator keyed by `subset_seed` alone, so every method of a comparison sees the same images.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::data::{EvalSet, EvalView, normalize};
use super::features::{FeatureSource, Features, embed, encode};
use crate::error::{Error, Result};
use crate::model::Encoder;
use crate::rng::KeyedRng;

/// How the learning rate falls over the epochs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ProbeSchedule {
    /// Divided by 10 at each of these fractions of the epochs (MoCo: 0.6, 0.8).
    Steps(Vec<f64>),
    /// `lr * 0.5 * (1 + cos(pi * epoch / epochs))` (SimSiam).
    Cosine,
}

/// Probe settings; build them with [`LinearConfig::moco`] or [`LinearConfig::simsiam`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinearConfig {
    /// Epochs (MoCo: 100, SimSiam: 90).
    pub epochs: u64,
    /// Images per step (MoCo: 256, SimSiam: 4096).
    pub batch_size: usize,
    /// Initial learning rate (MoCo: 30, SimSiam: 0.1 x batch / 256).
    pub lr: f64,
    /// The learning-rate schedule.
    pub schedule: ProbeSchedule,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// LARS trust coefficient (SimSiam: 0.001); `None` for plain SGD.
    pub lars: Option<f64>,
    /// RandomResizedCrop + flip training views (true), or the centre crop with cached features.
    pub augment: bool,
    /// Smallest crop area of the RandomResizedCrop.
    pub crop_scale_min: f32,
    /// The test (and, without augmentation, train) view.
    pub view: EvalView,
    /// Seed of the fc init, the epoch orders and the crops.
    pub seed: u64,
    /// Train on this fraction of the labels: a class-balanced subset (at least one image per
    /// class) drawn from `subset_seed`, the same for every checkpoint; `None` = every label.
    pub labels_fraction: Option<f64>,
    /// Seed of the few-shot subset (independent of the method, so comparisons share it).
    pub subset_seed: u64,
    /// Loader workers (0 = every core).
    pub threads: usize,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self::moco(100)
    }
}

impl LinearConfig {
    /// MoCo's protocol over `epochs` epochs: SGD lr 30, momentum 0.9, no weight decay, batch 256,
    /// lr / 10 at 60% and 80% of the epochs.
    pub fn moco(epochs: u64) -> Self {
        Self {
            epochs,
            batch_size: 256,
            lr: 30.0,
            schedule: ProbeSchedule::Steps(vec![0.6, 0.8]),
            momentum: 0.9,
            weight_decay: 0.0,
            lars: None,
            augment: true,
            crop_scale_min: 0.08,
            view: EvalView::IMAGENET,
            seed: 0,
            labels_fraction: None,
            subset_seed: 0,
            threads: 0,
        }
    }

    /// SimSiam's protocol over `epochs` epochs (90 in the paper) at batch `batch_size` (4096):
    /// LARS (trust 0.001) over SGD momentum 0.9, lr `0.1 x batch_size / 256`, cosine, no weight
    /// decay.
    pub fn simsiam(epochs: u64, batch_size: usize) -> Self {
        Self {
            batch_size,
            lr: 0.1 * batch_size as f64 / 256.0,
            schedule: ProbeSchedule::Cosine,
            lars: Some(0.001),
            ..Self::moco(epochs)
        }
    }

    /// The learning rate of `epoch` (0-based). Steps: `lr * 0.1^m`, `m` the milestones at or
    /// before it, each milestone `round(fraction * epochs)`.
    pub fn lr_at(&self, epoch: u64) -> f64 {
        match &self.schedule {
            ProbeSchedule::Steps(milestones) => {
                let passed = milestones
                    .iter()
                    .filter(|&&f| epoch >= (f * self.epochs as f64).round() as u64)
                    .count();
                self.lr * 0.1f64.powi(passed as i32)
            }
            ProbeSchedule::Cosine => {
                let t = epoch as f64 / self.epochs.max(1) as f64;
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
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
    /// Labeled train samples it was trained on (all, or the few-shot subset).
    pub num_train: usize,
    /// Every epoch.
    pub epochs: Vec<LinearEpoch>,
    /// The epoch with the best top-1 (MoCo reports it).
    pub best: LinearEpoch,
    /// The last epoch.
    pub last: LinearEpoch,
}

/// The fc layer and its optimiser state: PyTorch's SGD (`buf = m * buf + g + wd * p;
/// p -= lr * buf`), under apex's LARC when `lars` is set.
struct Fc {
    w: Tensor,
    b: Tensor,
    bufs: [Option<Tensor>; 2],
}

/// LARC's epsilon.
const LARS_EPS: f64 = 1e-8;

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

    /// One optimiser step on `[B, D]` features with labels `[B]`; returns the loss.
    fn step(&mut self, x: &Tensor, y: &Tensor, cfg: &LinearConfig, lr: f64) -> f64 {
        let loss = self.forward(x).cross_entropy_for_logits(y);
        let grads = Tensor::run_backward(&[&loss], &[&self.w, &self.b], false, false);
        tch::no_grad(|| {
            for (i, (p, g)) in [&self.w, &self.b].into_iter().zip(grads).enumerate() {
                let wd = cfg.weight_decay;
                let g = match cfg.lars {
                    Some(trust) => {
                        let (pn, gn) = (p.norm().double_value(&[]), g.norm().double_value(&[]));
                        if pn != 0.0 && gn != 0.0 {
                            (g + p * wd) * (trust * pn / (gn + wd * pn + LARS_EPS))
                        } else {
                            g
                        }
                    }
                    None if wd > 0.0 => g + p * wd,
                    None => g,
                };
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

/// Stream tags of the cached-feature epoch shuffles and of the few-shot subsets.
const STREAM_PROBE: u64 = 0x70_726f_6265; // "probe"
const STREAM_SUBSET: u64 = 0x73_7562_7365; // "subse"

/// The few-shot subset of `labels` (`[N]`, in `0..classes`): for each class, the same number of
/// samples, `max(1, round(fraction * N / classes))` (all of a smaller class), drawn without
/// replacement by a generator keyed by `seed` and the class. Sorted sample indices.
///
/// # Errors
/// [`Error::Input`] for a fraction outside `(0, 1]`.
pub fn few_shot_subset(
    labels: &[i64],
    classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<Vec<i64>> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(Error::Input(format!("labels fraction {fraction} is not in (0, 1]")));
    }
    let per_class =
        ((fraction * labels.len() as f64 / classes.max(1) as f64).round() as usize).max(1);
    let mut out = Vec::new();
    for c in 0..classes {
        let members: Vec<i64> =
            (0..labels.len() as i64).filter(|&i| labels[i as usize] == c as i64).collect();
        let order = KeyedRng::new(&[seed, c as u64, STREAM_SUBSET]).permutation(members.len());
        out.extend(order.iter().take(per_class).map(|&j| members[j as usize]));
    }
    out.sort_unstable();
    Ok(out)
}

fn check(config: &LinearConfig) -> Result<()> {
    if config.epochs == 0 || config.batch_size == 0 {
        return Err(Error::Input("linear probe: epochs and batch size must be positive".into()));
    }
    Ok(())
}

/// Trains and tests a linear classifier on the frozen `encoder`'s pooled backbone features,
/// calling `on_epoch` after every epoch. Without augmentation the features are computed once
/// ([`linear_probe_features`]).
///
/// # Errors
/// [`Error::Input`] for zero epochs, or a few-shot fraction with augmentation (the subset is
/// taken from cached features); [`Error::Data`] for datasets labelling different classes; data
/// and libtorch errors.
pub fn linear_probe(
    encoder: &Encoder,
    train: &EvalSet,
    test: &EvalSet,
    config: &LinearConfig,
    on_epoch: &mut dyn FnMut(&LinearEpoch),
) -> Result<LinearReport> {
    check(config)?;
    train.check_same_classes(test)?;
    let device = encoder.store().entries().first().map_or(Device::Cpu, |e| e.tensor.device());
    let classes = train.num_classes().max(test.num_classes());
    let source = FeatureSource::Backbone;
    let (b, threads) = (config.batch_size, config.threads);
    let test_f = encode(encoder, source, test, config.view, b, threads)?;
    if !config.augment {
        let train_f = encode(encoder, source, train, config.view, b, threads)?;
        return linear_probe_features(&train_f, &test_f, classes, device, config, on_epoch);
    }
    if config.labels_fraction.is_some() {
        return Err(Error::Input(
            "linear probe: a labels fraction is taken from cached features (augment = false)"
                .into(),
        ));
    }
    let scale = (config.crop_scale_min, 1.0);
    probe(
        encoder.spec().feature_dim(),
        classes,
        train.len(),
        &test_f,
        device,
        config,
        on_epoch,
        |epoch, fc, lr| {
            let (mut sum, mut steps) = (0.0, 0u64);
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
            Ok((sum, steps))
        },
    )
}

/// The probe on precomputed features (`train`, `test`: `[N, D]` with labels in `0..classes`),
/// the fc on `device`: each epoch a shuffled pass of full batches (drop-last) over the train
/// features, or over their few-shot subset.
///
/// # Errors
/// [`Error::Input`] for zero epochs, a bad labels fraction or features of different dimensions.
pub fn linear_probe_features(
    train: &Features,
    test: &Features,
    classes: usize,
    device: Device,
    config: &LinearConfig,
    on_epoch: &mut dyn FnMut(&LinearEpoch),
) -> Result<LinearReport> {
    check(config)?;
    if train.dim() != test.dim() {
        return Err(Error::Input(format!(
            "linear probe: train dim {} vs test dim {}",
            train.dim(),
            test.dim()
        )));
    }
    let subset;
    let train = match config.labels_fraction {
        Some(f) => {
            let labels = Vec::<i64>::try_from(&train.labels)?;
            let idx =
                Tensor::from_slice(&few_shot_subset(&labels, classes, f, config.subset_seed)?);
            subset = Features {
                values: train.values.index_select(0, &idx),
                labels: train.labels.index_select(0, &idx),
            };
            &subset
        }
        None => train,
    };
    let b = config.batch_size as i64;
    probe(
        train.dim(),
        classes,
        train.len() as usize,
        test,
        device,
        config,
        on_epoch,
        |epoch, fc, lr| {
            let order = KeyedRng::new(&[config.seed, epoch, STREAM_PROBE])
                .permutation(train.len() as usize);
            let order = Tensor::from_slice(&order);
            let n = train.len() / b * b;
            let (mut sum, mut steps) = (0.0, 0u64);
            for start in (0..n.max(1)).step_by(b as usize) {
                let idx = order.narrow(0, start, b.min(train.len() - start));
                let x = train.values.index_select(0, &idx).to_device(device);
                let y = train.labels.index_select(0, &idx).to_device(device);
                sum += fc.step(&x, &y, config, lr);
                steps += 1;
            }
            Ok((sum, steps))
        },
    )
}

/// The epochs of a probe: `epoch_fn(epoch, fc, lr)` trains one and returns (loss sum, steps).
#[allow(clippy::too_many_arguments)]
fn probe(
    dim: i64,
    classes: usize,
    num_train: usize,
    test: &Features,
    device: Device,
    config: &LinearConfig,
    on_epoch: &mut dyn FnMut(&LinearEpoch),
    mut epoch_fn: impl FnMut(u64, &mut Fc, f64) -> Result<(f64, u64)>,
) -> Result<LinearReport> {
    tch::manual_seed(config.seed as i64);
    let mut fc = Fc::new(dim, classes as i64, device);
    let mut epochs = Vec::with_capacity(config.epochs as usize);
    for epoch in 0..config.epochs {
        let lr = config.lr_at(epoch);
        let (sum, steps) = epoch_fn(epoch, &mut fc, lr)?;
        let (top1, top5) = fc.accuracy(test, device);
        let e = LinearEpoch { epoch, lr, loss: sum / steps.max(1) as f64, top1, top5 };
        on_epoch(&e);
        epochs.push(e);
    }
    let last = *epochs.last().expect("at least one epoch");
    let best = *epochs
        .iter()
        .max_by(|a, c| a.top1.total_cmp(&c.top1).then(c.epoch.cmp(&a.epoch)))
        .expect("at least one epoch");
    Ok(LinearReport { num_train, epochs, best, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_scales_moco_milestones() {
        let c = LinearConfig::moco(100);
        assert_eq!(c.lr_at(0), 30.0);
        assert_eq!(c.lr_at(59), 30.0);
        assert!((c.lr_at(60) - 3.0).abs() < 1e-12);
        assert!((c.lr_at(79) - 3.0).abs() < 1e-12);
        assert!((c.lr_at(80) - 0.3).abs() < 1e-12);
        let c = LinearConfig::moco(10);
        for (epoch, want) in [(5, 30.0), (6, 3.0), (7, 3.0), (8, 0.3), (9, 0.3)] {
            assert!((c.lr_at(epoch) - want).abs() < 1e-12, "epoch {epoch}: {}", c.lr_at(epoch));
        }
    }

    /// SimSiam's protocol: lr 0.1 x 4096 / 256 = 1.6, cosine to 0 over 90 epochs, LARS 0.001.
    #[test]
    fn simsiam_protocol_is_the_papers() {
        let c = LinearConfig::simsiam(90, 4096);
        assert_eq!((c.lr, c.lars, c.momentum, c.weight_decay), (1.6, Some(0.001), 0.9, 0.0));
        assert_eq!(c.lr_at(0), 1.6);
        assert!((c.lr_at(45) - 0.8).abs() < 1e-12);
        assert!(c.lr_at(89) < 0.001);
    }

    /// The fc's SGD is PyTorch's: after one step the weights match `w - lr g` and the momentum
    /// buffer holds `g` (gradient from autograd on a copy).
    #[test]
    fn sgd_matches_pytorch_update() {
        tch::manual_seed(1);
        let cfg = LinearConfig { momentum: 0.9, ..LinearConfig::default() };
        let mut fc = Fc::new(4, 3, Device::Cpu);
        let w0 = fc.w.detach().copy();
        let x = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
        let (g, _) = reference_grads(&w0, &Tensor::zeros([3], (Kind::Float, Device::Cpu)), &x, &y);
        let _ = fc.step(&x, &y, &cfg, 0.5);
        let diff = (&fc.w.detach() - (&w0 - &g * 0.5)).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "first step: {diff}");
        assert!(fc.bufs[0].as_ref().unwrap().allclose(&g, 1e-6, 1e-7, false));
    }

    /// Cross-entropy gradients of `(w, b)` by autograd on copies.
    fn reference_grads(w: &Tensor, b: &Tensor, x: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
        let (w, b) = (w.copy().set_requires_grad(true), b.copy().set_requires_grad(true));
        let loss = x.linear(&w, Some(&b)).cross_entropy_for_logits(y);
        let mut g = Tensor::run_backward(&[&loss], &[&w, &b], false, false);
        let gb = g.pop().unwrap();
        (g.pop().unwrap(), gb)
    }

    /// LARS against apex LARC's formula, computed here in f64 from the plain gradients: the
    /// weight's step is `lr * trust * |w| / (|g| + wd |w| + eps) * (g + wd w)`; the zero-initialised
    /// bias (`|b| = 0`) keeps its plain gradient on the first step; the second step adds momentum.
    #[test]
    fn lars_matches_the_larc_formula() {
        tch::manual_seed(2);
        let cfg = LinearConfig { weight_decay: 0.01, ..LinearConfig::simsiam(90, 256) };
        let (trust, lr) = (0.001, 0.7);
        let mut fc = Fc::new(5, 3, Device::Cpu);
        let x = Tensor::randn([16, 5], (Kind::Float, Device::Cpu)) * 10.0;
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
        let host =
            |t: &Tensor| Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        let (w0, b0) = (fc.w.detach().copy(), fc.b.detach().copy());
        let (gw, gb) = reference_grads(&w0, &b0, &x, &y);
        let (w, g) = (host(&w0), host(&gw));
        let wd = cfg.weight_decay;
        let scale = trust * norm(&w) / (norm(&g) + wd * norm(&w) + LARS_EPS);
        let step1: Vec<f64> = w.iter().zip(&g).map(|(w, g)| scale * (g + wd * w)).collect();
        let _ = fc.step(&x, &y, &cfg, lr);
        let want_w: Vec<f64> = w.iter().zip(&step1).map(|(w, s)| w - lr * s).collect();
        let got_w = host(&fc.w.detach());
        for (a, b) in got_w.iter().zip(&want_w) {
            assert!((a - b).abs() < 1e-6, "weight: {a} vs {b}");
        }
        let want_b: Vec<f64> = host(&gb).iter().map(|g| -lr * g).collect();
        for (a, b) in host(&fc.b.detach()).iter().zip(&want_b) {
            assert!((a - b).abs() < 1e-6, "bias, not rescaled on the first step: {a} vs {b}");
        }
        // Second step: buf = m * buf + scaled gradient at the new weights.
        let (w1, b1) = (fc.w.detach().copy(), fc.b.detach().copy());
        let (gw1, _) = reference_grads(&w1, &b1, &x, &y);
        let (w, g) = (host(&w1), host(&gw1));
        let scale = trust * norm(&w) / (norm(&g) + wd * norm(&w) + LARS_EPS);
        let want: Vec<f64> = w
            .iter()
            .zip(&g)
            .zip(&step1)
            .map(|((w, g), s1)| w - lr * (0.9 * s1 + scale * (g + wd * w)))
            .collect();
        let _ = fc.step(&x, &y, &cfg, lr);
        for (a, b) in host(&fc.w.detach()).iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "second step: {a} vs {b}");
        }
    }

    /// The few-shot subset: the same count of every class, a pure function of (labels, fraction,
    /// seed), another draw for another seed, nested-free but fixed across calls.
    #[test]
    fn few_shot_subset_is_balanced_and_fixed_per_seed() {
        let labels: Vec<i64> = (0..1000).map(|i| (i * 7 % 10) as i64).collect();
        let a = few_shot_subset(&labels, 10, 0.1, 3).unwrap();
        assert_eq!(a.len(), 100);
        for c in 0..10 {
            assert_eq!(a.iter().filter(|&&i| labels[i as usize] == c).count(), 10, "class {c}");
        }
        assert_eq!(a, few_shot_subset(&labels, 10, 0.1, 3).unwrap(), "fixed per seed");
        assert_ne!(a, few_shot_subset(&labels, 10, 0.1, 4).unwrap(), "another seed, another draw");
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(few_shot_subset(&labels, 10, 0.001, 0).unwrap().len(), 10, "at least one each");
        assert!(few_shot_subset(&labels, 10, 0.0, 0).is_err());
        assert!(few_shot_subset(&labels, 10, 1.5, 0).is_err());
    }
}
