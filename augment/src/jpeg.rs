//! JPEG decode and encode through the system libjpeg-turbo (SIMD), via a small C shim
//! (`csrc/jpeg_shim.c`) that turns libjpeg's longjmp errors into return codes.
//!
//! Decode supports DCT-domain scaling ([`Scale`]) and region-of-interest decode
//! ([`DecodeOptions::region`]): only the rows and iMCU columns that cover the region go through the
//! IDCT and colour conversion, so a crop of a large photo costs a fraction of a full decode.

use std::ffi::{CStr, c_char, c_int};

use crate::error::{Error, Result};
use crate::geometry::{Rect, RgbImage};

/// Default bound on `width * height` of a file to decode: 256 megapixels. Headers that claim more
/// (a decoder bomb such as a 65000x65000 header) are refused before anything is allocated.
pub const DEFAULT_MAX_PIXELS: u64 = 1 << 28;

/// DCT-domain down-scaling applied while decoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scale {
    /// Full resolution.
    #[default]
    Full,
    /// 1/2 per axis.
    Half,
    /// 1/4 per axis.
    Quarter,
    /// 1/8 per axis.
    Eighth,
}

impl Scale {
    /// All scales, largest first.
    pub const ALL: [Scale; 4] = [Scale::Full, Scale::Half, Scale::Quarter, Scale::Eighth];

    /// The denominator: 1, 2, 4 or 8.
    pub const fn denom(self) -> u32 {
        match self {
            Scale::Full => 1,
            Scale::Half => 2,
            Scale::Quarter => 4,
            Scale::Eighth => 8,
        }
    }

    /// Size of a `width` x `height` image decoded at this scale (libjpeg rounds up).
    pub const fn apply(self, width: u32, height: u32) -> (u32, u32) {
        let d = self.denom();
        (width.div_ceil(d), height.div_ceil(d))
    }
}

/// How to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// DCT scaling.
    pub scale: Scale,
    /// The region to decode, in the coordinates of the *scaled* image; `None` decodes everything.
    pub region: Option<Rect>,
    /// Treat decoder warnings (truncated data, corrupt segments) as errors. Off for training
    /// (libjpeg fills a truncated tail with grey), on for conversion, where every stored record must
    /// decode cleanly.
    pub strict: bool,
    /// Use the fast integer IDCT (slightly less accurate) instead of the accurate one.
    pub fast_dct: bool,
    /// Refuse files whose header claims more than this many pixels.
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            scale: Scale::Full,
            region: None,
            strict: false,
            fast_dct: false,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// The colour space recorded in a JPEG file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JpegColor {
    /// One channel.
    Gray,
    /// YCbCr (the usual case).
    YCbCr,
    /// RGB stored without colour transform.
    Rgb,
    /// CMYK (Adobe).
    Cmyk,
    /// YCCK (Adobe).
    Ycck,
    /// Anything else libjpeg reports.
    Other,
}

/// What a JPEG header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Number of components in the file (1, 3 or 4).
    pub components: u8,
    /// Colour space of the file.
    pub color: JpegColor,
    /// Whether the file is progressive.
    pub progressive: bool,
}

#[repr(C)]
#[derive(Default)]
struct RawInfo {
    width: u32,
    height: u32,
    components: i32,
    color_space: i32,
    progressive: i32,
}

const ERR_LEN: usize = 200;
const RCL_OK: c_int = 0;
const RCL_ERR_LIMIT: c_int = 2;
const RCL_ERR_ARG: c_int = 3;

unsafe extern "C" {
    fn rcl_jpeg_info_read(
        buf: *const u8,
        len: usize,
        info: *mut RawInfo,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn rcl_jpeg_decode(
        buf: *const u8,
        len: usize,
        scale_denom: c_int,
        strict: c_int,
        fast_dct: c_int,
        max_pixels: u64,
        rx: u32,
        ry: u32,
        rw: u32,
        rh: u32,
        out: *mut u8,
        out_cap: usize,
        out_w: *mut u32,
        out_h: *mut u32,
        scaled_w: *mut u32,
        scaled_h: *mut u32,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn rcl_jpeg_encode(
        pixels: *const u8,
        width: u32,
        height: u32,
        components: c_int,
        quality: c_int,
        out: *mut *mut u8,
        out_len: *mut usize,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn rcl_jpeg_free(p: *mut u8);
}

fn message(buf: &[c_char; ERR_LEN]) -> String {
    // SAFETY: the shim always writes a NUL-terminated string (copy_msg/snprintf bound it by
    // ERR_LEN), and the buffer starts zeroed, so a terminator exists within the array.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// Reads the header: size, components, colour space. Cheap: no pixel is decoded.
///
/// # Errors
/// [`Error::Decode`] when the bytes are not a JPEG or the header is corrupt.
pub fn jpeg_info(bytes: &[u8]) -> Result<JpegInfo> {
    let mut raw = RawInfo::default();
    let mut err = [0 as c_char; ERR_LEN];
    // SAFETY: `bytes` is valid for `len` bytes for the duration of the call (libjpeg's memory
    // source only reads it); `raw` and `err` are live, writable and of the advertised sizes.
    let rc = unsafe {
        rcl_jpeg_info_read(bytes.as_ptr(), bytes.len(), &mut raw, err.as_mut_ptr(), ERR_LEN)
    };
    if rc != RCL_OK {
        return Err(Error::Decode { message: message(&err) });
    }
    // J_COLOR_SPACE: 0 unknown, 1 gray, 2 RGB, 3 YCbCr, 4 CMYK, 5 YCCK.
    let color = match raw.color_space {
        1 => JpegColor::Gray,
        2 => JpegColor::Rgb,
        3 => JpegColor::YCbCr,
        4 => JpegColor::Cmyk,
        5 => JpegColor::Ycck,
        _ => JpegColor::Other,
    };
    Ok(JpegInfo {
        width: raw.width,
        height: raw.height,
        components: raw.components.clamp(0, 255) as u8,
        color,
        progressive: raw.progressive != 0,
    })
}

/// Decodes a JPEG (or the region `options.region` of it, at `options.scale`) into `out` as RGB.
/// Grayscale files are expanded to RGB; CMYK and YCCK files are converted to RGB.
///
/// # Errors
/// [`Error::Limit`] for a header beyond `options.max_pixels`, [`Error::InvalidArgument`] for a
/// region outside the scaled image, [`Error::Decode`] for anything the decoder rejects (and, with
/// `strict`, anything it warns about).
pub fn decode_jpeg(bytes: &[u8], options: &DecodeOptions, out: &mut RgbImage) -> Result<()> {
    let (region, cap_w, cap_h) = match options.region {
        Some(r) => {
            if r.w == 0 || r.h == 0 {
                return Err(Error::InvalidArgument(format!("empty decode region {r:?}")));
            }
            (r, r.w, r.h)
        }
        None => {
            let info = jpeg_info(bytes)?;
            let pixels = u64::from(info.width) * u64::from(info.height);
            if pixels > options.max_pixels {
                return Err(Error::Limit {
                    width: info.width,
                    height: info.height,
                    max_pixels: options.max_pixels,
                });
            }
            let (w, h) = options.scale.apply(info.width, info.height);
            (Rect::default(), w, h)
        }
    };
    out.reshape(cap_w, cap_h);
    let (mut out_w, mut out_h, mut scaled_w, mut scaled_h) = (0u32, 0u32, 0u32, 0u32);
    let mut err = [0 as c_char; ERR_LEN];
    let buf = out.as_bytes_mut();
    // SAFETY: `bytes` is readable for its length; `buf` is writable for `buf.len()` bytes and the
    // shim writes at most `out_cap` bytes (it checks rw*rh*3 <= out_cap before decoding); the
    // out-parameters and `err` are live and writable.
    let rc = unsafe {
        rcl_jpeg_decode(
            bytes.as_ptr(),
            bytes.len(),
            options.scale.denom() as c_int,
            c_int::from(options.strict),
            c_int::from(options.fast_dct),
            options.max_pixels,
            region.x,
            region.y,
            region.w,
            region.h,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out_w,
            &mut out_h,
            &mut scaled_w,
            &mut scaled_h,
            err.as_mut_ptr(),
            ERR_LEN,
        )
    };
    match rc {
        RCL_OK => {
            debug_assert_eq!((out_w, out_h), (cap_w, cap_h));
            Ok(())
        }
        RCL_ERR_LIMIT => {
            let info = jpeg_info(bytes)?;
            Err(Error::Limit {
                width: info.width,
                height: info.height,
                max_pixels: options.max_pixels,
            })
        }
        RCL_ERR_ARG => Err(Error::InvalidArgument(message(&err))),
        _ => Err(Error::Decode { message: message(&err) }),
    }
}

/// Encodes pixels (`components` = 3 for RGB, 1 for gray; rows top to bottom, interleaved) as a
/// baseline JPEG with 4:2:0 chroma subsampling and optimized Huffman tables.
///
/// # Errors
/// [`Error::InvalidArgument`] for a wrong buffer length, quality outside 1..=100, components other
/// than 1 or 3, or an empty image; [`Error::Encode`] if libjpeg fails.
pub fn encode_jpeg(
    pixels: &[u8],
    width: u32,
    height: u32,
    components: u8,
    quality: u8,
) -> Result<Vec<u8>> {
    if components != 1 && components != 3 {
        return Err(Error::InvalidArgument(format!("components {components} is not 1 or 3")));
    }
    if !(1..=100).contains(&quality) {
        return Err(Error::InvalidArgument(format!("quality {quality} outside 1..=100")));
    }
    if width == 0 || height == 0 || width > 65500 || height > 65500 {
        return Err(Error::InvalidArgument(format!("cannot encode a {width}x{height} JPEG")));
    }
    let expected = width as usize * height as usize * components as usize;
    if pixels.len() != expected {
        return Err(Error::InvalidArgument(format!(
            "pixel buffer of {} bytes for a {width}x{height}x{components} image ({expected})",
            pixels.len()
        )));
    }
    let mut out: *mut u8 = std::ptr::null_mut();
    let mut len = 0usize;
    let mut err = [0 as c_char; ERR_LEN];
    // SAFETY: `pixels` holds exactly width*height*components bytes (checked above), which is all
    // the shim reads; `out`, `len` and `err` are live and writable.
    let rc = unsafe {
        rcl_jpeg_encode(
            pixels.as_ptr(),
            width,
            height,
            c_int::from(components),
            c_int::from(quality),
            &mut out,
            &mut len,
            err.as_mut_ptr(),
            ERR_LEN,
        )
    };
    if rc != RCL_OK {
        return Err(Error::Encode { message: message(&err) });
    }
    // SAFETY: on success the shim hands over a malloc'ed buffer of `len` bytes; we copy it out
    // before releasing it with the matching free.
    let bytes = unsafe { std::slice::from_raw_parts(out, len) }.to_vec();
    // SAFETY: `out` came from the shim's allocator and is released exactly once.
    unsafe { rcl_jpeg_free(out) };
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
            }
        }
        v
    }

    #[test]
    fn encode_decode_round_trip_is_close() {
        let (w, h) = (97, 61);
        let src = gradient(w, h);
        let jpg = encode_jpeg(&src, w, h, 3, 95).unwrap();
        let info = jpeg_info(&jpg).unwrap();
        assert_eq!((info.width, info.height, info.components), (w, h, 3));
        let mut img = RgbImage::new();
        decode_jpeg(&jpg, &DecodeOptions { strict: true, ..Default::default() }, &mut img).unwrap();
        assert_eq!((img.width(), img.height()), (w, h));
        let max_err = src.iter().zip(img.as_bytes()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(max_err <= 12, "max error {max_err}");
    }

    #[test]
    fn region_decode_equals_crop_of_full_decode() {
        let (w, h) = (203, 150);
        let jpg = encode_jpeg(&gradient(w, h), w, h, 3, 90).unwrap();
        let mut full = RgbImage::new();
        decode_jpeg(&jpg, &DecodeOptions::default(), &mut full).unwrap();
        for r in [
            Rect::new(0, 0, 10, 10),
            Rect::new(37, 21, 101, 77),
            Rect::new(190, 140, 13, 10),
            Rect::new(32, 5, 64, 20),
        ] {
            let mut part = RgbImage::new();
            let opts = DecodeOptions { region: Some(r), ..Default::default() };
            decode_jpeg(&jpg, &opts, &mut part).unwrap();
            assert_eq!((part.width(), part.height()), (r.w, r.h));
            for y in 0..r.h {
                let a = &part.as_bytes()[(y * r.w * 3) as usize..((y + 1) * r.w * 3) as usize];
                let start = (((r.y + y) * w + r.x) * 3) as usize;
                let b = &full.as_bytes()[start..start + (r.w * 3) as usize];
                // Skipped rows above the region may change the chroma upsampling context of the
                // first row by a rounding step; everything else is bit-exact.
                let max = a.iter().zip(b).map(|(p, q)| p.abs_diff(*q)).max().unwrap();
                assert!(max <= 2, "region {r:?} row {y}: max diff {max}");
            }
        }
    }

    #[test]
    fn scaled_decode_has_libjpeg_size() {
        let (w, h) = (203, 150);
        let jpg = encode_jpeg(&gradient(w, h), w, h, 3, 90).unwrap();
        for s in Scale::ALL {
            let mut img = RgbImage::new();
            decode_jpeg(&jpg, &DecodeOptions { scale: s, ..Default::default() }, &mut img).unwrap();
            assert_eq!((img.width(), img.height()), s.apply(w, h), "{s:?}");
        }
    }

    #[test]
    fn garbage_truncation_and_bombs_are_errors() {
        let mut img = RgbImage::new();
        let opts = DecodeOptions { strict: true, ..Default::default() };
        assert!(matches!(decode_jpeg(b"", &opts, &mut img), Err(Error::Decode { .. })));
        assert!(matches!(decode_jpeg(b"hello, world", &opts, &mut img), Err(Error::Decode { .. })));
        let jpg = encode_jpeg(&gradient(64, 64), 64, 64, 3, 90).unwrap();
        let truncated = &jpg[..jpg.len() / 2];
        assert!(decode_jpeg(truncated, &opts, &mut img).is_err());
        // Lenient mode decodes a truncated file (grey tail), as training wants.
        decode_jpeg(truncated, &DecodeOptions::default(), &mut img).unwrap();
        // A header claiming 65000x65000: patch the SOF0 size fields of a real file.
        let mut bomb = jpg.clone();
        let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bomb[sof + 5..sof + 7].copy_from_slice(&65000u16.to_be_bytes());
        bomb[sof + 7..sof + 9].copy_from_slice(&65000u16.to_be_bytes());
        assert!(matches!(decode_jpeg(&bomb, &opts, &mut img), Err(Error::Limit { .. })));
    }

    #[test]
    fn region_outside_image_is_invalid_argument() {
        let jpg = encode_jpeg(&gradient(32, 32), 32, 32, 3, 90).unwrap();
        let mut img = RgbImage::new();
        let opts = DecodeOptions { region: Some(Rect::new(20, 0, 20, 10)), ..Default::default() };
        assert!(matches!(decode_jpeg(&jpg, &opts, &mut img), Err(Error::InvalidArgument(_))));
    }
}
