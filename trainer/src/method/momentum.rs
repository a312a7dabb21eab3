//! The query encoder and its momentum (key) encoder, shared by MoCo v2 / RegionCL-M and DenseCL /
//! RegionCL-D (docs/method.md 2.3, 2.5): construction (the key encoder an exact, frozen copy), the
//! EMA over trainable parameters, and the key forward with shuffle-BN.
//!
//! [`MomentumEncoders::key_forward`] is the one place where keys cross samples before the loss:
//! on one device it permutes the key batch with a keyed permutation and restores the order after
//! the forward; in a multi-process run it is the DDP shuffle across ranks
//! ([`crate::Dist::shuffled_forward`]: gather, permute, forward this rank's slice, gather,
//! unshuffle), and it returns the keys of every rank, for the queues.

use std::collections::HashMap;

use tch::Tensor;

use crate::config::Config;
use crate::dist::Dist;
use crate::ema;
use crate::error::Result;
use crate::model::{BackboneSpec, Encoder, HeadSpec};
use crate::optim::Optimizer;
use crate::rng::KeyedRng;
use crate::runtime::Runtime;

/// Key of the shuffle-BN permutation stream.
const SHUFFLE_STREAM: u64 = 0x5348_5546;

/// The query encoder (f_q, g_q) and the key encoder (f_k, g_k).
#[derive(Debug)]
pub struct MomentumEncoders {
    /// Query encoder; trained by SGD.
    pub encoder_q: Encoder,
    /// Key encoder, an EMA copy; never receives gradients.
    pub encoder_k: Encoder,
    momentum: f64,
    shuffle_keys: bool,
    seed: u64,
    dist: Dist,
}

impl MomentumEncoders {
    /// Builds both encoders with the head of `config`'s method. Initialisation draws as
    /// the caller's `init::seeded` scope says; the key encoder is then an exact copy.
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn new(config: &Config, rt: &Runtime) -> Result<Self> {
        let (spec, head) = (BackboneSpec::of(config), HeadSpec::for_config(config));
        let encoder_q = Encoder::with_head(spec, head, rt.device, rt.channels_last)?;
        // The key encoder never drops paths (MoBY's target drop-path rate is 0).
        let spec_k = spec.with_drop_path(0.0);
        let mut encoder_k = Encoder::with_head(spec_k, head, rt.device, rt.channels_last)?;
        encoder_k.store().copy_from(encoder_q.store())?;
        encoder_k.store_mut().freeze();
        Ok(Self {
            encoder_q,
            encoder_k,
            momentum: config.moco.momentum,
            shuffle_keys: config.moco.shuffle_keys,
            seed: config.seed,
            dist: rt.dist(),
        })
    }

    /// `theta_k = m theta_k + (1 - m) theta_q` over trainable parameters (no grad), with the
    /// configured momentum `m`.
    ///
    /// # Errors
    /// If the encoders differ (a construction bug).
    pub fn momentum_update(&self) -> Result<()> {
        self.momentum_update_with(self.momentum)
    }

    /// [`MomentumEncoders::momentum_update`] with momentum `m` (MoBY's schedule).
    ///
    /// # Errors
    /// As [`MomentumEncoders::momentum_update`].
    pub fn momentum_update_with(&self, m: f64) -> Result<()> {
        tch::no_grad(|| ema::momentum_update(self.encoder_k.store(), self.encoder_q.store(), m))
    }

    /// The configured momentum (MoBY: its value at step 0).
    pub fn momentum(&self) -> f64 {
        self.momentum
    }

    /// This rank's index in the world.
    pub fn rank(&self) -> usize {
        self.dist.rank()
    }

    /// Runs `forward(encoder_k, im_k)` without gradient on the key batch shuffled by a permutation
    /// keyed by `(seed, step)`, and un-shuffles every output along dim 0 (shuffle-BN). In a
    /// multi-process run the permutation is of the global batch and spreads it over the ranks
    /// ([`Dist::shuffled_forward`]); without `moco.shuffle_keys` each rank forwards its own batch
    /// and the outputs are gathered.
    ///
    /// Every output comes back for the **global** batch, rank `r`'s samples at rows
    /// `[r B, (r + 1) B)` (see [`MomentumEncoders::local`]); for one process that is its batch.
    ///
    /// # Shapes
    /// `im_k: [B, 3, H, W]` (this rank's share); each output `[world * B, ...]`.
    ///
    /// # Errors
    /// A failed collective ([`crate::Error::Dist`]).
    pub fn key_forward(
        &self,
        im_k: &Tensor,
        step: u64,
        forward: impl FnOnce(&Encoder, &Tensor) -> Vec<Tensor>,
    ) -> Result<Vec<Tensor>> {
        tch::no_grad(|| {
            let dist = &self.dist;
            if !self.shuffle_keys {
                let outs = forward(&self.encoder_k, im_k);
                return outs.iter().map(|t| dist.all_gather(t)).collect();
            }
            if dist.is_distributed() {
                let total = im_k.size()[0] as usize * dist.world();
                let perm = Dist::shared_permutation(total, self.seed, step, SHUFFLE_STREAM);
                return dist.shuffled_forward(im_k, &perm, |x| forward(&self.encoder_k, x));
            }
            let b = im_k.size()[0];
            let perm = KeyedRng::new(&[self.seed, step, SHUFFLE_STREAM]).permutation(b as usize);
            let idx = crate::shim::upload(&Tensor::from_slice(&perm), im_k.device());
            let inv = idx.argsort(0, false);
            let outs = forward(&self.encoder_k, &im_k.index_select(0, &idx));
            Ok(outs.iter().map(|t| t.index_select(0, &inv)).collect())
        })
    }

    /// This rank's rows of a global-batch output of [`MomentumEncoders::key_forward`].
    ///
    /// # Shapes
    /// `all: [world * B, ...]` -> `[B, ...]` (a view).
    pub fn local(&self, all: &Tensor) -> Tensor {
        let world = self.dist.world() as i64;
        if world == 1 {
            return all.shallow_clone();
        }
        let b = all.size()[0] / world;
        all.narrow(0, self.dist.rank() as i64 * b, b)
    }

    /// The number of processes whose keys each step enqueues.
    pub fn world(&self) -> i64 {
        self.dist.world() as i64
    }

    /// The optimiser of `config.optim` over the query encoder (names `encoder_q.*`).
    pub fn optimizer(&self, config: &Config) -> Optimizer {
        let (o, mut opt) = (&config.optim, Optimizer::for_config(config));
        opt.add_store(self.encoder_q.store(), "encoder_q.", o.weight_decay, o.decay_all);
        opt
    }

    /// `encoder_q.*` and `encoder_k.*` tensors for a checkpoint.
    pub fn export(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.encoder_q.store().export("encoder_q.");
        tensors.extend(self.encoder_k.store().export("encoder_k."));
        tensors
    }

    /// Restores both encoders from checkpoint tensors.
    ///
    /// # Errors
    /// A missing tensor or a shape mismatch.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.encoder_q.store().load(tensors, "encoder_q.")?;
        self.encoder_k.store().load(tensors, "encoder_k.")
    }
}
