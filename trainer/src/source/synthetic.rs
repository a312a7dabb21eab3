//! Random pixels with the loader's per-step plans, for benchmarks and fast tests.

use std::sync::Arc;

use regioncl_loader::{LoaderBuilder, Planner};
use tch::{Kind, Tensor};

use crate::config::Config;
use crate::error::Result;
use crate::input::{BatchSource, StepInput};
use crate::rng::KeyedRng;
use crate::source::{RankShare, loader_builder, loader_err, swap_of};

/// A source of random images: the pixels of two view batches are drawn once (keyed by the seed;
/// pinned host memory when CUDA is present) and reused every step; the view parameters, box and
/// pairing of every step come from the loader's planner, over `batch * data.steps_per_epoch`
/// square records of the view size (one step per epoch when `steps_per_epoch` is 0), as for real
/// records.
#[derive(Debug)]
pub struct SyntheticSource {
    planner: Planner,
    views: Vec<Tensor>,
    step: u64,
}

impl SyntheticSource {
    /// Pixels for `config.optim.batch_size` samples of `config.data.image_size`.
    ///
    /// # Panics
    /// When the config is invalid for the planner (a swap that does not fit the views, a batch the
    /// pairing cannot split): [`Config::validate`] refuses those.
    pub fn new(config: &Config) -> Self {
        Self::for_rank(config, RankShare::WHOLE).expect("a validated config plans")
    }

    /// [`SyntheticSource::new`] for one rank of a multi-process run: its `share` of the global
    /// batch (the pixels and view parameters one process has at those positions).
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the world does not divide the batch or its BN groups.
    pub fn for_rank(config: &Config, share: RankShare) -> Result<Self> {
        let local = share.split(config)?.rank_batch;
        let (b, s) = (config.optim.batch_size, config.data.image_size);
        let steps = config.data.steps_per_epoch.max(1);
        let side = s as u32;
        let sizes = Arc::new(vec![(side, side); b as usize * steps as usize]);
        let planner = loader_builder(config, share, LoaderBuilder::plan_only(sizes))?
            .planner()
            .map_err(loader_err)?;
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
        Ok(Self { planner, views, step: 0 })
    }
}

impl BatchSource for SyntheticSource {
    fn steps_per_epoch(&self) -> u64 {
        self.planner.steps_per_epoch()
    }

    fn seek(&mut self, step: u64) -> Result<()> {
        self.step = step;
        Ok(())
    }

    fn next_batch(&mut self) -> Result<StepInput> {
        let step = self.step;
        self.step += 1;
        let spe = self.steps_per_epoch();
        let plan = self.planner.plan(step / spe, step % spe);
        let (swap, pairing) = swap_of(&plan)?;
        Ok(StepInput {
            epoch: plan.epoch,
            step,
            views: self.views.iter().map(Tensor::shallow_clone).collect(),
            params: plan.views,
            flipped: false,
            swap,
            pairing,
            substitutions: Vec::new(),
            hold: None,
        })
    }
}
