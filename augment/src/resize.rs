//! Crop + antialiased resize into a caller's slice, with an optional horizontal flip.
//!
//! The kernel is fast_image_resize's separable convolution (bilinear, or bicubic with PIL's
//! `a = -0.5`, Catmull-Rom) with the support widened by the scale factor when downscaling, which is
//! PIL's `Image.resize(..., BILINEAR | BICUBIC)` and torchvision's `resize(..., antialias=True)`:
//! one pass per axis, each in fixed point, u8 between the passes.
//!
//! Two crop semantics:
//! - [`Resizer::resize_crop`] is torchvision's `resized_crop` (RandomResizedCrop): the crop is cut
//!   out first and is a hard border, so pixels outside it never leak into the view. A box with
//!   fractional edges (a crop mapped onto a DCT-scaled decode) is resampled inside its integer hull.
//! - [`Resizer::resize_window`] is PIL's `Image.resize(size, box=...)`: the box is a window of the
//!   whole image resized, and the filter reads the pixels around it, so the window equals the same
//!   pixels of a full resize (torchvision's `Resize` + `CenterCrop`).

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions};

use crate::error::{Error, Result};
use crate::geometry::{CropBox, Rect, RgbImage};
use crate::simd::simd_kernel;

/// The resampling filter of a view's resize.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum Interpolation {
    /// Triangle filter: torchvision's default `InterpolationMode.BILINEAR` (MoCo, SimCLR, BYOL).
    #[default]
    Bilinear,
    /// Cubic convolution with `a = -0.5` (Catmull-Rom): PIL's `Image.BICUBIC`, which DINO's
    /// `RandomResizedCrop(..., interpolation=BICUBIC)` applies to PIL images.
    Bicubic,
}

impl Interpolation {
    fn filter(self) -> FilterType {
        match self {
            Interpolation::Bilinear => FilterType::Bilinear,
            Interpolation::Bicubic => FilterType::CatmullRom,
        }
    }

    /// The filter's radius in source pixels when upscaling: 1 (bilinear) or 2 (bicubic). When
    /// downscaling by `s`, it reads `s` times as far.
    pub fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }
}

/// What the resize of a box may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    /// Only the box's integer hull.
    Hard,
    /// The whole source.
    Open,
}

/// A reusable resizer: keeps fast_image_resize's intermediate buffer between calls, so resizing
/// views of similar size does not allocate (beyond fast_image_resize's small per-call coefficient
/// tables). One per worker thread.
#[derive(Debug, Clone, Default)]
pub struct Resizer {
    inner: fast_image_resize::Resizer,
    /// The unflipped view, when flipping.
    tmp: Vec<u8>,
}

impl Resizer {
    /// A resizer using the best SIMD extensions of this CPU.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resizes the `crop` of `src` to `dst_w` x `dst_h` with `filter` and writes it into `dst`
    /// (`[dst_h, dst_w, 3]`, packed), mirrored left-right when `flip`. Nothing outside the crop's
    /// integer hull is read (torchvision's `resized_crop`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the crop is empty, not finite or not inside `src`, when the
    /// output size is 0, or when `dst` does not hold exactly `dst_w * dst_h * 3` bytes.
    #[allow(clippy::too_many_arguments)] // the crop, the output and its size, the filter and the flip
    pub fn resize_crop(
        &mut self,
        src: &RgbImage,
        crop: &CropBox,
        dst: &mut [u8],
        dst_w: u32,
        dst_h: u32,
        filter: Interpolation,
        flip: bool,
    ) -> Result<()> {
        self.resize(src, crop, Edge::Hard, dst, (dst_w, dst_h), filter, flip)
    }

    /// As [`Resizer::resize_crop`], but `window` is a window of the whole of `src` resized by the
    /// window's scale (`window.w / dst_w` source pixels per output pixel): the filter reads the
    /// source pixels around the window, up to the edges of `src`, so the output equals those
    /// pixels of the full resize (PIL's `Image.resize((dst_w, dst_h), box=window)`). `src` must
    /// hold the filter's reach around the window ([`Interpolation::support`] times the scale, at
    /// least 1) or end where the image ends.
    ///
    /// # Errors
    /// As [`Resizer::resize_crop`].
    #[allow(clippy::too_many_arguments)] // the view's geometry, spelled out
    pub fn resize_window(
        &mut self,
        src: &RgbImage,
        window: &CropBox,
        dst: &mut [u8],
        dst_w: u32,
        dst_h: u32,
        filter: Interpolation,
        flip: bool,
    ) -> Result<()> {
        self.resize(src, window, Edge::Open, dst, (dst_w, dst_h), filter, flip)
    }

    #[allow(clippy::too_many_arguments)]
    fn resize(
        &mut self,
        src: &RgbImage,
        crop: &CropBox,
        edge: Edge,
        dst: &mut [u8],
        (dst_w, dst_h): (u32, u32),
        filter: Interpolation,
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
        // Hard: the hull is the source, so the filter's taps stop at its edges. Open: the whole
        // source, so they reach past the box (fast_image_resize clamps them to the source only).
        let hull = match edge {
            Edge::Hard => crop.hull(),
            Edge::Open => Rect::full(src.width(), src.height()),
        };
        let view =
            CroppedImage::new(&src_ref, hull.x, hull.y, hull.w, hull.h).map_err(|e| fir_err(&e))?;
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(filter.filter()))
            .crop(crop.x - f64::from(hull.x), crop.y - f64::from(hull.y), crop.w, crop.h);
        if flip {
            // Resize into the scratch buffer (one byte of slack for flip_copy), mirror into `dst`.
            self.tmp.resize(expected + 1, 0);
            let mut tmp_img =
                Image::from_slice_u8(dst_w, dst_h, &mut self.tmp[..expected], PixelType::U8x3)
                    .map_err(|e| fir_err(&e))?;
            self.inner.resize(&view, &mut tmp_img, &options).map_err(|e| fir_err(&e))?;
            flip_copy(&self.tmp, dst, dst_w as usize);
        } else {
            let mut dst_img = Image::from_slice_u8(dst_w, dst_h, dst, PixelType::U8x3)
                .map_err(|e| fir_err(&e))?;
            self.inner.resize(&view, &mut dst_img, &options).map_err(|e| fir_err(&e))?;
        }
        Ok(())
    }
}

/// Byte order that mirrors five RGB pixels held in 16 bytes (the 16th byte is filler).
const MIRROR5: [usize; 16] = [12, 13, 14, 9, 10, 11, 6, 7, 8, 3, 4, 5, 0, 1, 2, 15];

simd_kernel! {
    /// Writes the rows of `src` (packed RGB, `width` pixels per row, plus at least one byte of
    /// slack after the last row) into `dst` mirrored left-right: five pixels at a time through a
    /// 16-byte shuffle (`pshufb` with SSSE3), whose 16th byte the next block overwrites.
    fn flip_copy / flip_copy_portable(src: &[u8], dst: &mut [u8], width: usize) {
        let row = width * 3;
        assert!(src.len() > dst.len() && dst.len().is_multiple_of(row), "flip_copy: buffer sizes");
        for (r, d) in dst.chunks_exact_mut(row).enumerate() {
            // The source row and the byte after it (the next row's first byte, or the slack).
            let s = &src[r * row..(r + 1) * row + 1];
            let mut i = 0;
            while i + 6 <= width {
                // Destination pixels i..i+5 are source pixels width-1-i down to width-5-i.
                let base = 3 * (width - 5 - i);
                let block: &[u8; 16] = s[base..base + 16].try_into().unwrap();
                let out: [u8; 16] = std::array::from_fn(|k| block[MIRROR5[k]]);
                d[3 * i..3 * i + 16].copy_from_slice(&out);
                i += 5;
            }
            for i in i..width {
                let j = 3 * (width - 1 - i);
                d[3 * i..3 * i + 3].copy_from_slice(&s[j..j + 3]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        Resizer::new()
            .resize_crop(&src, &crop, &mut dst, 10, 8, Interpolation::Bilinear, false)
            .unwrap();
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
        Resizer::new()
            .resize_crop(&src, &crop, &mut dst, 7, 5, Interpolation::Bilinear, false)
            .unwrap();
        assert!(dst.iter().all(|&v| v == 255));
    }

    #[test]
    fn a_window_is_those_pixels_of_the_full_resize() {
        // The regression behind `resize_window`: a window of a resize is the full resize's pixels,
        // borders included, because the filter reads around the box (a hard crop differs there).
        let src = noise(60, 45, 4);
        let mut r = Resizer::new();
        for (ow, oh, filter) in [
            (30, 15, Interpolation::Bilinear),
            (23, 17, Interpolation::Bilinear),
            (23, 17, Interpolation::Bicubic),
        ] {
            let mut full = vec![0; ow * oh * 3];
            let whole = CropBox::from(Rect::full(60, 45));
            r.resize_crop(&src, &whole, &mut full, ow as u32, oh as u32, filter, false).unwrap();
            let (sx, sy) = (60.0 / ow as f64, 45.0 / oh as f64);
            let (x0, y0, w, h) = (4, 3, ow - 9, oh - 6);
            let window = CropBox {
                x: x0 as f64 * sx,
                y: y0 as f64 * sy,
                w: w as f64 * sx,
                h: h as f64 * sy,
            };
            let (mut open, mut hard) = (vec![0; w * h * 3], vec![0; w * h * 3]);
            r.resize_window(&src, &window, &mut open, w as u32, h as u32, filter, false).unwrap();
            r.resize_crop(&src, &window, &mut hard, w as u32, h as u32, filter, false).unwrap();
            let mut worst = (0, 0);
            for y in 0..h {
                let want = &full[((y0 + y) * ow + x0) * 3..((y0 + y) * ow + x0 + w) * 3];
                for (a, (b, c)) in want.iter().zip(open[y * w * 3..].iter().zip(&hard[y * w * 3..]))
                {
                    worst.0 = worst.0.max(a.abs_diff(*b));
                    worst.1 = worst.1.max(a.abs_diff(*c));
                }
            }
            // Integer scales give the same coefficients; others may round one tap differently.
            assert!(worst.0 <= 1, "{ow}x{oh} {filter:?}: window vs full resize {worst:?}");
            assert!(worst.1 > 8, "{ow}x{oh} {filter:?}: a hard crop differs at its border");
        }
    }

    #[test]
    fn flip_mirrors_the_resized_view() {
        let src = noise(50, 40, 2);
        let crop = CropBox { x: 3.5, y: 2.25, w: 41.0, h: 30.5 };
        let (mut a, mut b) = (vec![0; 20 * 15 * 3], vec![0; 20 * 15 * 3]);
        let mut r = Resizer::new();
        r.resize_crop(&src, &crop, &mut a, 20, 15, Interpolation::Bilinear, false).unwrap();
        r.resize_crop(&src, &crop, &mut b, 20, 15, Interpolation::Bilinear, true).unwrap();
        for y in 0..15 {
            for x in 0..20 {
                let p = (y * 20 + x) * 3;
                let q = (y * 20 + 19 - x) * 3;
                assert_eq!(a[p..p + 3], b[q..q + 3]);
            }
        }
        let src = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 0];
        let mut dst = [0; 18];
        flip_copy(&src, &mut dst, 3);
        assert_eq!(dst, [7, 8, 9, 4, 5, 6, 1, 2, 3, 16, 17, 18, 13, 14, 15, 10, 11, 12]);
        let mut one = [0; 3];
        flip_copy(&[1, 2, 3, 0], &mut one, 1);
        assert_eq!(one, [1, 2, 3]);
        // Every width around the 5-pixel blocks, both builds, against the obvious loop.
        for w in 1..40usize {
            let src: Vec<u8> = (0..w * 3 * 2 + 1).map(|i| (i * 7 % 256) as u8).collect();
            let mut want = vec![0; w * 3 * 2];
            for (r, row) in want.chunks_exact_mut(w * 3).enumerate() {
                for x in 0..w {
                    let s = (r * w + w - 1 - x) * 3;
                    row[x * 3..x * 3 + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
            let (mut a, mut b) = (vec![0; w * 6], vec![0; w * 6]);
            flip_copy(&src, &mut a, w);
            flip_copy_portable(&src, &mut b, w);
            assert_eq!((&a, &b), (&want, &want), "width {w}");
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let src = noise(10, 10, 3);
        let mut r = Resizer::new();
        let mut dst = vec![0; 4 * 4 * 3];
        let outside = CropBox { x: 5.0, y: 0.0, w: 6.0, h: 4.0 };
        assert!(
            r.resize_crop(&src, &outside, &mut dst, 4, 4, Interpolation::Bilinear, false).is_err()
        );
        let ok = CropBox { x: 0.0, y: 0.0, w: 4.0, h: 4.0 };
        assert!(r.resize_crop(&src, &ok, &mut dst, 4, 3, Interpolation::Bilinear, false).is_err());
        assert!(
            r.resize_crop(&src, &ok, &mut dst[..0], 0, 4, Interpolation::Bilinear, false).is_err()
        );
    }
}
