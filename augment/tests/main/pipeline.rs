//! The whole per-sample path: plan, decode once (DCT-scaled, region), render each view.

use regioncl_augment::{
    DecodeOptions, DecodePlan, DecodePlanOptions, KeyedRng, RgbImage, Scale, ViewGeometry,
    ViewOutput, ViewParams, ViewScratch, ViewSpec, decode_jpeg, jpeg_info, render_view,
};

use crate::common::{diff, imagenet_like, photos};

/// Renders the views of one file as u8 with the given decode shortcuts.
fn render(
    bytes: &[u8],
    views: &[ViewParams],
    size: u32,
    opts: &DecodePlanOptions,
) -> (Scale, Vec<Vec<u8>>) {
    let info = jpeg_info(bytes).unwrap();
    let geometry: Vec<_> =
        views.iter().map(|p| ViewGeometry { crop: p.crop, width: size, height: size }).collect();
    let plan = DecodePlan::for_views(info.width, info.height, &geometry, opts).unwrap();
    let mut img = RgbImage::new();
    decode_jpeg(bytes, &plan.decode_options(&DecodeOptions::default()), &mut img).unwrap();
    assert_eq!((img.width(), img.height()), (plan.region().w, plan.region().h));
    let mut scratch = ViewScratch::new();
    let outs = views
        .iter()
        .zip(plan.boxes())
        .map(|(p, b)| {
            let mut out = vec![0u8; (size * size * 3) as usize];
            let view = ViewOutput::U8Hwc { pixels: &mut out, width: size, height: size };
            render_view(&img, b, p, view, &mut scratch).unwrap();
            out
        })
        .collect();
    (plan.scale(), outs)
}

#[test]
fn region_decode_gives_the_full_decode_views() {
    // Region decode alone (no DCT scaling) changes at most a rounding step of chroma upsampling.
    let full = DecodePlanOptions { dct_scaling: false, region: false };
    let region = DecodePlanOptions { dct_scaling: false, region: true };
    let spec = ViewSpec::geometry_only(224);
    for (i, file) in imagenet_like(10).iter().enumerate() {
        let bytes = std::fs::read(file).unwrap();
        let info = jpeg_info(&bytes).unwrap();
        let views: Vec<_> = (0..2)
            .map(|v| spec.sample(info.width, info.height, &mut KeyedRng::new(&[i as u64, v])))
            .collect();
        let (_, a) = render(&bytes, &views, 224, &full);
        let (_, b) = render(&bytes, &views, 224, &region);
        for (x, y) in a.iter().zip(&b) {
            let d = diff(x, y);
            assert!(d.max <= 3.0 && d.mean < 0.01, "{}: {d:?}", file.display());
        }
    }
}

#[test]
fn dct_scaled_views_stay_close_to_full_resolution() {
    // DCT scaling replaces part of the antialiasing filter by libjpeg's scaled IDCT: a slightly
    // different low-pass, so views differ by a few levels on average, never structurally.
    let full = DecodePlanOptions { dct_scaling: false, region: true };
    let fast = DecodePlanOptions::default();
    let spec = ViewSpec::geometry_only(224);
    let (mut scaled, mut worst_mean) = (0, 0.0f64);
    for (i, file) in photos(6).iter().chain(&imagenet_like(6)).enumerate() {
        let bytes = std::fs::read(file).unwrap();
        let info = jpeg_info(&bytes).unwrap();
        let views: Vec<_> = (0..2)
            .map(|v| spec.sample(info.width, info.height, &mut KeyedRng::new(&[i as u64, v])))
            .collect();
        let (_, a) = render(&bytes, &views, 224, &full);
        let (s, b) = render(&bytes, &views, 224, &fast);
        scaled += usize::from(s != Scale::Full);
        for (x, y) in a.iter().zip(&b) {
            let d = diff(x, y);
            worst_mean = worst_mean.max(d.mean);
            assert!(d.mean < 3.0, "{} at {s:?}: {d:?}", file.display());
        }
    }
    eprintln!(
        "DCT-scaled vs full decode: {scaled} of 12 samples scaled, worst mean {worst_mean:.3}"
    );
    assert!(scaled >= 6, "the large photos should decode scaled");
}

#[test]
fn multi_crop_views_render_from_one_decode() {
    // 2x224 + 6x96 from one decode; each view equals its own single-view render.
    let file = &photos(1)[0];
    let bytes = std::fs::read(file).unwrap();
    let info = jpeg_info(&bytes).unwrap();
    let opts = DecodePlanOptions::default();
    let mut views = Vec::new();
    for v in 0..8u64 {
        let spec = if v < 2 {
            ViewSpec::mocov2(224)
        } else {
            ViewSpec { scale: (0.05, 0.4), ..ViewSpec::mocov2(96) }
        };
        views.push((spec.sample(info.width, info.height, &mut KeyedRng::new(&[3, v])), spec.width));
    }
    let geometry: Vec<_> =
        views.iter().map(|(p, s)| ViewGeometry { crop: p.crop, width: *s, height: *s }).collect();
    let plan = DecodePlan::for_views(info.width, info.height, &geometry, &opts).unwrap();
    assert!(plan.boxes().iter().all(|b| b.fits_in(plan.region().w, plan.region().h)));
    let mut img = RgbImage::new();
    decode_jpeg(&bytes, &plan.decode_options(&DecodeOptions::default()), &mut img).unwrap();
    let mut scratch = ViewScratch::new();
    for ((p, s), b) in views.iter().zip(plan.boxes()) {
        let mut out = vec![0u8; (s * s * 3) as usize];
        let view = ViewOutput::U8Hwc { pixels: &mut out, width: *s, height: *s };
        render_view(&img, b, p, view, &mut scratch).unwrap();
        assert!(out.iter().any(|&v| v != out[0]), "a real photo view is not flat");
    }
}
