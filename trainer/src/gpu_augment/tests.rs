//! The batched tensor ops against `regioncl_augment`'s CPU ops (themselves checked against
//! torchvision 0.26 in the augment crate) on the same parameters, on every test device, with the
//! input pixels as the loader gives them or as a strided view, inside a bf16 autocast region and
//! with a channels_last output.

use regioncl_augment::{
    BlurScratch, ColorJitter, KeyedRng, Normalize, ViewParams, ViewSpec, apply_color_ops,
    hwc_to_chw_f32,
};
use tch::{Device, Kind, Tensor};

use super::{ColourOptions, colour_batch};
use crate::runtime::test_devices;
use crate::shim::{AutocastGuard, is_channels_last};

/// How [`check`] hands the batch over.
#[derive(Clone, Copy, Debug)]
struct Case {
    device: Device,
    /// The pixels as a non-contiguous view (the batch's channel planes of a `[B, 3, H, W]`
    /// channels_last tensor, permuted back to NHWC) rather than a contiguous NHWC tensor.
    strided: bool,
    /// Inside a bf16 autocast region of the device (the trainer's step is one).
    bf16_region: bool,
    channels_last: bool,
}

/// Every device, alone and in the reduced-precision setting.
fn cases() -> Vec<Case> {
    test_devices()
        .into_iter()
        .flat_map(|device| {
            let plain = Case { device, strided: false, bf16_region: false, channels_last: false };
            [plain, Case { strided: true, bf16_region: true, channels_last: true, ..plain }]
        })
        .collect()
}

/// Random pixels, with a flat gray square and a saturated red square (HSV edge cases).
fn pixels(b: i64, h: i64, w: i64, seed: u64) -> Vec<u8> {
    let mut rng = KeyedRng::new(&[seed]);
    let mut v: Vec<u8> = (0..b * h * w * 3).map(|_| rng.below(256) as u8).collect();
    for s in 0..b {
        for y in 0..h / 4 {
            for x in 0..w / 4 {
                let o = (((s * h + y) * w + x) * 3) as usize;
                v[o..o + 3].copy_from_slice(&[120, 120, 120]);
                let o = (((s * h + y + h / 2) * w + x) * 3) as usize;
                v[o..o + 3].copy_from_slice(&[250, 3, 3]);
            }
        }
    }
    v
}

fn cpu_reference(hwc: &[u8], h: u32, w: u32, p: &ViewParams, flip: bool) -> Vec<f32> {
    let mut src = hwc.to_vec();
    if flip && p.flip {
        for row in src.chunks_exact_mut(w as usize * 3) {
            let px: Vec<[u8; 3]> = row.chunks_exact(3).rev().map(|c| [c[0], c[1], c[2]]).collect();
            row.copy_from_slice(px.concat().as_slice());
        }
    }
    let mut chw = vec![0f32; src.len()];
    hwc_to_chw_f32(&src, &mut chw);
    apply_color_ops(&mut chw, w, h, p, &mut BlurScratch::new());
    Normalize::IMAGENET.apply(&mut chw);
    chw
}

fn check(params: &[ViewParams], h: i64, w: i64, flip: bool, seed: u64) {
    for case in cases() {
        check_case(params, h, w, flip, seed, case);
    }
}

fn check_case(params: &[ViewParams], h: i64, w: i64, flip: bool, seed: u64, case: Case) {
    let b = params.len() as i64;
    let raw = pixels(b, h, w, seed);
    let nhwc = Tensor::from_slice(&raw).view([b, h, w, 3]).to_device(case.device);
    let t = if case.strided {
        // The same pixels, stored as a channels_last [B, 3, H, W] tensor and viewed as NHWC.
        let cl = crate::shim::to_channels_last(&nhwc.permute([0, 3, 1, 2]).contiguous()).unwrap();
        cl.permute([0, 2, 3, 1])
    } else {
        nhwc
    };
    let opts =
        ColourOptions { flip, channels_last: case.channels_last, ..ColourOptions::default() };
    let out = {
        let _bf16 = case
            .bf16_region
            .then(|| AutocastGuard::new(case.device, Kind::BFloat16, true).unwrap());
        colour_batch(&t, params, &opts).unwrap()
    };
    assert_eq!(out.size(), [b, 3, h, w]);
    assert_eq!(out.kind(), Kind::Float, "{case:?}");
    assert_eq!(is_channels_last(&out), case.channels_last, "{case:?}");
    let out = out.to_device(Device::Cpu);
    let n = (h * w * 3) as usize;
    let mut worst = 0f32;
    for (i, p) in params.iter().enumerate() {
        let expect = cpu_reference(&raw[i * n..(i + 1) * n], h as u32, w as u32, p, flip);
        let got: Vec<f32> = Vec::try_from(out.get(i as i64).contiguous().flatten(0, -1)).unwrap();
        let diff = got.iter().zip(&expect).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "{case:?} sample {i} {p:?}: max |diff| {diff}");
        worst = worst.max(diff);
    }
    eprintln!("colour_batch vs CPU ops ({case:?}): max |diff| {worst:e} over {b} samples");
}

#[test]
fn mocov2_params_match_cpu_ops() {
    // Jitter, grayscale, blur and solarize often, flips on; 24 samples of 40x36.
    let spec = ViewSpec {
        jitter_p: 0.9,
        grayscale_p: 0.3,
        blur_p: 0.6,
        solarize_p: 0.3,
        hue: 0.5,
        ..ViewSpec::mocov2(40)
    };
    let params: Vec<ViewParams> =
        (0..24).map(|i| spec.sample(300, 200, &mut KeyedRng::new(&[9, i]))).collect();
    assert!(params.iter().any(|p| p.blur_sigma.is_some()) && params.iter().any(|p| p.solarize));
    check(&params, 36, 40, true, 1);
    check(&params, 36, 40, false, 2);
}

#[test]
fn each_op_alone() {
    let base = ViewParams::crop_only(regioncl_augment::Rect::new(0, 0, 1, 1));
    let j = |brightness, contrast, saturation, hue, order| ColorJitter {
        brightness,
        contrast,
        saturation,
        hue,
        order,
    };
    let params = vec![
        base,
        ViewParams { jitter: Some(j(1.3, 1.0, 1.0, 0.0, [0, 1, 2, 3])), ..base },
        ViewParams { jitter: Some(j(1.0, 0.6, 1.0, 0.0, [1, 0, 2, 3])), ..base },
        ViewParams { jitter: Some(j(1.0, 1.0, 1.4, 0.0, [2, 1, 0, 3])), ..base },
        ViewParams { jitter: Some(j(1.0, 1.0, 1.0, -0.45, [3, 2, 1, 0])), ..base },
        ViewParams { jitter: Some(j(0.7, 1.2, 0.8, 0.08, [3, 0, 2, 1])), ..base },
        ViewParams { grayscale: true, ..base },
        ViewParams { blur_sigma: Some(0.1), ..base },
        ViewParams { blur_sigma: Some(2.0), flip: true, ..base },
        ViewParams { solarize: true, ..base },
    ];
    check(&params, 16, 20, true, 3);
}

#[test]
fn identity_params_only_normalise() {
    let base = ViewParams::crop_only(regioncl_augment::Rect::new(0, 0, 1, 1));
    for device in test_devices() {
        let t = Tensor::from_slice(&pixels(2, 8, 8, 4)).view([2, 8, 8, 3]).to_device(device);
        let opts = ColourOptions { channels_last: true, ..ColourOptions::default() };
        let out = colour_batch(&t, &[base, base], &opts).unwrap();
        assert!(is_channels_last(&out));
        let mean = Tensor::from_slice(&regioncl_augment::IMAGENET_MEAN).view([1, 3, 1, 1]);
        let std = Tensor::from_slice(&regioncl_augment::IMAGENET_STD).view([1, 3, 1, 1]);
        let px = t.to_device(Device::Cpu).permute([0, 3, 1, 2]).to_kind(Kind::Float);
        let expect = (px / 255.0 - mean) / std;
        assert!(out.to_device(Device::Cpu).allclose(&expect, 1e-6, 1e-6, false), "{device:?}");
        assert!(colour_batch(&t, &[base], &opts).is_err());
    }
}

/// Blurs of very different widths in one batch (3 to 25 taps): each sample gets its own kernel,
/// the narrow ones padded with zero taps, on every device and inside a bf16 region.
#[test]
fn blur_widths_mix_in_one_batch() {
    let base = ViewParams::crop_only(regioncl_augment::Rect::new(0, 0, 1, 1));
    let params: Vec<ViewParams> = [0.2f32, 4.0, 1.0, 0.5]
        .iter()
        .map(|&s| ViewParams { blur_sigma: Some(s), ..base })
        .collect();
    check(&params, 30, 28, false, 5);
}
