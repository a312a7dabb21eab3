//! The trainer's batch sources, all planned by the loader's [`LoaderBuilder`] from the config (one
//! key scheme: the same image and seed give the same views everywhere): [`LoaderSource`] reads a
//! photo folder or a shard dataset through the loader's pipeline, [`SyntheticSource`] pairs the
//! same plans with random pixels, for benchmarks and fast tests.

mod loader;
mod pinned;
mod synthetic;

pub use loader::LoaderSource;
pub use pinned::PinnedAllocator;
pub use synthetic::SyntheticSource;

use regioncl_augment::ViewSpec;
use regioncl_loader::{BatchPlan, LoaderBuilder, Recipe, SwapBox, SwapConfig, SwapPlanConfig};

use crate::config::{BatchSplit, Config};
use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::swap::Pairing;

/// The view recipes of the config: both views alike, or, with `augment.asymmetric`, the blur and
/// solarize probabilities of the loader's [`Recipe::byol`] per view (1.0 / 0.1 and 0 / 0.2, the
/// official MoBY's), the rest of the config's recipe kept.
pub(crate) fn view_specs(config: &Config) -> Vec<ViewSpec> {
    let spec = view_spec(config);
    if !config.augment.asymmetric {
        return vec![spec; 2];
    }
    Recipe::byol(spec.width)
        .views
        .iter()
        .map(|b| ViewSpec { blur_p: b.blur_p, solarize_p: b.solarize_p, ..spec })
        .collect()
}

/// The config's view recipe, `augment.asymmetric` aside.
fn view_spec(config: &Config) -> ViewSpec {
    let a = &config.augment;
    let size = config.data.image_size as u32;
    ViewSpec {
        width: size,
        height: size,
        scale: (a.crop_scale_min as f32, 1.0),
        blur_sigma: (a.blur_sigma_min as f32, a.blur_sigma_max as f32),
        flip_p: a.flip_p as f32,
        jitter_p: a.jitter_p as f32,
        brightness: a.brightness as f32,
        contrast: a.contrast as f32,
        saturation: a.saturation as f32,
        hue: a.hue as f32,
        grayscale_p: a.grayscale_p as f32,
        blur_p: a.blur_p as f32,
        solarize_p: a.solarize_p as f32,
        ..ViewSpec::mocov2(size)
    }
}

/// The loader's errors keep their cause in the trainer's.
pub(crate) fn loader_err(e: regioncl_loader::Error) -> Error {
    Error::Loader(e)
}

/// `builder` set up as `config` says, for `share`: the two [`view_specs`] with colour left to the
/// trainer, the global batch and seed, the swap box and pairing of the RegionCL methods, epochs
/// cut to `data.steps_per_epoch` when it is set, `data.loader_threads` workers.
///
/// # Errors
/// [`Error::Loader`] for a config the planner refuses.
pub(crate) fn loader_builder(
    config: &Config,
    share: RankShare,
    builder: LoaderBuilder,
) -> Result<LoaderBuilder> {
    let views = view_specs(config);
    let spec = views[0];
    let swap = if config.region_terms().any() {
        let r = &config.region;
        let swap = SwapConfig {
            stride: config.model.stride() as u32,
            min_cells: r.c_lower as u32,
            max_cells: r.c_upper as u32,
            sampler: r.sampler,
            view_width: spec.width,
            view_height: spec.height,
        };
        // The trainer's rule: a rank's BN groups, each reversed for the pairing (with SyncBN over
        // several ranks, one group per rank: the pairing stays inside each rank).
        let bn_groups = share.split(config)?.groups as usize * share.world;
        Some(SwapPlanConfig { swap, bn_groups })
    } else {
        None
    };
    let max_steps = match config.data.steps_per_epoch {
        0 => None,
        n => Some(n),
    };
    let builder = builder
        .recipe(Recipe { views, ..Recipe::mocov2(spec.width) })
        .batch_size(config.optim.batch_size as usize)
        .seed(config.seed)
        .world(share.rank, share.world)
        .region_swap(swap)
        .max_steps_per_epoch(max_steps)
        .threads(config.data.loader_threads as usize);
    builder.planner().map_err(loader_err)?;
    Ok(builder)
}

/// The swap box and the pairing (as a checked permutation) of a loader plan (`None` for the base methods).
///
/// # Errors
/// [`Error::Input`] for a pairing that is not a permutation (the loader never plans one).
pub(crate) fn swap_of(plan: &BatchPlan) -> Result<(Option<SwapBox>, Option<Pairing>)> {
    let pairing = match plan.pairing.is_empty() {
        true => None,
        false => Some(Pairing::new(plan.pairing.iter().map(|&j| i64::from(j)).collect())?),
    };
    Ok((plan.swap, pairing))
}

/// Which part of every global batch a process reads: rank `rank` of a world of `world`.
///
/// `optim.batch_size` is the global batch; each step, rank `r` takes the `r`-th contiguous
/// `batch_size / world` samples of it, so the ranks' samples are disjoint and together the batch
/// a single process would read, whatever the source (the loader's elastic order).
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
