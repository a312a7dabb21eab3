//! Pretraining methods. One step skeleton: GPU colour augment -> encoders -> losses -> backward ->
//! SGD -> queue. RegionCL-M adds the swap and mask pooling; MoCo v2 is the same code with the region
//! branch off.

mod regionclm;

pub use regionclm::{MomentumContrast, StepLosses};
