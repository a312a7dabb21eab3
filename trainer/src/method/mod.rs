//! Pretraining methods, one file each, every RegionCL variant the region option of its base method:
//! MoCo v2 / RegionCL-M ([`MomentumContrast`]), DenseCL / RegionCL-D ([`DenseContrast`]), SimSiam /
//! RegionCL-S ([`SimSiam`]), MoBY / RegionCL+MoBY ([`Moby`]). The train loop and `regioncl bench
//! train` drive them through the [`Pretrainer`] trait, built by [`build_pretrainer`] from the
//! config's method.
//!
//! They share one step skeleton (`common.rs`): colour-augment both views on the device -> encoders
//! -> fp32 loss head -> backward -> optimiser -> method state (queues). The pieces that differ live in the
//! method's file; the shared ones are factored: the colour views, the region swap and mask pooling
//! of the query view, the contrastive region queries, the loss bookkeeping and the optimiser step
//! (`common.rs`); the momentum encoder with its EMA and shuffled key forward (`momentum.rs`).
//!
//! Operations across samples are kept in separate functions, which a multi-process run (the
//! runtime's [`crate::Dist`]) carries across ranks: BN ([`crate::BatchNorm2d`]: per-rank groups of
//! the global batch, or SyncBN), the shuffled key forward ([`MomentumEncoders::key_forward`]:
//! shuffle-BN across ranks) and the keys handed to the queues (every rank's, in rank order).

mod common;
mod densecl;
mod moby;
mod momentum;
mod regionclm;
mod simsiam;
#[cfg(test)]
pub(crate) use moby::tests as moby_tests;
#[cfg(test)]
pub(crate) mod tests;

pub use densecl::DenseContrast;
pub use moby::Moby;
pub use momentum::MomentumEncoders;
pub use regionclm::MomentumContrast;
pub use simsiam::SimSiam;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::{Config, Method};
use crate::error::Result;
use crate::input::StepInput;
use crate::model::Encoder;
use crate::optim::Optimizer;
use crate::runtime::Runtime;

/// The losses of one step, read back to the host. The terms are unweighted; `loss` is the weighted
/// sum that is optimised:
///
/// | method | `loss` |
/// |---|---|
/// | MoCo v2, RegionCL-M | `loss_inst + loss_region` |
/// | DenseCL, RegionCL-D | `(1 - lambda) loss_inst + lambda loss_dense + w_r loss_region` |
/// | SimSiam, RegionCL-S | `loss_inst + w_r loss_region` |
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLosses {
    /// The optimised total.
    pub loss: f64,
    /// The instance term: Eq. 1 (MoCo v2), DenseCL's global InfoNCE, or SimSiam's symmetric
    /// negative cosine (in [-1, 1]).
    pub loss_inst: f64,
    /// The region term: Eq. 2, or RegionCL-S's region positives (0 for the base methods).
    pub loss_region: f64,
    /// DenseCL's dense InfoNCE (0 for the other methods).
    #[serde(default)]
    pub loss_dense: f64,
}

impl StepLosses {
    /// Whether every value is finite.
    pub fn is_finite(&self) -> bool {
        [self.loss, self.loss_inst, self.loss_region, self.loss_dense].iter().all(|v| v.is_finite())
    }
}

/// The scheduled values of one step, from the train loop's schedules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scheduled {
    /// The learning rate.
    pub lr: f64,
    /// The fraction of the run done before this step, `step / total_steps` in `[0, 1)`: MoBY's
    /// momentum follows it.
    pub progress: f64,
}

impl Scheduled {
    /// The first step of a run at learning rate `lr`.
    pub fn at_lr(lr: f64) -> Self {
        Self { lr, progress: 0.0 }
    }
}

/// A pretraining method with its networks and state, as the train loop drives it.
pub trait Pretrainer: std::fmt::Debug {
    /// The method it implements.
    fn method(&self) -> Method;

    /// The runtime it was built for.
    fn runtime(&self) -> &Runtime;

    /// The online encoder (backbone `0.*` and head `1.*`): what the k-NN monitor encodes with and
    /// what [`crate::export_backbone`] exports.
    fn online_encoder(&self) -> &Encoder;

    /// The optimiser of `config.optim` over the trainable networks, grouped by checkpoint prefix.
    fn optimizer(&self, config: &Config) -> Optimizer;

    /// One full training step at the scheduled values `at`: views, losses, backward, the
    /// optimiser's update, the method's state (momentum encoder, queues). Reads the losses back (a
    /// device sync), after which the input's host memory is released.
    ///
    /// # Errors
    /// Bad input, or a libtorch failure.
    fn step(&mut self, input: StepInput, opt: &mut Optimizer, at: Scheduled) -> Result<StepLosses>;

    /// Every tensor of the model and its state under checkpoint names (OpenSelfSup-like:
    /// `encoder_q.*`, `encoder_k.*`, `queue`, `queue_ptr`, DenseCL's `queue2`; SimSiam's
    /// `encoder.*`, `predictor.*`), as contiguous CPU tensors.
    fn state_tensors(&self) -> Vec<(String, Tensor)>;

    /// Restores what [`Pretrainer::state_tensors`] saved.
    ///
    /// # Errors
    /// A missing tensor or one that does not fit.
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()>;
}

/// Builds the model of `config.method` on `rt` (initialised from the keyed stream of `config.seed`,
/// `init.rs`).
///
/// # Errors
/// A libtorch failure.
pub fn build_pretrainer(config: &Config, rt: Runtime) -> Result<Box<dyn Pretrainer>> {
    Ok(match config.method {
        Method::DenseCl | Method::RegionCld => Box::new(DenseContrast::new(config, rt)?),
        Method::SimSiam | Method::RegionCls => Box::new(SimSiam::new(config, rt)?),
        Method::Moby | Method::RegionClMoby => Box::new(Moby::new(config, rt)?),
        _ => Box::new(MomentumContrast::new(config, rt)?),
    })
}
