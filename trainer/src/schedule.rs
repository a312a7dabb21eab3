//! The cosine schedule (docs/method.md 2.7): `lr_e = lr * 1/2 (1 + cos(pi e / E))`, `e = 0..E-1`,
//! set once per epoch for the ResNet methods, from the peak `lr` of
//! [`crate::OptimConfig::peak_lr`]; MoBY's (timm's `CosineLRScheduler`, `docs/moby.md`) adds a
//! linear warm-up and a floor and is evaluated at every step ([`LrSchedule`]).

use std::f64::consts::PI;

use crate::config::{Config, LrUpdate};

/// The cosine-annealed learning rate at 0-based `t` of `total` (epochs, or steps).
pub fn cosine_lr(lr: f64, t: u64, total: u64) -> f64 {
    lr * 0.5 * (1.0 + (PI * t as f64 / total as f64).cos())
}

/// A learning-rate schedule: a linear warm-up from `warmup_lr` to `peak` over the first
/// `warmup_epochs`, then the cosine from `peak` down to `min_lr` over the whole run, its clock
/// starting at 0 (timm's `CosineLRScheduler` without `warmup_prefix`, as the official MoBY). With
/// `steps_per_epoch` the clock is the step (a new value every step), without it the epoch. No
/// warm-up and a zero floor give [`cosine_lr`] exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The peak (scaled) learning rate.
    pub peak: f64,
    /// Where the warm-up starts.
    pub warmup_lr: f64,
    /// Where the cosine ends.
    pub min_lr: f64,
    /// Epochs of warm-up.
    pub warmup_epochs: u64,
    /// Epochs of the run.
    pub epochs: u64,
    /// Steps per epoch when the rate changes every step; `None`: once per epoch.
    pub steps_per_epoch: Option<u64>,
}

impl LrSchedule {
    /// The schedule of `config` (`optim.*`, every rate scaled by the batch-size rule) for a run of
    /// `steps_per_epoch` steps per epoch.
    pub fn of(config: &Config, steps_per_epoch: u64) -> Self {
        let o = &config.optim;
        Self {
            peak: o.peak_lr(),
            warmup_lr: o.scaled(o.warmup_lr),
            min_lr: o.scaled(o.min_lr),
            warmup_epochs: o.warmup_epochs,
            epochs: o.epochs,
            steps_per_epoch: match o.lr_update {
                LrUpdate::Epoch => None,
                LrUpdate::Step => Some(steps_per_epoch.max(1)),
            },
        }
    }

    /// The learning rate of global `step` (0-based), in epoch `epoch`.
    pub fn at(&self, step: u64, epoch: u64) -> f64 {
        let (t, warmup, total) = match self.steps_per_epoch {
            Some(spe) => (step, self.warmup_epochs * spe, self.epochs * spe),
            None => (epoch, self.warmup_epochs, self.epochs),
        };
        if t < warmup {
            return self.warmup_lr + (self.peak - self.warmup_lr) * t as f64 / warmup as f64;
        }
        self.min_lr + cosine_lr(self.peak - self.min_lr, t, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MoBY's Swin-T recipe (batch 512: lr 1e-3, warm-up 5 of 100 epochs from 5e-7, floor
    /// 5e-6), against timm's `CosineLRScheduler` formulas; the per-epoch form is `cosine_lr`.
    #[test]
    fn warmup_cosine_per_step() {
        let spe = 2502; // ImageNet-1k / 512
        let s = LrSchedule {
            peak: 1e-3,
            warmup_lr: 5e-7,
            min_lr: 5e-6,
            warmup_epochs: 5,
            epochs: 100,
            steps_per_epoch: Some(spe),
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 + 1e-12 * b.abs();
        assert_eq!(s.at(0, 0), 5e-7);
        assert!(close(s.at(1, 0), 5e-7 + (1e-3 - 5e-7) / (5.0 * 2502.0)));
        let t = 5 * spe; // the first step after the warm-up: the cosine's clock did not restart,
        // so the rate steps down from the end of the warm-up (timm's, the official MoBY's).
        let cos = |t: u64| 5e-6 + 0.5 * (1e-3 - 5e-6) * (1.0 + (PI * t as f64 / 250_200.0).cos());
        assert!(close(s.at(t, 5), cos(t)));
        assert!(close(s.at(100 * spe - 1, 99), cos(100 * spe - 1)));
        assert!(s.at(t, 5) < s.at(t - 1, 4) && s.at(t - 1, 4) < 1e-3);
        let per_epoch = LrSchedule {
            warmup_lr: 0.0,
            min_lr: 0.0,
            warmup_epochs: 0,
            steps_per_epoch: None,
            ..s
        };
        for e in [0, 10, 99] {
            assert_eq!(per_epoch.at(e * spe + 7, e), cosine_lr(1e-3, e, 100));
        }
    }

    /// docs/method.md 11.3 #11 (and the official log: 1.491e-1, 7.5e-2, 9.25e-6).
    #[test]
    fn official_values() {
        let close = |a: f64, b: f64, rel: f64| (a - b).abs() <= rel * b.abs();
        assert_eq!(cosine_lr(0.15, 0, 200), 0.15);
        assert!(close(cosine_lr(0.15, 10, 200), 0.149077, 5e-6));
        assert!(close(cosine_lr(0.15, 100, 200), 0.075, 1e-12));
        assert!(close(cosine_lr(0.15, 199, 200), 9.2526e-6, 1e-4));
        assert!(close(cosine_lr(0.03, 199, 200), 1.85e-6, 1e-3));
    }

    /// docs/method.md 11.3 #13: iterations per epoch on ImageNet-1k with drop_last.
    #[test]
    fn iterations_per_epoch() {
        assert_eq!(1_281_167 / 1024, 1251);
        assert_eq!(1_281_167 / 256, 5004);
    }
}
