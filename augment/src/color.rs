//! CPU colour operations on float images in `[0, 1]`, planar `[3, H, W]` (CHW).
//!
//! Each op reproduces torchvision 0.26's tensor op on a float32 image
//! (`torchvision.transforms._functional_tensor`), down to the order of float operations, so results
//! agree to a few ulps (the integration tests measure it):
//!
//! - brightness `f`: `clamp(f * x, 0, 1)`;
//! - contrast `f`: `clamp(f * x + (1 - f) * m, 0, 1)` with `m` the mean of the grayscale image;
//! - saturation `f`: `clamp(f * x + (1 - f) * gray, 0, 1)` per pixel;
//! - hue `s`: RGB -> HSV (`_rgb2hsv`), `h = (h + s) mod 1`, HSV -> RGB (`_hsv2rgb`);
//! - grayscale: `gray = 0.2989 R + 0.587 G + 0.114 B` ([`GRAY_WEIGHTS`], torchvision's float
//!   weights, not PIL's 0.299) written to all three channels;
//! - solarize `t`: `x >= t ? 1 - x : x`.
//!
//! `(1 - f)` is evaluated in f64 and rounded to f32, as PyTorch does with a Python float scalar.

use crate::params::{ColorJitter, JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION};
use crate::simd::simd_kernel;

/// Luma weights of torchvision's `rgb_to_grayscale` on float tensors (R, G, B).
pub const GRAY_WEIGHTS: [f32; 3] = [0.2989, 0.587, 0.114];

/// Splits a CHW image into its three planes.
///
/// # Panics
/// If the length is not a multiple of 3.
pub(crate) fn planes(chw: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32]) {
    assert!(chw.len().is_multiple_of(3), "CHW image of {} floats is not 3 planes", chw.len());
    let n = chw.len() / 3;
    let (r, gb) = chw.split_at_mut(n);
    let (g, b) = gb.split_at_mut(n);
    (r, g, b)
}

/// `min(max(x, 0), 1)` as two selects (maps NaN to 0).
#[inline(always)]
fn clamp01(x: f32) -> f32 {
    let x = if x > 0.0 { x } else { 0.0 };
    if x < 1.0 { x } else { 1.0 }
}

#[inline(always)]
fn gray(r: f32, g: f32, b: f32) -> f32 {
    GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b
}

/// `1 - f` the way PyTorch gets it from a Python float.
fn one_minus(f: f32) -> f32 {
    (1.0 - f64::from(f)) as f32
}

simd_kernel! {
    fn scale_clamp / scale_clamp_portable(x: &mut [f32], f: f32) {
        for v in x {
            *v = clamp01(f * *v);
        }
    }
}

simd_kernel! {
    fn blend_const / blend_const_portable(x: &mut [f32], f: f32, c: f32) {
        for v in x {
            *v = clamp01(f * *v + c);
        }
    }
}

simd_kernel! {
    fn gray_sum / gray_sum_portable(r: &[f32], g: &[f32], b: &[f32]) -> f64 {
        // Eight f32 lanes summed over blocks of 1024 pixels, then flushed to f64: vectorizes, and
        // stays within ~1e-7 of the exact mean.
        let mut total = 0.0f64;
        for ((r, g), b) in r.chunks(1024).zip(g.chunks(1024)).zip(b.chunks(1024)) {
            let mut acc = [0.0f32; 8];
            let lanes = r.chunks_exact(8).zip(g.chunks_exact(8)).zip(b.chunks_exact(8));
            for ((r8, g8), b8) in lanes {
                for k in 0..8 {
                    acc[k] += gray(r8[k], g8[k], b8[k]);
                }
            }
            let tail = r.len() / 8 * 8;
            let rest: f32 = (tail..r.len()).map(|i| gray(r[i], g[i], b[i])).sum();
            total += acc.iter().map(|&a| f64::from(a)).sum::<f64>() + f64::from(rest);
        }
        total
    }
}

simd_kernel! {
    fn saturation_kernel / saturation_portable(r: &mut [f32], g: &mut [f32], b: &mut [f32], f: f32) {
        let c = one_minus(f);
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let l = c * gray(*r, *g, *b);
            *r = clamp01(f * *r + l);
            *g = clamp01(f * *g + l);
            *b = clamp01(f * *b + l);
        }
    }
}

simd_kernel! {
    fn grayscale_kernel / grayscale_portable(r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let l = gray(*r, *g, *b);
            (*r, *g, *b) = (l, l, l);
        }
    }
}

simd_kernel! {
    fn solarize_kernel / solarize_portable(x: &mut [f32], threshold: f32) {
        for v in x {
            // `+ 0.0` (not foldable: it turns -0 into +0) keeps the store unconditional; storing
            // the unchanged value would become a masked store, microcoded and slow on AMD.
            *v = if *v >= threshold { 1.0 - *v } else { *v + 0.0 };
        }
    }
}

simd_kernel! {
    fn hue_kernel / hue_portable(r: &mut [f32], g: &mut [f32], b: &mut [f32], shift: f32) {
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let (h, s, v) = rgb2hsv(*r, *g, *b);
            let h = remainder1(h + shift);
            (*r, *g, *b) = hsv2rgb(h, s, v);
        }
    }
}

/// torchvision's `_rgb2hsv` for one pixel (same operations, same order).
#[inline(always)]
fn rgb2hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = if r > g { r } else { g };
    let maxc = if maxc > b { maxc } else { b };
    let minc = if r < g { r } else { g };
    let minc = if minc < b { minc } else { b };
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let crd = if eqc { 1.0 } else { cr };
    let rc = (maxc - r) / crd;
    let gc = (maxc - g) / crd;
    let bc = (maxc - b) / crd;
    let hr = if maxc == r { bc - gc } else { 0.0 };
    let hg = if maxc == g && maxc != r { 2.0 + rc - bc } else { 0.0 };
    let hb = if maxc != g && maxc != r { 4.0 + gc - rc } else { 0.0 };
    let h = hr + hg + hb;
    // fmod(h / 6 + 1, 1): h is in [-1, 5], so the argument is in [5/6, 11/6) and fmod is exact.
    let x = h / 6.0 + 1.0;
    let h = if x >= 1.0 { x - 1.0 } else { x };
    (h, s, maxc)
}

/// `torch.remainder(a, 1.0)` for `a` in `[-0.5, 1.5]`: `fmod`, plus 1 when negative.
#[inline(always)]
fn remainder1(a: f32) -> f32 {
    if a < 0.0 {
        a + 1.0
    } else if a >= 1.0 {
        a - 1.0
    } else {
        a
    }
}

/// torchvision's `_hsv2rgb` for one pixel.
#[inline(always)]
fn hsv2rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let p = clamp01(v * (1.0 - s));
    let q = clamp01(v * (1.0 - s * f));
    let t = clamp01(v * (1.0 - s * (1.0 - f)));
    // i is in 0..=6; sector 6 is sector 0 (i % 6).
    let i = if i >= 6.0 { 0.0 } else { i };
    let r = if i == 0.0 || i == 5.0 {
        v
    } else if i == 1.0 {
        q
    } else if i == 4.0 {
        t
    } else {
        p
    };
    let g = if i == 1.0 || i == 2.0 {
        v
    } else if i == 0.0 {
        t
    } else if i == 3.0 {
        q
    } else {
        p
    };
    let b = if i == 3.0 || i == 4.0 {
        v
    } else if i == 2.0 {
        t
    } else if i == 5.0 {
        q
    } else {
        p
    };
    (r, g, b)
}

/// torchvision `adjust_brightness`: `clamp(factor * x, 0, 1)`.
///
/// # Panics
/// If `chw.len()` is not a multiple of 3.
pub fn adjust_brightness(chw: &mut [f32], factor: f32) {
    assert!(chw.len().is_multiple_of(3), "adjust_brightness: {} floats is not 3 planes", chw.len());
    scale_clamp(chw, factor);
}

/// The mean of the grayscale image ([`GRAY_WEIGHTS`]), accumulated in f64.
///
/// # Panics
/// If `chw.len()` is not a multiple of 3.
pub fn mean_gray(chw: &mut [f32]) -> f32 {
    let (r, g, b) = planes(chw);
    if r.is_empty() {
        return 0.0;
    }
    (gray_sum(r, g, b) / r.len() as f64) as f32
}

/// torchvision `adjust_contrast`: blend with the mean of the grayscale image.
///
/// # Panics
/// If `chw.len()` is not a multiple of 3.
pub fn adjust_contrast(chw: &mut [f32], factor: f32) {
    let mean = mean_gray(chw);
    blend_const(chw, factor, one_minus(factor) * mean);
}

/// torchvision `adjust_saturation`: blend each pixel with its gray value.
///
/// # Panics
/// If `chw.len()` is not a multiple of 3.
pub fn adjust_saturation(chw: &mut [f32], factor: f32) {
    let (r, g, b) = planes(chw);
    saturation_kernel(r, g, b, factor);
}

/// torchvision `adjust_hue`: rotate the hue by `shift` turns (in `[-0.5, 0.5]`) through HSV.
///
/// # Panics
/// If `chw.len()` is not a multiple of 3, or `shift` is outside `[-0.5, 0.5]`.
pub fn adjust_hue(chw: &mut [f32], shift: f32) {
    assert!((-0.5..=0.5).contains(&shift), "adjust_hue: shift {shift} outside [-0.5, 0.5]");
    let (r, g, b) = planes(chw);
    hue_kernel(r, g, b, shift);
}

/// torchvision `rgb_to_grayscale(num_output_channels=3)`, in place.
///
/// # Panics
/// If `chw.len()` is not a multiple of 3.
pub fn rgb_to_grayscale(chw: &mut [f32]) {
    let (r, g, b) = planes(chw);
    grayscale_kernel(r, g, b);
}

/// torchvision `solarize`: invert every value `>= threshold`.
pub fn solarize(chw: &mut [f32], threshold: f32) {
    solarize_kernel(chw, threshold);
}

/// Applies a [`ColorJitter`] in its order; factors of exactly 1 and a hue shift of exactly 0 are
/// skipped (torchvision skips ops of strength 0).
///
/// # Panics
/// If `chw.len()` is not a multiple of 3, or the hue shift is outside `[-0.5, 0.5]`.
pub fn color_jitter(chw: &mut [f32], jitter: &ColorJitter) {
    for op in jitter.order {
        match op {
            JITTER_BRIGHTNESS if jitter.brightness != 1.0 => {
                adjust_brightness(chw, jitter.brightness)
            }
            JITTER_CONTRAST if jitter.contrast != 1.0 => adjust_contrast(chw, jitter.contrast),
            JITTER_SATURATION if jitter.saturation != 1.0 => {
                adjust_saturation(chw, jitter.saturation)
            }
            crate::params::JITTER_HUE if jitter.hue != 0.0 => adjust_hue(chw, jitter.hue),
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "color_tests.rs"]
mod tests;
