//! What the trainer consumes per step, and the trait a batch source implements.
//!
//! The loader's pipeline delivers, per step, a plan (sample indices; per view and sample the
//! [`ViewParams`]; the swap box and pairing) and per view a contiguous u8 `[B, H, W, 3]` buffer
//! (NHWC, so already channels_last once permuted to `[B, 3, H, W]`). [`StepInput`] is that, as
//! tensors; the loader adapter wraps its buffers (ideally allocated with
//! [`crate::empty_pinned`]) and keeps the loader's batch alive in [`StepInput::hold`] until the
//! step has finished with the memory.

use std::any::Any;

use regioncl_augment::ViewParams;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::swap::Pairing;

/// One step's input.
pub struct StepInput {
    /// 0-based epoch the batch belongs to.
    pub epoch: u64,
    /// 0-based global step.
    pub step: u64,
    /// Per view (0 = query, 1 = key): u8 `[B, H, W, 3]`, on the host (pinned for asynchronous
    /// copies) or already on the device.
    pub views: Vec<Tensor>,
    /// Per view, per sample: the colour parameters (and the flip, see `flipped`).
    pub params: Vec<Vec<ViewParams>>,
    /// Whether the source already mirrored the pixels of samples with `flip` (the loader does, at
    /// the resize); if false the trainer flips on the device.
    pub flipped: bool,
    /// The swap box of this step (RegionCL only).
    pub swap: Option<regioncl_loader::SwapBox>,
    /// The pairing (RegionCL only).
    pub pairing: Option<Pairing>,
    /// Records of this batch that were bad (a failed checksum, a JPEG that does not decode) and
    /// the records that replaced them; the training reports each ([`crate::TrainEvent::Replaced`]).
    pub substitutions: Vec<regioncl_loader::Substitution>,
    /// Anything that must live until the step is done with the pixel memory (the loader's batch,
    /// whose drop returns its buffers to the ring). Dropped after the loss has been read, which
    /// synchronises the device with the host.
    pub hold: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for StepInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepInput")
            .field("epoch", &self.epoch)
            .field("step", &self.step)
            .field("views", &self.views.iter().map(Tensor::size).collect::<Vec<_>>())
            .field("flipped", &self.flipped)
            .field("swap", &self.swap)
            .finish_non_exhaustive()
    }
}

impl StepInput {
    /// Batch size.
    pub fn batch_size(&self) -> i64 {
        self.views.first().map_or(0, |v| v.size()[0])
    }

    /// Checks shapes and counts: at least two views of u8 `[B, H, W, 3]` with `B` parameter sets
    /// each.
    ///
    /// # Errors
    /// [`Error::Input`] describing the mismatch.
    pub fn validate(&self) -> Result<()> {
        if self.views.len() < 2 || self.params.len() != self.views.len() {
            return Err(Error::Input(format!(
                "{} views with {} parameter lists (need 2+ of each)",
                self.views.len(),
                self.params.len()
            )));
        }
        let b = self.batch_size();
        for (v, (t, p)) in self.views.iter().zip(&self.params).enumerate() {
            let s = t.size();
            if s.len() != 4 || s[0] != b || s[3] != 3 || t.kind() != tch::Kind::Uint8 {
                return Err(Error::Input(format!(
                    "view {v}: {s:?} {:?}, want u8 [{b}, H, W, 3]",
                    t.kind()
                )));
            }
            if p.len() as i64 != b {
                return Err(Error::Input(format!(
                    "view {v}: {} parameter sets for {b} samples",
                    p.len()
                )));
            }
        }
        if let Some(p) = &self.pairing
            && p.len() as i64 != b
        {
            return Err(Error::Input(format!("pairing of {} for batch {b}", p.len())));
        }
        Ok(())
    }
}

/// A source of training batches, in step order: the loader's pipeline through
/// [`crate::LoaderSource`] (photos or shards), or [`crate::SyntheticSource`]'s random pixels for
/// benchmarks.
pub trait BatchSource {
    /// Steps in one epoch.
    fn steps_per_epoch(&self) -> u64;

    /// Positions the source so that the next batch is the one of global step `step`
    /// (`epoch = step / steps_per_epoch`). Called once before the first batch, with 0 or with the
    /// resumed step.
    ///
    /// # Errors
    /// A source that cannot seek there.
    fn seek(&mut self, step: u64) -> Result<()>;

    /// The next batch; blocks until it is ready (that time is reported as data wait).
    ///
    /// # Errors
    /// A failure of the source (I/O, decode of a whole batch).
    fn next_batch(&mut self) -> Result<StepInput>;
}
