//! Crop + antialiased bilinear resize into a caller's slice, with an optional horizontal flip.
//!
//! The kernel is fast_image_resize's separable bilinear convolution with the support widened by the
//! scale factor when downscaling, which is PIL's `Image.resize(..., BILINEAR)` and torchvision's
//! `resize(..., antialias=True)`: horizontal pass, then vertical, each in fixed point, u8 between
//! the passes.
//!
//! Crop semantics are torchvision's `resized_crop`: the crop is cut out first and is a hard border,
//! so pixels outside it never leak into the view (PIL's `resize(box=...)` would read them). A box
//! with fractional edges (a crop mapped onto a DCT-scaled decode) is resampled inside its integer
//! hull.

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions};

use crate::error::{Error, Result};
use crate::geometry::{CropBox, RgbImage};

/// A reusable resizer: keeps fast_image_resize's intermediate buffer between calls, so resizing
/// views of similar size does not allocate (beyond fast_image_resize's small per-call coefficient
/// tables). One per worker thread.
#[derive(Debug, Clone, Default)]
pub struct Resizer {
    inner: fast_image_resize::Resizer,
}

impl Resizer {
    /// A resizer using the best SIMD extensions of this CPU.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resizes the `crop` of `src` to `dst_w` x `dst_h` and writes it into `dst` (`[dst_h, dst_w,
    /// 3]`, packed), mirrored left-right when `flip`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the crop is empty, not finite or not inside `src`, when the
    /// output size is 0, or when `dst` does not hold exactly `dst_w * dst_h * 3` bytes.
    pub fn resize_crop(
        &mut self,
        src: &RgbImage,
        crop: &CropBox,
        dst: &mut [u8],
        dst_w: u32,
        dst_h: u32,
        flip: bool,
    ) -> Result<()> {
        if !crop.fits_in(src.width(), src.height()) {
            return Err(Error::InvalidArgument(format!(
                "resize: crop {crop:?} outside the {}x{} source",
                src.width(),
                src.height()
            )));
        }
        let expected = dst_w as usize * dst_h as usize * 3;
        if dst_w == 0 || dst_h == 0 || dst.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "resize: destination of {} bytes for a {dst_w}x{dst_h} RGB view",
                dst.len()
            )));
        }
        let fir_err = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("resize: {e}"));
        let src_ref = ImageRef::new(src.width(), src.height(), src.as_bytes(), PixelType::U8x3)
            .map_err(|e| fir_err(&e))?;
        let hull = crop.hull();
        let view =
            CroppedImage::new(&src_ref, hull.x, hull.y, hull.w, hull.h).map_err(|e| fir_err(&e))?;
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(crop.x - f64::from(hull.x), crop.y - f64::from(hull.y), crop.w, crop.h);
        let mut dst_img =
            Image::from_slice_u8(dst_w, dst_h, dst, PixelType::U8x3).map_err(|e| fir_err(&e))?;
        self.inner.resize(&view, &mut dst_img, &options).map_err(|e| fir_err(&e))?;
        if flip {
            flip_rows(dst, dst_w as usize);
        }
        Ok(())
    }
}

/// Mirrors every row of a packed RGB image in place.
pub(crate) fn flip_rows(pixels: &mut [u8], width: usize) {
    for row in pixels.chunks_exact_mut(width * 3) {
        let (mut i, mut j) = (0, width.saturating_sub(1));
        while i < j {
            let (left, right) = row.split_at_mut(j * 3);
            left[i * 3..i * 3 + 3].swap_with_slice(&mut right[..3]);
            i += 1;
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rect;

    fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut rng = crate::rng::KeyedRng::new(&[seed]);
        let data = (0..w * h * 3).map(|_| rng.below(256) as u8).collect();
        RgbImage::from_vec(w, h, data)
    }

    #[test]
    fn same_size_integer_crop_is_a_copy() {
        let src = noise(40, 30, 1);
        let mut dst = vec![0; 10 * 8 * 3];
        let crop = CropBox::from(Rect::new(5, 7, 10, 8));
        Resizer::new().resize_crop(&src, &crop, &mut dst, 10, 8, false).unwrap();
        for y in 0..8 {
            let s = ((7 + y) * 40 + 5) * 3;
            assert_eq!(&dst[y * 30..(y + 1) * 30], &src.as_bytes()[s..s + 30]);
        }
    }

    #[test]
    fn crop_is_a_hard_border() {
        // A white crop inside a black image must stay white: nothing outside the crop leaks in.
        let mut src = RgbImage::from_vec(64, 64, vec![0; 64 * 64 * 3]);
        for y in 16..48 {
            src.as_bytes_mut()[(y * 64 + 16) * 3..(y * 64 + 48) * 3].fill(255);
        }
        let mut dst = vec![0; 7 * 5 * 3];
        let crop = CropBox::from(Rect::new(16, 16, 32, 32));
        Resizer::new().resize_crop(&src, &crop, &mut dst, 7, 5, false).unwrap();
        assert!(dst.iter().all(|&v| v == 255));
    }

    #[test]
    fn flip_mirrors_the_resized_view() {
        let src = noise(50, 40, 2);
        let crop = CropBox { x: 3.5, y: 2.25, w: 41.0, h: 30.5 };
        let (mut a, mut b) = (vec![0; 20 * 15 * 3], vec![0; 20 * 15 * 3]);
        let mut r = Resizer::new();
        r.resize_crop(&src, &crop, &mut a, 20, 15, false).unwrap();
        r.resize_crop(&src, &crop, &mut b, 20, 15, true).unwrap();
        for y in 0..15 {
            for x in 0..20 {
                let p = (y * 20 + x) * 3;
                let q = (y * 20 + 19 - x) * 3;
                assert_eq!(a[p..p + 3], b[q..q + 3]);
            }
        }
        let mut odd = vec![1, 2, 3, 4, 5, 6, 7, 8, 9];
        flip_rows(&mut odd, 3);
        assert_eq!(odd, [7, 8, 9, 4, 5, 6, 1, 2, 3]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let src = noise(10, 10, 3);
        let mut r = Resizer::new();
        let mut dst = vec![0; 4 * 4 * 3];
        let outside = CropBox { x: 5.0, y: 0.0, w: 6.0, h: 4.0 };
        assert!(r.resize_crop(&src, &outside, &mut dst, 4, 4, false).is_err());
        let ok = CropBox { x: 0.0, y: 0.0, w: 4.0, h: 4.0 };
        assert!(r.resize_crop(&src, &ok, &mut dst, 4, 3, false).is_err());
        assert!(r.resize_crop(&src, &ok, &mut dst[..0], 0, 4, false).is_err());
    }
}
