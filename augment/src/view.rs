//! One view, from decoded pixels to its slot in a batch buffer.

use crate::blur::{BlurScratch, gaussian_blur};
use crate::color::{color_jitter, rgb_to_grayscale, solarize};
use crate::error::{Error, Result};
use crate::geometry::{CropBox, RgbImage};
use crate::normalize::{Normalize, hwc_to_chw_f32};
use crate::params::ViewParams;
use crate::resize::Resizer;

/// The threshold of Solarize on `[0, 1]` values.
pub const SOLARIZE_THRESHOLD: f32 = 0.5;

/// Where and how [`render_view`] writes a view.
#[derive(Debug)]
#[non_exhaustive]
pub enum ViewOutput<'a> {
    /// Packed RGB u8 `[height, width, 3]`: crop, resize and flip only. The colour fields of the
    /// [`ViewParams`] are left to the consumer (the trainer applies them on the GPU).
    U8Hwc {
        /// `height * width * 3` bytes.
        pixels: &'a mut [u8],
        /// View width.
        width: u32,
        /// View height.
        height: u32,
    },
    /// Planar float `[3, height, width]`: the full CPU augmentation (crop, resize, flip, jitter,
    /// grayscale, blur, solarize), then `normalize`.
    F32Chw {
        /// `3 * height * width` floats.
        pixels: &'a mut [f32],
        /// View width.
        width: u32,
        /// View height.
        height: u32,
        /// Applied last ([`Normalize::IMAGENET`] for the MoCo v2 recipe).
        normalize: Normalize,
    },
}

/// Reusable buffers for [`render_view`]: one per worker thread. After the first few views no call
/// allocates (fast_image_resize's small coefficient tables aside).
#[derive(Debug, Default)]
pub struct ViewScratch {
    resizer: Resizer,
    rgb: Vec<u8>,
    blur: BlurScratch,
}

impl ViewScratch {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Renders one view: crops `crop` (in `src`'s coordinates, e.g. a box of a
/// [`DecodePlan`](crate::DecodePlan)) out of the decoded `src`, resizes it with antialiasing to the
/// output size with `params.interpolation`, mirrors it when `params.flip`, and for
/// [`ViewOutput::F32Chw`] applies the colour operations of `params` on the CPU and normalises.
/// `params.crop` is not read: `crop` is where that crop landed in the decoded pixels. The crop is
/// a hard border, as in torchvision's `RandomResizedCrop` ([`Resizer::resize_crop`]).
///
/// The op order is the MoCo v2 pipeline's: crop, jitter, grayscale, blur, solarize, flip,
/// normalize. The flip is applied at the resize instead; every later op commutes with it.
///
/// # Errors
/// [`Error::InvalidArgument`] when the crop is not inside `src`, the output size is 0, or the output
/// slice does not have the size of the view.
///
/// # Panics
/// For [`ViewOutput::F32Chw`], when `params` holds a hue shift outside `[-0.5, 0.5]` or a blur
/// sigma that is not positive (never for parameters drawn from a valid [`ViewSpec`](crate::ViewSpec)).
pub fn render_view(
    src: &RgbImage,
    crop: &CropBox,
    params: &ViewParams,
    out: ViewOutput<'_>,
    scratch: &mut ViewScratch,
) -> Result<()> {
    render(src, crop, false, params, out, scratch)
}

/// As [`render_view`], but `window` is a window of the whole of `src` resized, and the filter reads
/// the pixels around it ([`Resizer::resize_window`]): torchvision's `Resize` + `CenterCrop`, exact
/// on the window. `src` must hold the filter's reach around the window or end where the image ends.
///
/// # Errors
/// As [`render_view`].
///
/// # Panics
/// As [`render_view`].
pub fn render_window(
    src: &RgbImage,
    window: &CropBox,
    params: &ViewParams,
    out: ViewOutput<'_>,
    scratch: &mut ViewScratch,
) -> Result<()> {
    render(src, window, true, params, out, scratch)
}

fn render(
    src: &RgbImage,
    crop: &CropBox,
    open: bool,
    params: &ViewParams,
    out: ViewOutput<'_>,
    scratch: &mut ViewScratch,
) -> Result<()> {
    let resize = |r: &mut Resizer, dst: &mut [u8], w: u32, h: u32| {
        let (filter, flip) = (params.interpolation, params.flip);
        if open {
            r.resize_window(src, crop, dst, w, h, filter, flip)
        } else {
            r.resize_crop(src, crop, dst, w, h, filter, flip)
        }
    };
    match out {
        ViewOutput::U8Hwc { pixels, width, height } => {
            resize(&mut scratch.resizer, pixels, width, height)
        }
        ViewOutput::F32Chw { pixels, width, height, normalize } => {
            let n = width as usize * height as usize * 3;
            if pixels.len() != n {
                return Err(Error::InvalidArgument(format!(
                    "render view: output of {} floats for a 3x{height}x{width} view",
                    pixels.len()
                )));
            }
            scratch.rgb.resize(n, 0);
            resize(&mut scratch.resizer, &mut scratch.rgb, width, height)?;
            hwc_to_chw_f32(&scratch.rgb, pixels);
            apply_color_ops(pixels, width, height, params, &mut scratch.blur);
            normalize.apply(pixels);
            Ok(())
        }
    }
}

/// The colour part of the pipeline on a `[3, height, width]` float image in `[0, 1]`: jitter (in
/// its order), grayscale, Gaussian blur, solarize, each when `params` says so. No normalisation.
///
/// # Panics
/// If `chw.len() != 3 * width * height`, a blur sigma is not positive, or a hue shift is outside
/// `[-0.5, 0.5]`.
pub fn apply_color_ops(
    chw: &mut [f32],
    width: u32,
    height: u32,
    params: &ViewParams,
    blur: &mut BlurScratch,
) {
    assert_eq!(chw.len(), 3 * width as usize * height as usize, "apply_color_ops: buffer size");
    if let Some(j) = &params.jitter {
        color_jitter(chw, j);
    }
    if params.grayscale {
        rgb_to_grayscale(chw);
    }
    if let Some(sigma) = params.blur_sigma {
        gaussian_blur(chw, width, height, sigma, blur);
    }
    if params.solarize {
        solarize(chw, SOLARIZE_THRESHOLD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rect;
    use crate::params::ColorJitter;

    fn image() -> RgbImage {
        let (w, h) = (60u32, 45u32);
        let data = (0..w * h)
            .flat_map(|i| [(i % w * 4) as u8, (i / w * 5) as u8, ((i * 7) % 256) as u8])
            .collect();
        RgbImage::from_vec(w, h, data)
    }

    #[test]
    fn u8_and_f32_outputs_agree_without_colour_ops() {
        let src = image();
        let crop = CropBox::from(Rect::new(5, 3, 40, 30));
        let params = ViewParams { flip: true, ..ViewParams::crop_only(Rect::new(5, 3, 40, 30)) };
        let mut s = ViewScratch::new();
        let mut u8s = vec![0u8; 16 * 12 * 3];
        let out = ViewOutput::U8Hwc { pixels: &mut u8s, width: 16, height: 12 };
        render_view(&src, &crop, &params, out, &mut s).unwrap();
        let mut f = vec![0f32; 16 * 12 * 3];
        let out = ViewOutput::F32Chw {
            pixels: &mut f,
            width: 16,
            height: 12,
            normalize: Normalize::IMAGENET,
        };
        render_view(&src, &crop, &params, out, &mut s).unwrap();
        for (i, p) in u8s.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let want = (f32::from(p[c]) / 255.0 - IMAGENET[c].0) / IMAGENET[c].1;
                assert_eq!(f[c * 192 + i], want);
            }
        }
    }

    const IMAGENET: [(f32, f32); 3] = [(0.485, 0.229), (0.456, 0.224), (0.406, 0.225)];

    #[test]
    fn colour_ops_follow_params() {
        let src = image();
        let crop = CropBox::from(Rect::new(0, 0, 60, 45));
        let mut s = ViewScratch::new();
        let base = ViewParams::crop_only(Rect::new(0, 0, 60, 45));
        let render = |p: &ViewParams, s: &mut ViewScratch| {
            let mut f = vec![0f32; 20 * 15 * 3];
            let out = ViewOutput::F32Chw {
                pixels: &mut f,
                width: 20,
                height: 15,
                normalize: Normalize::IDENTITY,
            };
            render_view(&src, &crop, p, out, s).unwrap();
            f
        };
        let plain = render(&base, &mut s);
        let gray = render(&ViewParams { grayscale: true, ..base }, &mut s);
        assert_eq!(gray[..300], gray[300..600]);
        assert_ne!(gray, plain);
        let sol = render(&ViewParams { solarize: true, ..base }, &mut s);
        assert!(sol.iter().all(|&v| v <= 0.5));
        let jit = ColorJitter { brightness: 0.5, ..ColorJitter::IDENTITY };
        let dark = render(&ViewParams { jitter: Some(jit), ..base }, &mut s);
        assert!(dark.iter().zip(&plain).all(|(d, p)| (d - p * 0.5).abs() < 1e-6));
        let blur = render(&ViewParams { blur_sigma: Some(1.0), ..base }, &mut s);
        assert_ne!(blur, plain);
    }

    #[test]
    fn wrong_output_size_is_an_error() {
        let src = image();
        let crop = CropBox::from(Rect::new(0, 0, 10, 10));
        let mut f = vec![0f32; 10];
        let out = ViewOutput::F32Chw {
            pixels: &mut f,
            width: 4,
            height: 4,
            normalize: Normalize::IMAGENET,
        };
        let p = ViewParams::crop_only(Rect::new(0, 0, 10, 10));
        assert!(render_view(&src, &crop, &p, out, &mut ViewScratch::new()).is_err());
    }
}
