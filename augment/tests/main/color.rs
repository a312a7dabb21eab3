//! CPU colour ops against torchvision's tensor functional ops on float images.

use regioncl_augment::{
    BlurScratch, CropBox, JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION, KeyedRng,
    Normalize, RgbImage, Scale, ViewOutput, ViewParams, ViewScratch, ViewSpec, hwc_to_chw_f32,
    render_view,
};

use crate::common::{Op, Reference, decode_file, diff, f32s, imagenet_like, photos};

/// Max absolute error on `[0, 1]` values for the exactly reproduced ops (same f32 operations in
/// the same order as torchvision: brightness, saturation, grayscale, solarize, normalize, hue).
const EXACT_OPS_MAX: f64 = 1e-6;
/// Contrast (the image mean is summed in another order) and blur (separable vs 2-D kernel).
const REDUCTION_OPS_MAX: f64 = 2e-6;
/// A whole sampled MoCo v2 view after normalisation (values up to ~2.6): the small differences
/// above, carried through up to six ops and divided by std ~0.225.
const PIPELINE_MAX: f64 = 2e-5;
const PIPELINE_MEAN: f64 = 2e-6;

/// Real photos, each with a sampled MoCo v2 view (jitter forced on for half of them, solarize for
/// a third, to cover every op).
fn views(n: usize) -> Vec<(RgbImage, ViewParams)> {
    let mut sources: Vec<_> =
        photos(n / 2).iter().map(|p| decode_file(p, Scale::Quarter)).collect();
    sources.extend(imagenet_like(n - n / 2).iter().map(|p| decode_file(p, Scale::Full)));
    sources
        .into_iter()
        .enumerate()
        .map(|(i, src)| {
            let spec = ViewSpec {
                jitter_p: if i % 2 == 0 { 1.0 } else { 0.8 },
                solarize_p: if i % 3 == 0 { 1.0 } else { 0.0 },
                ..ViewSpec::mocov2(224)
            };
            let p = spec.sample(src.width(), src.height(), &mut KeyedRng::new(&[7, i as u64]));
            (src, p)
        })
        .collect()
}

fn render_u8(src: &RgbImage, p: &ViewParams, scratch: &mut ViewScratch) -> Vec<u8> {
    let mut out = vec![0u8; 224 * 224 * 3];
    let view = ViewOutput::U8Hwc { pixels: &mut out, width: 224, height: 224 };
    render_view(src, &CropBox::from(p.crop), p, view, scratch).unwrap();
    out
}

#[test]
fn single_ops_match_torchvision() {
    let ops = [
        Op::Brightness(0.6),
        Op::Brightness(1.4),
        Op::Contrast(0.6),
        Op::Contrast(1.4),
        Op::Saturation(0.6),
        Op::Saturation(1.4),
        Op::Hue(-0.1),
        Op::Hue(0.1),
        Op::Hue(0.0123),
        Op::Hue(0.5),
        Op::Hue(-0.5),
        Op::Grayscale,
        Op::Blur(0.1),
        Op::Blur(0.73),
        Op::Blur(2.0),
        Op::Solarize(0.5),
        Op::Normalize,
    ];
    let mut reference = Reference::new("color-ops");
    let mut ours = Vec::new();
    let mut scratch = ViewScratch::new();
    let mut blur = BlurScratch::new();
    for (src, p) in views(4) {
        let u8s = render_u8(&src, &p, &mut scratch);
        let name = reference.add_image(&u8s);
        for op in ops {
            let mut chw = vec![0f32; u8s.len()];
            hwc_to_chw_f32(&u8s, &mut chw);
            op.apply(&mut chw, 224, 224, &mut blur);
            ours.push((reference.color(&name, 224, 224, &[op]), op, chw));
        }
    }
    let refs = reference.run();
    for (id, op, chw) in &ours {
        let d = diff(chw, &f32s(&refs[*id]));
        let tol = match op {
            Op::Contrast(_) | Op::Blur(_) => REDUCTION_OPS_MAX,
            // normalize divides by std ~0.225
            Op::Normalize => EXACT_OPS_MAX * 5.0,
            _ => EXACT_OPS_MAX,
        };
        eprintln!("{op:?}: {d:?}");
        assert!(d.max <= tol, "{op:?} (case {id}): {d:?} exceeds {tol}");
    }
}

#[test]
fn sampled_mocov2_views_match_torchvision() {
    let mut reference = Reference::new("color-views");
    let mut ours = Vec::new();
    let mut scratch = ViewScratch::new();
    for (src, p) in views(12) {
        let u8s = render_u8(&src, &p, &mut scratch);
        let name = reference.add_image(&u8s);
        let mut f = vec![0f32; 3 * 224 * 224];
        let out = ViewOutput::F32Chw {
            pixels: &mut f,
            width: 224,
            height: 224,
            normalize: Normalize::IMAGENET,
        };
        render_view(&src, &CropBox::from(p.crop), &p, out, &mut scratch).unwrap();
        let mut ops = Vec::new();
        if let Some(j) = p.jitter {
            for o in j.order {
                ops.push(match o {
                    JITTER_BRIGHTNESS => Op::Brightness(j.brightness),
                    JITTER_CONTRAST => Op::Contrast(j.contrast),
                    JITTER_SATURATION => Op::Saturation(j.saturation),
                    _ => Op::Hue(j.hue),
                });
            }
        }
        if p.grayscale {
            ops.push(Op::Grayscale);
        }
        if let Some(s) = p.blur_sigma {
            ops.push(Op::Blur(s));
        }
        if p.solarize {
            ops.push(Op::Solarize(0.5));
        }
        ops.push(Op::Normalize);
        ours.push((reference.color(&name, 224, 224, &ops), p, f));
    }
    let refs = reference.run();
    for (id, p, f) in &ours {
        let d = diff(f, &f32s(&refs[*id]));
        eprintln!("view {id}: {d:?}");
        assert!(d.max <= PIPELINE_MAX && d.mean <= PIPELINE_MEAN, "{p:?}: {d:?}");
    }
}
