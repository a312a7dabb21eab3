//! Turning one input file into one record: validate a JPEG and keep its bytes, or decode anything
//! else (or a JPEG to shrink) and encode an RGB JPEG, then validate that.

use std::io::Cursor;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use regioncl_augment::{
    DecodeOptions, JpegColor, RgbImage, Scale, decode_jpeg, encode_jpeg, jpeg_info,
};

/// Largest side `encode_jpeg` (and the JPEG format) accepts.
const MAX_JPEG_SIDE: u32 = 65500;

/// What the converter did with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// A valid JPEG, stored byte-for-byte.
    Stored,
    /// Decoded (not a JPEG, or a CMYK/YCCK JPEG) and re-encoded as an RGB JPEG.
    Converted,
    /// Resized to the longer-side bound and re-encoded.
    Resized,
}

/// A record ready to be written.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub action: Action,
}

/// The knobs of one conversion.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recipe {
    pub max_side: Option<u32>,
    pub quality: u8,
    pub max_pixels: u64,
}

/// Per-thread buffers, reused across files.
#[derive(Default)]
pub(crate) struct Scratch {
    rgb: RgbImage,
    check: RgbImage,
    resizer: Resizer,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").finish_non_exhaustive()
    }
}

/// Prepares the record for a file's bytes, or says why the file is skipped.
pub(crate) fn prepare(raw: Vec<u8>, recipe: &Recipe, s: &mut Scratch) -> Result<Prepared, String> {
    if raw.is_empty() {
        return Err("empty file".into());
    }
    let needs_resize = |w: u32, h: u32| recipe.max_side.is_some_and(|m| w.max(h) > m);
    if raw.starts_with(&[0xff, 0xd8, 0xff]) {
        let info = jpeg_info(&raw).map_err(|e| format!("invalid JPEG: {e}"))?;
        check_size(info.width, info.height, recipe.max_pixels)?;
        let plain = matches!(info.color, JpegColor::YCbCr | JpegColor::Gray | JpegColor::Rgb);
        if plain && !needs_resize(info.width, info.height) {
            validate(&raw, &mut s.check).map_err(|e| format!("invalid JPEG: {e}"))?;
            return Ok(Prepared {
                bytes: raw,
                width: info.width,
                height: info.height,
                action: Action::Stored,
            });
        }
        let options =
            DecodeOptions { strict: true, max_pixels: recipe.max_pixels, ..Default::default() };
        decode_jpeg(&raw, &options, &mut s.rgb).map_err(|e| format!("invalid JPEG: {e}"))?;
    } else {
        decode_other(&raw, recipe.max_pixels, &mut s.rgb)?;
    }
    let (w, h) = (s.rgb.width(), s.rgb.height());
    let (bytes, width, height, action) = if needs_resize(w, h) {
        let max_side = recipe.max_side.unwrap_or(u32::MAX);
        let (tw, th) = fit(w, h, max_side);
        let resized = resize(&s.rgb, tw, th, &mut s.resizer)?;
        (encode(&resized, tw, th, recipe.quality)?, tw, th, Action::Resized)
    } else {
        (encode(s.rgb.as_bytes(), w, h, recipe.quality)?, w, h, Action::Converted)
    };
    validate(&bytes, &mut s.check).map_err(|e| format!("re-encoded JPEG does not decode: {e}"))?;
    Ok(Prepared { bytes, width, height, action })
}

fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(format!(
            "image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
        ));
    }
    if width == 0 || height == 0 || width > MAX_JPEG_SIDE || height > MAX_JPEG_SIDE {
        return Err(format!(
            "image of {width}x{height} pixels: sides must be in 1..={MAX_JPEG_SIDE}"
        ));
    }
    Ok(())
}

/// Checks that a JPEG decodes without any warning. Decoding at 1/8 scale runs the whole entropy
/// decoder (where truncation and corrupt data are detected) at a fraction of the IDCT and colour
/// cost of a full decode.
fn validate(jpeg: &[u8], out: &mut RgbImage) -> regioncl_augment::Result<()> {
    // The caller checked the size against its own limit.
    let options = DecodeOptions {
        scale: Scale::Eighth,
        strict: true,
        max_pixels: u64::MAX,
        ..Default::default()
    };
    decode_jpeg(jpeg, &options, out)
}

/// Decodes a non-JPEG image with the `image` crate into RGB, flattening alpha onto white.
fn decode_other(raw: &[u8], max_pixels: u64, out: &mut RgbImage) -> Result<(), String> {
    let reader = || {
        image::ImageReader::new(Cursor::new(raw))
            .with_guessed_format()
            .map_err(|e| format!("cannot read: {e}"))
    };
    let probe = reader()?;
    if probe.format().is_none() {
        return Err("not an image: unrecognised format".into());
    }
    let (width, height) = probe.into_dimensions().map_err(|e| format!("invalid image: {e}"))?;
    check_size(width, height, max_pixels)?;
    let mut reader = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_JPEG_SIDE);
    limits.max_image_height = Some(MAX_JPEG_SIDE);
    // 16-bit RGBA is 8 bytes a pixel; the pixel count was checked above.
    limits.max_alloc = Some((u64::from(width) * u64::from(height)).saturating_mul(8) + (64 << 20));
    reader.limits(limits);
    let image = reader.decode().map_err(|e| format!("invalid image: {e}"))?;
    if image.color().has_alpha() {
        let rgba = image.to_rgba8();
        out.reshape(rgba.width(), rgba.height());
        for (dst, src) in out.as_bytes_mut().chunks_exact_mut(3).zip(rgba.as_raw().chunks_exact(4))
        {
            let a = u32::from(src[3]);
            for c in 0..3 {
                // Composite onto white: c * a + 255 * (255 - a), rounded, over 255.
                dst[c] = ((u32::from(src[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
            }
        }
    } else {
        let rgb = image.to_rgb8();
        let (w, h) = rgb.dimensions();
        *out = RgbImage::from_vec(w, h, rgb.into_raw());
    }
    Ok(())
}

/// The size of a `w` x `h` image scaled so that its longer side is `max_side`.
pub(crate) fn fit(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    let long = w.max(h);
    if long <= max_side {
        return (w, h);
    }
    let scale = |x: u32| {
        ((u64::from(x) * u64::from(max_side) + u64::from(long) / 2) / u64::from(long)).max(1) as u32
    };
    (scale(w), scale(h))
}

/// Antialiased resize (Catmull-Rom convolution whose support grows with the downscale factor, as
/// PIL's bicubic resize).
fn resize(src: &RgbImage, w: u32, h: u32, resizer: &mut Resizer) -> Result<Vec<u8>, String> {
    let src_image = fast_image_resize::images::ImageRef::new(
        src.width(),
        src.height(),
        src.as_bytes(),
        PixelType::U8x3,
    )
    .map_err(|e| format!("resize: {e}"))?;
    let mut dst = Image::new(w, h, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    resizer.resize(&src_image, &mut dst, &options).map_err(|e| format!("resize: {e}"))?;
    Ok(dst.into_vec())
}

fn encode(pixels: &[u8], w: u32, h: u32, quality: u8) -> Result<Vec<u8>, String> {
    encode_jpeg(pixels, w, h, 3, quality).map_err(|e| format!("cannot encode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_bounds_the_longer_side() {
        assert_eq!(fit(500, 375, 256), (256, 192));
        assert_eq!(fit(375, 500, 256), (192, 256));
        assert_eq!(fit(200, 100, 256), (200, 100));
        assert_eq!(fit(10000, 1, 256), (256, 1));
    }
}
