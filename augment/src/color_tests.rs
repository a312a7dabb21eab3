//! Unit tests of the colour ops (in their own file to keep color.rs short).

use super::*;
use crate::rng::KeyedRng;

fn random_image(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = KeyedRng::new(&[seed]);
    let mut v: Vec<f32> = (0..3 * n).map(|_| rng.next_f64() as f32).collect();
    // Some exact ties and extremes: gray pixels, saturated channels, zeros.
    for i in (0..n).step_by(7) {
        v[n + i] = v[i];
        v[2 * n + i] = v[i];
    }
    for i in (0..n).step_by(11) {
        v[i] = 1.0;
        v[2 * n + i] = 0.0;
    }
    v
}

#[test]
fn simd_builds_match_portable_bit_for_bit() {
    for seed in 0..4 {
        let img = random_image(1000 + seed as usize, seed);
        let n = img.len() / 3;
        let check = |name: &str, a: &[f32], b: &[f32]| {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{name}: SIMD build differs from the portable build");
        };
        let (mut a, mut b) = (img.clone(), img.clone());
        scale_clamp(&mut a, 1.37);
        scale_clamp_portable(&mut b, 1.37);
        check("brightness", &a, &b);
        let (mut a, mut b) = (img.clone(), img.clone());
        blend_const(&mut a, 0.7, 0.1);
        blend_const_portable(&mut b, 0.7, 0.1);
        check("contrast", &a, &b);
        let (mut a, mut b) = (img.clone(), img.clone());
        {
            let (r, g, bb) = planes(&mut a);
            saturation_kernel(r, g, bb, 1.3);
        }
        {
            let (r, g, bb) = planes(&mut b);
            saturation_portable(r, g, bb, 1.3);
        }
        check("saturation", &a, &b);
        let (mut a, mut b) = (img.clone(), img.clone());
        {
            let (r, g, bb) = planes(&mut a);
            hue_kernel(r, g, bb, -0.07);
        }
        {
            let (r, g, bb) = planes(&mut b);
            hue_portable(r, g, bb, -0.07);
        }
        check("hue", &a, &b);
        let (mut a, mut b) = (img.clone(), img.clone());
        {
            let (r, g, bb) = planes(&mut a);
            grayscale_kernel(r, g, bb);
        }
        {
            let (r, g, bb) = planes(&mut b);
            grayscale_portable(r, g, bb);
        }
        check("grayscale", &a, &b);
        let (mut a, mut b) = (img.clone(), img.clone());
        solarize_kernel(&mut a, 0.5);
        solarize_portable(&mut b, 0.5);
        check("solarize", &a, &b);
        let (r, g, bb) = (&img[..n], &img[n..2 * n], &img[2 * n..]);
        assert_eq!(gray_sum(r, g, bb).to_bits(), gray_sum_portable(r, g, bb).to_bits());
    }
}

#[test]
fn known_values() {
    let mut px = vec![0.5, 0.2, 0.9, 0.1, 0.6, 0.0];
    adjust_brightness(&mut px, 1.5);
    assert_eq!(px, [0.75, 0.3, 1.0, 0.15, 0.90000004, 0.0]);
    let mut px = vec![1.0, 0.0, 0.0];
    rgb_to_grayscale(&mut px);
    assert_eq!(px, [0.2989; 3]);
    let mut px = vec![0.2, 0.5, 0.7];
    solarize(&mut px, 0.5);
    assert_eq!(px, [0.2, 0.5, 0.3]);
    // Contrast 0 gives the gray mean everywhere; saturation 0 gives the gray image.
    let mut px = vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    adjust_contrast(&mut px, 0.0);
    let m = (0.2989f32 + 0.587) / 2.0;
    assert!(px.iter().all(|&v| (v - m).abs() < 1e-7), "{px:?}");
    let mut px = vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    adjust_saturation(&mut px, 0.0);
    assert_eq!(px, [0.2989, 0.587, 0.2989, 0.587, 0.2989, 0.587]);
}

#[test]
fn hue_rotates_primaries() {
    // Pure red, shifted by a third of a turn, is pure green; by two thirds, pure blue.
    let mut px = vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    adjust_hue(&mut px, 1.0 / 3.0);
    adjust_hue(&mut px[..], 0.0);
    let (r, g, b) = (px[0], px[2], px[4]);
    assert!(r.abs() < 1e-6 && (g - 1.0).abs() < 1e-6 && b.abs() < 1e-6, "{px:?}");
    let mut px = vec![1.0, 0.0, 0.0];
    adjust_hue(&mut px, -1.0 / 3.0);
    assert!(px[0].abs() < 1e-6 && px[1].abs() < 1e-6 && (px[2] - 1.0).abs() < 1e-6, "{px:?}");
}

#[test]
fn hue_round_trip_is_near_identity() {
    let img = random_image(5000, 9);
    let mut out = img.clone();
    adjust_hue(&mut out, 0.0);
    let max = img.iter().zip(&out).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(max < 1e-6, "max {max}");
    // +s then -s comes back too.
    adjust_hue(&mut out, 0.25);
    adjust_hue(&mut out, -0.25);
    let max = img.iter().zip(&out).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(max < 1e-5, "max {max}");
}

#[test]
fn jitter_identity_is_exact_and_order_matters() {
    let img = random_image(500, 4);
    let mut out = img.clone();
    color_jitter(&mut out, &ColorJitter::IDENTITY);
    assert_eq!(out, img);
    let j = ColorJitter {
        brightness: 1.3,
        contrast: 0.7,
        saturation: 1.2,
        hue: 0.05,
        order: [0, 1, 2, 3],
    };
    let (mut a, mut b) = (img.clone(), img.clone());
    color_jitter(&mut a, &j);
    color_jitter(&mut b, &ColorJitter { order: [3, 2, 1, 0], ..j });
    assert_ne!(a, b);
    assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
#[should_panic(expected = "3 planes")]
fn wrong_length_panics() {
    adjust_brightness(&mut [0.0; 4], 1.0);
}
