//! Image operations for self-supervised pretraining: JPEG decode (libjpeg-turbo, with DCT scaling
//! and region decode), view parameters planned ahead, crop + antialiased resize, flips, and the CPU
//! versions of the MoCo v2 colour augmentations. No threads, no torch.
//!
//! The flow for one sample (the loader runs it in its worker threads):
//!
//! 1. [`ViewSpec::sample`] draws each view's [`ViewParams`] (RandomResizedCrop, flip, jitter, ...)
//!    from the image's width and height alone, with a [`KeyedRng`] keyed by `(seed, epoch, step,
//!    sample, view)`;
//! 2. [`DecodePlan`] picks the cheapest decode covering all views: a DCT scale and a region;
//! 3. [`decode_jpeg`] decodes that into a reusable [`RgbImage`];
//! 4. [`render_view`] crops, resizes and flips each view into its slot of a batch buffer, either as
//!    u8 HWC (colour left to the GPU) or as normalised f32 CHW after the CPU colour ops.
//!
//! ```
//! use regioncl_augment::{
//!     DecodeOptions, DecodePlan, DecodePlanOptions, KeyedRng, Normalize, RgbImage, ViewGeometry,
//!     ViewOutput, ViewScratch, ViewSpec, decode_jpeg, encode_jpeg, jpeg_info, render_view,
//! };
//!
//! # fn main() -> regioncl_augment::Result<()> {
//! // A JPEG to work on (a real loader reads it from a shard).
//! let (w, h) = (640u32, 480u32);
//! let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
//! let jpeg = encode_jpeg(&pixels, w, h, 3, 90)?;
//!
//! // 1. Plan two MoCo v2 views from the header alone.
//! let info = jpeg_info(&jpeg)?;
//! let spec = ViewSpec::mocov2(224);
//! spec.validate()?;
//! let (seed, epoch, step, sample) = (0, 0, 0, 0);
//! let views: Vec<_> = (0..2)
//!     .map(|v| {
//!         let mut rng = KeyedRng::new(&[seed, epoch, step, sample, v]);
//!         spec.sample(info.width, info.height, &mut rng)
//!     })
//!     .collect();
//!
//! // 2-3. Decode once, at the cheapest scale and region that covers both crops.
//! let geometry: Vec<_> = views
//!     .iter()
//!     .map(|p| ViewGeometry { crop: p.crop, width: spec.width, height: spec.height })
//!     .collect();
//! let options = DecodePlanOptions::default();
//! let plan = DecodePlan::for_views(info.width, info.height, &geometry, &options)?;
//! let mut decoded = RgbImage::new();
//! decode_jpeg(&jpeg, &plan.decode_options(&DecodeOptions::default()), &mut decoded)?;
//!
//! // 4. Render: view 0 as u8 for GPU colour ops, view 1 fully augmented on the CPU.
//! let mut scratch = ViewScratch::new();
//! let mut u8_view = vec![0u8; 224 * 224 * 3];
//! let out = ViewOutput::U8Hwc { pixels: &mut u8_view, width: 224, height: 224 };
//! render_view(&decoded, &plan.boxes()[0], &views[0], out, &mut scratch)?;
//! let mut f32_view = vec![0f32; 3 * 224 * 224];
//! let out = ViewOutput::F32Chw {
//!     pixels: &mut f32_view, width: 224, height: 224, normalize: Normalize::IMAGENET,
//! };
//! render_view(&decoded, &plan.boxes()[1], &views[1], out, &mut scratch)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Agreement with torchvision
//!
//! `tests/main.rs` runs `tests/torchvision_ref.py` (torchvision 0.26, Pillow 12) on real photos and
//! checks, with the tolerances stated there:
//!
//! - decode: identical to PIL's (0 difference) on the 17 flower variants (4:2:0, 4:2:2, 4:4:4,
//!   progressive, restart markers, RGB, gray, ...), ImageNet-like files and large photos;
//! - crop + resize: within 1 level of `resized_crop(..., antialias=True)` both on uint8 tensors
//!   (torchvision resizes those in float and rounds once; about one value in five is 1 off) and on
//!   PIL images (PIL keeps a u8 intermediate like we do, with other coefficient precision; about
//!   one in four is 1 off);
//! - colour ops on float images: brightness, saturation, hue, grayscale, solarize and normalize are
//!   bit-identical to torchvision's tensor ops (the same f32 operations in the same order);
//!   contrast is within 6e-8 (the image mean is summed in another order) and the Gaussian blur
//!   within 1e-6 (separable here, a 2-D kernel there); a whole sampled MoCo v2 view after
//!   normalisation is within 4e-6.
//!
//! The one deliberate difference from the MoCo v2 reference (which runs on PIL images): grayscale
//! and the contrast mean use torchvision's tensor weights [`GRAY_WEIGHTS`] (0.2989, 0.587, 0.114),
//! not PIL's integer 299/587/114. The trainer's GPU ops read the same [`ViewParams`] and should use
//! the same constants ([`GRAY_WEIGHTS`], [`IMAGENET_MEAN`], [`IMAGENET_STD`],
//! [`SOLARIZE_THRESHOLD`], [`gaussian_kernel`]) and skip jitter ops whose factor is exactly 1 (hue:
//! 0), as [`color_jitter`] does.
//!
//! # Decoders
//!
//! Single-thread images/s from `cargo run --release -p regioncl-augment --example decode_bench --
//! .cache/data/imagenet-like` (600 ImageNet-like files: q90, 4:2:0, mean 369x333 px, 27 KB; median
//! of 5 interleaved runs) on this project's 2-core x86_64 machine (AMD EPYC, shared with other jobs:
//! load ~5, so compare ratios, which come from the same run, rather than absolute rates).
//! libjpeg-turbo is Debian's 2.1.5 through `csrc/jpeg_shim.c`; every decode writes into a reused
//! buffer.
//!
//! | path (one core) | images/s | vs libjpeg-turbo full |
//! |---|---:|---:|
//! | image 0.25 (zune-jpeg), full decode | 1385 | 0.81 |
//! | libjpeg-turbo, full decode | 1708 | 1.00 |
//! | libjpeg-turbo, DCT scale 1/2 | 2202 | 1.29 |
//! | libjpeg-turbo, DCT scale 1/4 | 2251 | 1.32 |
//! | libjpeg-turbo, DCT scale 1/8 | 2714 | 1.59 |
//! | libjpeg-turbo, region of one RandomResizedCrop (scale 0.2-1) | 2067 | 1.21 |
//! | decode once + 2x224 crop/resize/flip, u8 (full decode) | 1017 | 0.60 |
//! | decode once + 2x224 crop/resize/flip, u8 (region) | 1050 | 0.61 |
//! | decode once + 2x224 crop/resize/flip, u8 (DCT scale + region: [`DecodePlan`]) | 1026 | 0.60 |
//! | decode once + 2x224 full MoCo v2 augmentation on the CPU, f32 | 541 | 0.32 |
//! | torchvision 0.26 + PIL, MoCo v2 two views (`benches/torchvision_mocov2.py`) | 77 | 0.05 |
//!
//! So libjpeg-turbo is kept (zune-jpeg is 0.81x); the loader's geometry-only work (decode once, two
//! 224 views) runs at 0.60x the pure decode rate, and the full MoCo v2 augmentation on the CPU at
//! 7.0x torchvision + PIL. Where the time goes in the geometry-only row: libjpeg ~50%, the resize
//! convolutions ~31%, fast_image_resize's per-call coefficient tables ~5%, the flip ~2%. These
//! files are small and smooth; on the same windows re-encoded at q95 4:4:4 (41 KB) decode weighs
//! more and the row reaches 0.73x (region decode pays off more without 4:2:0 upsampling context).
//! DCT scaling rarely applies to ImageNet-sized files (it needs crops at least twice the output).
//! On the multi-megapixel photos (`.cache/data/photos`, mean 2789x1868, 884 KB) it does: there the
//! geometry-only row with [`DecodePlan`] runs at 1.39x the full decode (1.05x without DCT scaling
//! and region), entropy decoding being most of what is left.

mod blur;
mod color;
mod crop;
mod decode_plan;
mod error;
mod geometry;
mod jpeg;
mod normalize;
mod params;
mod presets;
mod resize;
mod rng;
mod simd;
mod view;

pub use crate::blur::{BlurScratch, gaussian_blur, gaussian_kernel, gaussian_kernel_size};
pub use crate::color::{
    GRAY_WEIGHTS, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, color_jitter,
    mean_gray, rgb_to_grayscale, solarize,
};
pub use crate::crop::{RRC_ATTEMPTS, random_resized_crop};
pub use crate::decode_plan::{DecodePlan, DecodePlanOptions, ViewGeometry};
pub use crate::error::{Error, Result};
pub use crate::geometry::{CropBox, Rect, RgbImage};
pub use crate::jpeg::{
    DEFAULT_MAX_PIXELS, DecodeOptions, JpegColor, JpegInfo, Scale, decode_jpeg, encode_jpeg,
    jpeg_info,
};
pub use crate::normalize::{IMAGENET_MEAN, IMAGENET_STD, Normalize, hwc_to_chw_f32};
pub use crate::params::{
    ColorJitter, JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_HUE, JITTER_SATURATION, ViewParams,
    ViewSpec,
};
pub use crate::resize::{Interpolation, Resizer};
pub use crate::rng::KeyedRng;
pub use crate::view::{
    SOLARIZE_THRESHOLD, ViewOutput, ViewScratch, apply_color_ops, render_view, render_window,
};
