//! RandomResizedCrop sampling with torchvision's semantics, from the image size alone.

use crate::geometry::Rect;
use crate::rng::KeyedRng;

/// How many (area, aspect) draws are tried before the central fallback, as in torchvision.
pub const RRC_ATTEMPTS: u32 = 10;

/// Draws a RandomResizedCrop rectangle for a `width` x `height` image, exactly as torchvision's
/// `RandomResizedCrop.get_params` does (with this crate's generator instead of torch's):
///
/// 1. up to [`RRC_ATTEMPTS`] times: area `A * U(scale)`, aspect `exp(U(ln ratio.0, ln ratio.1))`,
///    `w = round(sqrt(area * aspect))`, `h = round(sqrt(area / aspect))` (round half to even, like
///    Python's `round`); if `0 < w <= width` and `0 < h <= height`, the top-left corner is drawn
///    uniformly among the integer positions that keep the crop inside;
/// 2. otherwise a central crop: the whole width with `h = round(width / ratio.0)` when the image is
///    narrower than `ratio.0`, the whole height with `w = round(height * ratio.1)` when it is wider
///    than `ratio.1`, else the whole image.
///
/// The result always lies inside the image and is never empty.
///
/// # Panics
/// If `width` or `height` is 0, or the ranges are not finite and positive with `lo <= hi`
/// (validate them with [`crate::ViewSpec::validate`]).
pub fn random_resized_crop(
    width: u32,
    height: u32,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut KeyedRng,
) -> Rect {
    assert!(width > 0 && height > 0, "random_resized_crop of an empty {width}x{height} image");
    let (s0, s1) = (f64::from(scale.0), f64::from(scale.1));
    let (r0, r1) = (f64::from(ratio.0), f64::from(ratio.1));
    assert!(s0 > 0.0 && s0 <= s1 && s1.is_finite(), "random_resized_crop scale {scale:?}");
    assert!(r0 > 0.0 && r0 <= r1 && r1.is_finite(), "random_resized_crop ratio {ratio:?}");
    let (wf, hf) = (f64::from(width), f64::from(height));
    let area = wf * hf;
    let (log_r0, log_r1) = (r0.ln(), r1.ln());
    for _ in 0..RRC_ATTEMPTS {
        let target_area = area * rng.uniform(s0, s1);
        let aspect = rng.uniform(log_r0, log_r1).exp();
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if w > 0.0 && w <= wf && h > 0.0 && h <= hf {
            let (w, h) = (w as u32, h as u32);
            let y = rng.below(u64::from(height - h) + 1) as u32;
            let x = rng.below(u64::from(width - w) + 1) as u32;
            return Rect::new(x, y, w, h);
        }
    }
    central_fallback(width, height, r0, r1)
}

/// torchvision's fallback: a central crop with the aspect clamped to `[r0, r1]`.
fn central_fallback(width: u32, height: u32, r0: f64, r1: f64) -> Rect {
    let (wf, hf) = (f64::from(width), f64::from(height));
    let in_ratio = wf / hf;
    let (w, h) = if in_ratio < r0 {
        (width, ((wf / r0).round_ties_even() as u32).clamp(1, height))
    } else if in_ratio > r1 {
        (((hf * r1).round_ties_even() as u32).clamp(1, width), height)
    } else {
        (width, height)
    };
    Rect::new((width - w) / 2, (height - h) / 2, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SCALE: (f32, f32) = (0.2, 1.0);
    const RATIO: (f32, f32) = (3.0 / 4.0, 4.0 / 3.0);

    #[test]
    fn fallback_matches_torchvision_arithmetic() {
        // A 1000x10 strip is wider than 4/3: h = 10, w = round(10 * 4/3) = 13, centred.
        assert_eq!(central_fallback(1000, 10, 0.75, 4.0 / 3.0), Rect::new(493, 0, 13, 10));
        // A 10x1000 strip: w = 10, h = round(10 / 0.75) = 13.
        assert_eq!(central_fallback(10, 1000, 0.75, 4.0 / 3.0), Rect::new(0, 493, 10, 13));
        assert_eq!(central_fallback(40, 40, 0.75, 4.0 / 3.0), Rect::new(0, 0, 40, 40));
    }

    #[test]
    fn area_follows_the_distribution() {
        // On a large square image every draw with area fraction below 0.75 fits (0.75 * 4/3 = 1),
        // so below 0.7 the fraction is uniform on [0.2, 0.7): mean 0.45.
        let (mut sum, mut n) = (0.0, 0);
        for i in 0..20_000 {
            let r = random_resized_crop(2000, 2000, SCALE, RATIO, &mut KeyedRng::new(&[1, i]));
            let frac = f64::from(r.w) * f64::from(r.h) / 4.0e6;
            if frac < 0.7 {
                sum += frac;
                n += 1;
            }
        }
        assert!((sum / f64::from(n) - 0.45).abs() < 0.005, "mean area {}", sum / f64::from(n));
    }

    #[test]
    fn one_pixel_image() {
        let r = random_resized_crop(1, 1, SCALE, RATIO, &mut KeyedRng::new(&[0]));
        assert_eq!(r, Rect::new(0, 0, 1, 1));
    }

    proptest! {
        #[test]
        fn crop_inside_image_aspect_in_range(
            w in 1u32..5000, h in 1u32..5000, key in any::<u64>(),
        ) {
            let r = random_resized_crop(w, h, SCALE, RATIO, &mut KeyedRng::new(&[key]));
            prop_assert!(r.fits_in(w, h), "{:?} in {}x{}", r, w, h);
            let aspect = f64::from(r.w) / f64::from(r.h);
            let fallback = central_fallback(w, h, 0.75, 4.0 / 3.0);
            // Accepted draws have aspect in range up to rounding of w and h to integers.
            let slack = 0.5 / f64::from(r.h.min(r.w)) * 3.0;
            prop_assert!(
                r == fallback || (aspect >= 0.75 - slack && aspect <= 4.0 / 3.0 + slack),
                "{:?} aspect {} in {}x{}", r, aspect, w, h
            );
        }

        #[test]
        fn extreme_images_reach_the_fallback(long in 200u32..5000, short in 1u32..8, key in any::<u64>()) {
            // With scale >= 0.2, a crop of a long thin strip cannot have its aspect in [3/4, 4/3].
            let r = random_resized_crop(long, short, SCALE, RATIO, &mut KeyedRng::new(&[key]));
            prop_assert_eq!(r, central_fallback(long, short, 0.75, 4.0 / 3.0));
            let r = random_resized_crop(short, long, SCALE, RATIO, &mut KeyedRng::new(&[key]));
            prop_assert_eq!(r, central_fallback(short, long, 0.75, 4.0 / 3.0));
        }
    }
}
