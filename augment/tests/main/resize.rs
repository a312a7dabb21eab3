//! Crop + antialiased resize against torchvision's `resized_crop(..., antialias=True)`, both on
//! uint8 tensors (float inside, one rounding) and on PIL images (the MoCo reference pipeline).

use regioncl_augment::{CropBox, Interpolation, KeyedRng, Rect, Resizer, Scale, ViewSpec};

use crate::common::{Diff, Reference, decode_file, diff, imagenet_like, photos};

/// Against torchvision on uint8 tensors: it resizes in float32 and rounds once; we resize in fixed
/// point with a u8 intermediate between the passes (as PIL does), so about one value in eight is
/// one level off, never more.
const TENSOR_MAX_LEVELS: f64 = 1.0;
const TENSOR_MEAN_LEVELS: f64 = 0.25;
/// Against PIL: the same algorithm (fast_image_resize follows Pillow-SIMD), but PIL resizes
/// horizontally first and keeps 22-bit coefficients where fast_image_resize goes vertical first
/// with 16-bit ones.
const PIL_MAX_LEVELS: f64 = 1.0;
const PIL_MEAN_LEVELS: f64 = 0.3;

#[test]
fn resize_matches_torchvision_antialias_on_photos() {
    let mut sources: Vec<_> = photos(4).iter().map(|p| decode_file(p, Scale::Quarter)).collect();
    sources.extend(imagenet_like(6).iter().map(|p| decode_file(p, Scale::Full)));
    let mut reference = Reference::new("resize");
    let mut ours = Vec::new();
    let mut resizer = Resizer::new();
    let spec = ViewSpec::mocov2(224);
    for (i, src) in sources.iter().enumerate() {
        let name = reference.add_image(src.as_bytes());
        let (w, h) = (src.width(), src.height());
        let mut crops: Vec<(Rect, u32, u32, bool)> = (0..6)
            .map(|v| {
                let p = spec.sample(w, h, &mut KeyedRng::new(&[i as u64, v]));
                (p.crop, 224, 224, p.flip)
            })
            .collect();
        // A multi-crop small view, an upscale, a non-square output of the whole image.
        crops.push((spec.sample(w, h, &mut KeyedRng::new(&[i as u64, 99])).crop, 96, 96, false));
        crops.push((Rect::new(w / 3, h / 3, 100, 80), 224, 224, true));
        crops.push((Rect::full(w, h), 160, 120, false));
        for (crop, ow, oh, flip) in crops {
            let mut out = vec![0u8; (ow * oh * 3) as usize];
            let filter = Interpolation::Bilinear;
            resizer.resize_crop(src, &CropBox::from(crop), &mut out, ow, oh, filter, flip).unwrap();
            let tensor = reference.resize(&name, w, h, crop, (ow, oh), flip, None);
            let pil = reference.resize(&name, w, h, crop, (ow, oh), flip, Some(filter));
            ours.push((tensor, pil, crop, out));
        }
    }
    let refs = reference.run();
    let (mut worst_tensor, mut worst_pil) = (Diff::default(), Diff::default());
    for (tensor, pil, crop, out) in &ours {
        let d = diff(out, &refs[*tensor]);
        assert!(d.max <= TENSOR_MAX_LEVELS, "crop {crop:?} vs tensor: {d:?}");
        worst_tensor = worst_tensor.worst(d);
        let d = diff(out, &refs[*pil]);
        assert!(d.max <= PIL_MAX_LEVELS, "crop {crop:?} vs PIL: {d:?}");
        worst_pil = worst_pil.worst(d);
    }
    eprintln!("resize over {} views: vs torchvision tensor {worst_tensor:?}", ours.len());
    eprintln!("resize over {} views: vs torchvision PIL {worst_pil:?}", ours.len());
    assert!(worst_tensor.mean <= TENSOR_MEAN_LEVELS, "{worst_tensor:?}");
    assert!(worst_pil.mean <= PIL_MEAN_LEVELS, "{worst_pil:?}");
}

/// Against PIL's `BICUBIC`: the same cubic (`a = -0.5`), but the passes run in the other order and
/// a cubic overshoots, so the u8 clipping between the passes cuts different values at sharp edges:
/// a few pixels of a view are a few levels off, the mean stays well under one.
const BICUBIC_MAX_LEVELS: f64 = 4.0;
const BICUBIC_MEAN_LEVELS: f64 = 0.35;

/// DINO's bicubic RandomResizedCrop runs on PIL images: our Catmull-Rom resize against PIL's
/// `BICUBIC` on the same crops.
#[test]
fn bicubic_resize_matches_pil_bicubic_on_photos() {
    let mut sources: Vec<_> = photos(2).iter().map(|p| decode_file(p, Scale::Quarter)).collect();
    sources.extend(imagenet_like(4).iter().map(|p| decode_file(p, Scale::Full)));
    let mut reference = Reference::new("bicubic");
    let mut ours = Vec::new();
    let mut resizer = Resizer::new();
    for (i, src) in sources.iter().enumerate() {
        let name = reference.add_image(src.as_bytes());
        let (w, h) = (src.width(), src.height());
        for (v, spec) in [ViewSpec::dino_global(0), ViewSpec::dino_local()].iter().enumerate() {
            let p = spec.sample(w, h, &mut KeyedRng::new(&[i as u64, v as u64]));
            let (ow, oh) = (spec.width, spec.height);
            let crop = CropBox::from(p.crop);
            let mut out = vec![0u8; (ow * oh * 3) as usize];
            resizer.resize_crop(src, &crop, &mut out, ow, oh, p.interpolation, p.flip).unwrap();
            let mut linear = vec![0u8; out.len()];
            let bilinear = Interpolation::Bilinear;
            resizer.resize_crop(src, &crop, &mut linear, ow, oh, bilinear, p.flip).unwrap();
            let pil =
                reference.resize(&name, w, h, p.crop, (ow, oh), p.flip, Some(p.interpolation));
            ours.push((pil, p.crop, out, linear));
        }
    }
    let refs = reference.run();
    let (mut worst, mut bilinear_mean) = (Diff::default(), 0.0);
    for (pil, crop, out, linear) in &ours {
        let d = diff(out, &refs[*pil]);
        assert!(d.max <= BICUBIC_MAX_LEVELS, "crop {crop:?} vs PIL bicubic: {d:?}");
        worst = worst.worst(d);
        bilinear_mean += diff(linear, &refs[*pil]).mean / ours.len() as f64;
    }
    eprintln!("bicubic resize over {} views: vs PIL {worst:?}", ours.len());
    assert!(worst.mean <= BICUBIC_MEAN_LEVELS, "{worst:?}");
    // The filter matters: bilinear views of the same crops are much farther from PIL's bicubic.
    assert!(bilinear_mean > 2.0 * worst.mean, "bilinear {bilinear_mean} vs {worst:?}");
}
