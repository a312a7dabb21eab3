//! Feeds arbitrary bytes to the JPEG path every record takes: the header parser (`jpeg_info`,
//! which the converter and the planner trust for sizes) and the decoder (`decode_jpeg`, at every
//! DCT scale, strict or lenient, whole or a region, as the converter and the loader's workers
//! call it). Whatever the bytes, each returns `Ok` or `Err`: never a panic, an out-of-bounds
//! access or an allocation past the pixel limit; and when both succeed they agree on the size.
//!
//! The first byte picks the options: bits 0-1 the scale, bit 2 strict, bit 3 the fast IDCT,
//! bit 4 a region decode, bit 7 prefixes a start-of-image marker (so that mutations of random
//! bytes reach past the first check). The rest is the file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regioncl_augment::{DecodeOptions, Rect, RgbImage, Scale, decode_jpeg, jpeg_info};

/// Headers over this many pixels are refused: enough for every code path, small enough that a
/// lenient decode of a forged header stays fast.
const MAX_PIXELS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let prefixed;
    let bytes = if mode & 0x80 != 0 {
        prefixed = [&[0xff, 0xd8][..], rest].concat();
        &prefixed[..]
    } else {
        rest
    };
    let info = jpeg_info(bytes);
    let scale = Scale::ALL[usize::from(mode & 3)];
    let options = DecodeOptions {
        scale,
        region: None,
        strict: mode & 4 != 0,
        fast_dct: mode & 8 != 0,
        max_pixels: MAX_PIXELS,
    };
    let mut image = RgbImage::new();
    if decode_jpeg(bytes, &options, &mut image).is_err() {
        return;
    }
    let info = info.expect("a file that decodes has a header that parses");
    assert!(info.width > 0 && info.height > 0, "{info:?}");
    assert!(u64::from(info.width) * u64::from(info.height) <= MAX_PIXELS);
    let (w, h) = scale.apply(info.width, info.height);
    assert_eq!((image.width(), image.height()), (w, h));
    assert_eq!(image.as_bytes().len(), w as usize * h as usize * 3);
    if mode & 0x10 != 0 {
        // The centre half, in scaled coordinates, as the loader's workers ask for a crop.
        let region = Rect { x: w / 4, y: h / 4, w: (w / 2).max(1), h: (h / 2).max(1) };
        let options = DecodeOptions { region: Some(region), ..options };
        if decode_jpeg(bytes, &options, &mut image).is_ok() {
            assert_eq!((image.width(), image.height()), (region.w, region.h));
        }
    }
});
