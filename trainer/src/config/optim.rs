//! The schema of how the networks are optimised: the update rule (SGD, AdamW), the batch size and
//! its learning-rate scaling rule, weight decay, and the schedule, as plain data with the defaults
//! of the official RegionCL-M recipe (docs/method.md 2.7; MoBY's in `docs/moby.md`).

use serde::{Deserialize, Serialize};

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

/// The update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OptimizerKind {
    /// SGD with momentum (`optim.momentum`), PyTorch's.
    Sgd,
    /// AdamW (Loshchilov & Hutter), PyTorch's, with `optim.betas` and `optim.eps`.
    AdamW,
}

/// How often the learning rate follows its schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LrUpdate {
    /// Once per epoch (the official MoCo, RegionCL-M, DenseCL, SimSiam).
    Epoch,
    /// Every step (timm's scheduler in the official MoBY).
    Step,
}

/// Optimiser and schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// `sgd` or `adamw`.
    pub optimizer: OptimizerKind,
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
    /// AdamW's `(beta1, beta2)`.
    pub betas: [f64; 2],
    /// AdamW's epsilon.
    pub eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Weight decay on every parameter, BN and biases included (the official MoCo); false skips
    /// norms, biases and position tables (timm, MoBY).
    pub decay_all: bool,
    /// Clip the global gradient norm to this value before each update (0 = off; MoBY: 5).
    pub clip_grad: f64,
    /// Epochs of the run: a linear warm-up over `warmup_epochs`, then the cosine from the peak LR
    /// to `min_lr` over the whole run (timm's `CosineLRScheduler`).
    pub epochs: u64,
    /// Epochs of linear warm-up from `warmup_lr` (0 = none).
    pub warmup_epochs: u64,
    /// Learning rate at the start of the warm-up, at `ref_batch` (scaled like `base_lr`).
    pub warmup_lr: f64,
    /// Learning rate at the end of the cosine, at `ref_batch` (scaled like `base_lr`).
    pub min_lr: f64,
    /// `epoch` (MoCo) or `step` (MoBY): how often the learning rate follows the schedule.
    pub lr_update: LrUpdate,
}

impl OptimConfig {
    /// The learning rate at epoch 0 after the scaling rule: `base_lr * batch_size / ref_batch`
    /// (linear; official RegionCL-M 0.15 at 1024, MoCo v2 0.03 at 256), or `base_lr`.
    pub fn peak_lr(&self) -> f64 {
        self.scaled(self.base_lr)
    }

    /// A learning rate given at `ref_batch` (`base_lr`, `warmup_lr`, `min_lr`), scaled to
    /// `batch_size` by the rule.
    pub fn scaled(&self, lr: f64) -> f64 {
        match self.lr_scaling {
            LrScaling::Linear => lr * self.batch_size as f64 / self.ref_batch as f64,
            LrScaling::None => lr,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::Sgd,
            batch_size: 1024,
            base_lr: 0.15,
            ref_batch: 1024,
            lr_scaling: LrScaling::Linear,
            momentum: 0.9,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 1e-4,
            decay_all: true,
            clip_grad: 0.0,
            epochs: 200,
            warmup_epochs: 0,
            warmup_lr: 0.0,
            min_lr: 0.0,
            lr_update: LrUpdate::Epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scaling rule at the official points (docs/method.md 2.7).
    #[test]
    fn peak_lr_scales_linearly() {
        let lr = |base, batch, ref_batch, lr_scaling| {
            OptimConfig {
                base_lr: base,
                batch_size: batch,
                ref_batch,
                lr_scaling,
                ..OptimConfig::default()
            }
            .peak_lr()
        };
        assert_eq!(lr(0.15, 1024, 1024, LrScaling::Linear), 0.15);
        assert_eq!(lr(0.15, 256, 1024, LrScaling::Linear), 0.0375);
        assert_eq!(lr(0.03, 128, 256, LrScaling::Linear), 0.015);
        assert_eq!(lr(0.03, 128, 256, LrScaling::None), 0.03);
    }
}
