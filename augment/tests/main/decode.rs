//! libjpeg-turbo decode: against PIL (which bundles its own libjpeg-turbo), and region/scaled
//! decodes against the full decode.

use regioncl_augment::{DecodeOptions, Rect, RgbImage, Scale, decode_jpeg, jpeg_info};

use crate::common::{Reference, decode_file, diff, flower_variants, imagenet_like, photos};

/// Same IDCT and upsampling on both sides: the outputs are expected to be identical, but allow a
/// level for a different libjpeg-turbo version's SIMD rounding.
const PIL_MAX_LEVELS: f64 = 1.0;

#[test]
fn decode_matches_pil() {
    let mut files = flower_variants();
    files.extend(imagenet_like(4));
    files.extend(photos(2));
    let mut reference = Reference::new("decode");
    let ids: Vec<usize> = files.iter().map(|f| reference.decode_pil(f)).collect();
    let refs = reference.run();
    for (file, id) in files.iter().zip(ids) {
        let ours = decode_file(file, Scale::Full);
        let r = &refs[id];
        let w = u32::from_le_bytes(r[0..4].try_into().unwrap());
        let h = u32::from_le_bytes(r[4..8].try_into().unwrap());
        assert_eq!((ours.width(), ours.height()), (w, h), "{}", file.display());
        let d = diff(ours.as_bytes(), &r[8..]);
        eprintln!("{}: vs PIL {d:?}", file.file_name().unwrap().to_string_lossy());
        assert!(d.max <= PIL_MAX_LEVELS, "{}: {d:?}", file.display());
    }
}

#[test]
fn region_and_scaled_decodes_match_the_full_decode() {
    for file in flower_variants().iter().chain(&photos(3)) {
        let bytes = std::fs::read(file).unwrap();
        let info = jpeg_info(&bytes).unwrap();
        for scale in Scale::ALL {
            let full = decode_file(file, scale);
            let (sw, sh) = scale.apply(info.width, info.height);
            assert_eq!((full.width(), full.height()), (sw, sh));
            let region = Rect::new(sw / 5, sh / 3, sw / 2, sh / 2);
            let mut part = RgbImage::new();
            let opts = DecodeOptions { scale, region: Some(region), ..Default::default() };
            decode_jpeg(&bytes, &opts, &mut part).unwrap();
            let mut crop = Vec::with_capacity(part.as_bytes().len());
            for y in region.y..region.bottom() {
                let start = ((y * sw + region.x) * 3) as usize;
                crop.extend_from_slice(&full.as_bytes()[start..start + (region.w * 3) as usize]);
            }
            // Skipped rows can change the chroma upsampling context of the region's first row.
            // libjpeg treats the edges of a cropped decode as image edges for chroma upsampling:
            // the outermost row and column may move by several levels (DecodePlan keeps a margin
            // for this); everything inside is exact up to upsampling rounding.
            let d = diff(part.as_bytes(), &crop);
            assert!(d.mean < 0.01, "{} {scale:?}: {d:?}", file.display());
            let row = (region.w * 3) as usize;
            let inner = |img: &[u8]| -> Vec<u8> {
                img.chunks_exact(row)
                    .skip(1)
                    .take(region.h as usize - 2)
                    .flat_map(|r| r[3..row - 3].to_vec())
                    .collect()
            };
            let d = diff(&inner(part.as_bytes()), &inner(&crop));
            assert!(d.max <= 2.0, "{} {scale:?} interior: {d:?}", file.display());
        }
    }
}
