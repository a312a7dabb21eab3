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
//!     .map(|v| spec.sample(info.width, info.height, &mut KeyedRng::new(&[seed, epoch, step, sample, v])))
//!     .collect();
//!
//! // 2-3. Decode once, at the cheapest scale and region that covers both crops.
//! let geometry: Vec<_> = views
//!     .iter()
//!     .map(|p| ViewGeometry { crop: p.crop, width: spec.width, height: spec.height })
//!     .collect();
//! let plan = DecodePlan::for_views(info.width, info.height, &geometry, &DecodePlanOptions::default())?;
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
//! `tests/main.rs` runs `tests/torchvision_ref.py` (torchvision 0.26) on real photos and compares:
//! the resize matches `resized_crop(..., antialias=True)` on uint8 tensors within 1 level, and the
//! float colour ops match torchvision's tensor ops to ~1e-6 (see the tests for the tolerances).
//! The one deliberate difference from the MoCo v2 reference: grayscale uses torchvision's tensor
//! weights [`GRAY_WEIGHTS`] (0.2989, 0.587, 0.114), not PIL's integer 0.299/0.587/0.114.
//!
//! # Decoders
//!
//! DECODER_TABLE

mod blur;
mod color;
mod crop;
mod decode_plan;
mod error;
mod geometry;
mod jpeg;
mod normalize;
mod params;
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
pub use crate::resize::Resizer;
pub use crate::rng::KeyedRng;
pub use crate::view::{SOLARIZE_THRESHOLD, ViewOutput, ViewScratch, apply_color_ops, render_view};
