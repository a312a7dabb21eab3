//! The trainer's own batch sources: random pixels for benchmarks, and a small single-threaded
//! image-folder source for tests and for `regioncl train` until the loader pipeline is wired in.
//! [`ShardSource`] adapts the loader's multithreaded pipeline over shards.
//! The trainer's own sources plan exactly what the loader plans (views from [`regioncl_augment::ViewSpec`], one swap
//! box per step, pairing reversed inside each BN group), keyed by `(seed, epoch, step, ...)`.

mod photos;
mod shards;
mod synthetic;

pub use photos::{PhotoSource, data_root};
pub use shards::{PinnedAllocator, ShardSource};
pub use synthetic::SyntheticSource;

use regioncl_augment::ViewSpec;

use crate::config::{BatchSplit, Config};
use crate::dist::Dist;
use crate::error::Result;
use crate::rng::KeyedRng;
use crate::swap::{Pairing, SwapBox};

/// Key of the swap-box stream.
const SWAP_STREAM: u64 = 0x5357_4150;

/// The view recipe of the config (both views alike).
pub(crate) fn view_spec(config: &Config) -> ViewSpec {
    let a = &config.augment;
    let size = config.data.image_size as u32;
    ViewSpec {
        width: size,
        height: size,
        scale: (a.crop_scale_min as f32, 1.0),
        ratio: (3.0 / 4.0, 4.0 / 3.0),
        flip_p: a.flip_p as f32,
        jitter_p: a.jitter_p as f32,
        brightness: a.brightness as f32,
        contrast: a.contrast as f32,
        saturation: a.saturation as f32,
        hue: a.hue as f32,
        grayscale_p: a.grayscale_p as f32,
        blur_p: a.blur_p as f32,
        blur_sigma: (a.blur_sigma_min as f32, a.blur_sigma_max as f32),
        solarize_p: a.solarize_p as f32,
    }
}

/// Which part of every global batch a process reads: rank `rank` of a world of `world`.
///
/// `optim.batch_size` is the global batch; each step, rank `r` takes the `r`-th contiguous
/// `batch_size / world` samples of it, so the ranks' samples are disjoint and together the batch
/// a single process would read (the photo and synthetic sources), or the `r`-th block of every
/// epoch's order (the shard loader's [`regioncl_loader::Order`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankShare {
    /// This process's rank.
    pub rank: usize,
    /// The number of processes.
    pub world: usize,
}

impl RankShare {
    /// The whole batch: one process.
    pub const WHOLE: Self = Self { rank: 0, world: 1 };

    /// This process's share in `dist`.
    pub fn of(dist: &Dist) -> Self {
        Self { rank: dist.rank(), world: dist.world() }
    }

    /// The share's batch and BN groups under `config` ([`Config::batch_split`]).
    ///
    /// # Errors
    /// [`crate::Error::Config`]: a rank outside the world, or a batch or BN groups that the world
    /// does not divide.
    pub(crate) fn split(&self, config: &Config) -> Result<BatchSplit> {
        config.batch_split(self.rank, self.world)
    }
}

/// The swap box of global `step` (the same on every rank) and the pairing of this rank's share,
/// reversed inside each of its BN groups (None for the base methods).
pub(crate) fn plan_swap(
    config: &Config,
    step: u64,
    share: RankShare,
) -> Result<(Option<SwapBox>, Option<Pairing>)> {
    if !config.region_terms().any() {
        return Ok((None, None));
    }
    let size = config.data.image_size;
    let stride = config.model.stem.stride();
    let mut rng = KeyedRng::new(&[config.seed, step, SWAP_STREAM]);
    let r = &config.region;
    let swap = r.sampler.sample(&mut rng, size, size, stride, r.c_lower, r.c_upper);
    let split = share.split(config)?;
    let pairing = Pairing::reversed_within(split.rank_batch, split.groups)?;
    Ok((Some(swap), Some(pairing)))
}
