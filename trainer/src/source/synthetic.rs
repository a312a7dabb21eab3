//! Random pixels with real per-step plans, for benchmarks and fast tests.

use regioncl_augment::KeyedRng as AugRng;
use tch::{Kind, Tensor};

use crate::config::Config;
use crate::error::Result;
use crate::input::{BatchSource, StepInput};
use crate::rng::KeyedRng;
use crate::source::{RankShare, plan_swap, view_spec};

/// A source of random images: the pixels of two view batches are drawn once (keyed by the seed;
/// pinned host memory when CUDA is present) and reused every step; colour parameters, box and
/// pairing are drawn per step as a real plan would.
#[derive(Debug)]
pub struct SyntheticSource {
    config: Config,
    share: RankShare,
    views: Vec<Tensor>,
    step: u64,
}

impl SyntheticSource {
    /// Pixels for `config.optim.batch_size` samples of `config.data.image_size`.
    pub fn new(config: &Config) -> Self {
        Self::build(config, RankShare::WHOLE)
    }

    /// [`SyntheticSource::new`] for one rank of a multi-process run: its `share` of the global
    /// batch (the pixels and view parameters one process has at those positions).
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the world does not divide the batch or its BN groups.
    pub fn for_rank(config: &Config, share: RankShare) -> Result<Self> {
        share.split(config)?;
        Ok(Self::build(config, share))
    }

    fn build(config: &Config, share: RankShare) -> Self {
        let (b, s) = (config.optim.batch_size, config.data.image_size);
        let local = b / share.world.max(1) as i64;
        let views = (0..2u64)
            .map(|v| {
                let mut rng = KeyedRng::new(&[config.seed, v, 0x5359_4e54]);
                let bytes: Vec<u8> =
                    (0..b * s * s * 3).map(|_| (rng.next_u64() >> 56) as u8).collect();
                let t = Tensor::from_slice(&bytes).view([b, s, s, 3]).narrow(
                    0,
                    share.rank as i64 * local,
                    local,
                );
                match crate::shim::empty_pinned(&[local, s, s, 3], Kind::Uint8) {
                    Ok(mut pinned) => {
                        pinned.copy_(&t);
                        pinned
                    }
                    Err(_) => t.contiguous(),
                }
            })
            .collect();
        Self { config: config.clone(), share, views, step: 0 }
    }
}

impl BatchSource for SyntheticSource {
    fn steps_per_epoch(&self) -> u64 {
        self.config.data.steps_per_epoch.max(1)
    }

    fn seek(&mut self, step: u64) -> Result<()> {
        self.step = step;
        Ok(())
    }

    fn next_batch(&mut self) -> Result<StepInput> {
        let step = self.step;
        self.step += 1;
        let epoch = step / self.steps_per_epoch();
        let spec = view_spec(&self.config);
        let size = self.config.data.image_size as u32;
        let b = (self.config.optim.batch_size as usize / self.share.world.max(1)) as u64;
        let offset = self.share.rank as u64 * b;
        let params = (0..2u64)
            .map(|v| {
                (offset..offset + b)
                    .map(|i| {
                        spec.sample(
                            size,
                            size,
                            &mut AugRng::new(&[self.config.seed, epoch, step, i, v]),
                        )
                    })
                    .collect()
            })
            .collect();
        let (swap, pairing) = plan_swap(&self.config, step, self.share)?;
        Ok(StepInput {
            epoch,
            step,
            views: self.views.iter().map(Tensor::shallow_clone).collect(),
            params,
            flipped: false,
            swap,
            pairing,
            hold: None,
        })
    }
}
