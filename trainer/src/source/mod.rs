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

use crate::config::Config;
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

/// The swap box and pairing of global `step` (None for MoCo v2).
pub(crate) fn plan_swap(config: &Config, step: u64) -> Result<(Option<SwapBox>, Option<Pairing>)> {
    if !config.region_terms().any() {
        return Ok((None, None));
    }
    let size = config.data.image_size;
    let stride = config.resnet_spec().stride();
    let mut rng = KeyedRng::new(&[config.seed, step, SWAP_STREAM]);
    let r = &config.region;
    let swap = r.sampler.sample(&mut rng, size, size, stride, r.c_lower, r.c_upper);
    let pairing = Pairing::reversed_within(config.optim.batch_size, config.bn_groups())?;
    Ok((Some(swap), Some(pairing)))
}
