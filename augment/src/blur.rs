//! Gaussian blur of a planar float image, as torchvision's tensor `gaussian_blur`.
//!
//! Kernel: `2 * ceil(3 sigma) + 1` taps (the MoCo v2 recipe's choice; torchvision takes the size as
//! an argument), weights `exp(-x^2 / (2 sigma^2))` at integer offsets, normalised to sum 1, computed
//! in f32 as torchvision does. Padding: reflect (`x[-1] = x[1]`, no edge repeat). torchvision applies
//! the outer product of the 1-D kernels as one 2-D convolution; this applies the 1-D kernel along
//! rows then columns, which is the same filter up to float rounding (about 1e-7).
//!
//! Unlike torchvision, an image smaller than the kernel's half-width is allowed: the reflection
//! repeats (the index walks back and forth across the image).

use crate::simd::simd_kernel;

/// Number of taps of the blur kernel for `sigma`: `2 * ceil(3 sigma) + 1`.
///
/// # Panics
/// If `sigma` is not finite and positive.
pub fn gaussian_kernel_size(sigma: f32) -> usize {
    assert!(sigma > 0.0 && sigma.is_finite(), "gaussian blur sigma {sigma}");
    2 * (3.0 * sigma).ceil() as usize + 1
}

/// The 1-D kernel of torchvision's `_get_gaussian_kernel1d(size, sigma)`, in f32, into `out`.
///
/// # Panics
/// If `sigma` is not finite and positive.
pub fn gaussian_kernel(sigma: f32, out: &mut Vec<f32>) {
    let size = gaussian_kernel_size(sigma);
    let half = (size / 2) as f32;
    out.clear();
    out.extend((0..size).map(|i| {
        let x = (i as f32 - half) / sigma;
        (-0.5 * (x * x)).exp()
    }));
    let sum: f32 = out.iter().sum();
    out.iter_mut().for_each(|w| *w /= sum);
}

/// Index `i` of a length-`n` axis under reflect padding (repeated for `i` far outside).
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Reusable buffers of the blur: the kernel, a padded row and an intermediate plane.
#[derive(Clone, Debug, Default)]
pub struct BlurScratch {
    kernel: Vec<f32>,
    row: Vec<f32>,
    plane: Vec<f32>,
}

impl BlurScratch {
    /// Empty buffers; they grow to the largest image blurred.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Taps handled per call of [`weighted_rows`] (longer kernels go in several calls).
const MAX_TAPS: usize = 32;

simd_kernel! {
    /// `out[x] (+)= sum_k kernel[k] * rows[k][x]`, summed in order of k, 16 outputs at a time in
    /// registers. With `accumulate`, the sum continues from the values already in `out`.
    fn weighted_rows / weighted_rows_portable(
        out: &mut [f32],
        rows: &[&[f32]],
        kernel: &[f32],
        accumulate: bool,
    ) {
        let n = out.len();
        let mut x = 0;
        while x + 16 <= n {
            let mut acc = [0.0f32; 16];
            if accumulate {
                acc.copy_from_slice(&out[x..x + 16]);
            }
            for (row, &c) in rows.iter().zip(kernel) {
                let s: &[f32; 16] = row[x..x + 16].try_into().unwrap();
                for l in 0..16 {
                    acc[l] += c * s[l];
                }
            }
            out[x..x + 16].copy_from_slice(&acc);
            x += 16;
        }
        for (x, o) in out.iter_mut().enumerate().skip(x) {
            let mut acc = if accumulate { *o } else { 0.0 };
            for (row, &c) in rows.iter().zip(kernel) {
                acc += c * row[x];
            }
            *o = acc;
        }
    }
}

/// `out = sum_k kernel[k] * row(k)`, in groups of [`MAX_TAPS`] taps.
fn convolve(
    out: &mut [f32],
    kernel: &[f32],
    row: impl Fn(usize) -> usize,
    src: &[f32],
    stride: usize,
) {
    let n = out.len();
    for (g, taps) in kernel.chunks(MAX_TAPS).enumerate() {
        let mut rows: [&[f32]; MAX_TAPS] = [&[]; MAX_TAPS];
        for (k, r) in rows.iter_mut().enumerate().take(taps.len()) {
            let start = row(g * MAX_TAPS + k) * stride;
            *r = &src[start..start + n];
        }
        weighted_rows(out, &rows[..taps.len()], taps, g > 0);
    }
}

/// Blurs each plane of a `[3, height, width]` image in place with a Gaussian of std `sigma`
/// (pixels).
///
/// # Panics
/// If `chw.len() != 3 * width * height` or `sigma` is not finite and positive.
pub fn gaussian_blur(
    chw: &mut [f32],
    width: u32,
    height: u32,
    sigma: f32,
    scratch: &mut BlurScratch,
) {
    let (w, h) = (width as usize, height as usize);
    assert_eq!(chw.len(), 3 * w * h, "gaussian_blur: buffer of {} floats for 3x{h}x{w}", chw.len());
    if w == 0 || h == 0 {
        return;
    }
    gaussian_kernel(sigma, &mut scratch.kernel);
    let kernel = &scratch.kernel[..];
    let pad = kernel.len() / 2;
    scratch.row.resize(w + 2 * pad, 0.0);
    scratch.plane.resize(w * h, 0.0);
    for plane in chw.chunks_exact_mut(w * h) {
        // Rows: pad each row by reflection; tap k reads the padded row from offset k.
        for (src, dst) in plane.chunks_exact(w).zip(scratch.plane.chunks_exact_mut(w)) {
            scratch.row[pad..pad + w].copy_from_slice(src);
            for j in 0..pad {
                scratch.row[pad - 1 - j] = src[reflect(-1 - j as isize, w)];
                scratch.row[pad + w + j] = src[reflect((w + j) as isize, w)];
            }
            convolve(dst, kernel, |k| k, &scratch.row, 1);
        }
        // Columns: tap k of output row y reads intermediate row reflect(y + k - pad).
        for (y, dst) in plane.chunks_exact_mut(w).enumerate() {
            let row = |k: usize| reflect((y + k) as isize - pad as isize, h);
            convolve(dst, kernel, row, &scratch.plane, w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 2-D convolution with the outer-product kernel and reflect padding, in f64.
    fn reference(img: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
        let mut k = Vec::new();
        gaussian_kernel(sigma, &mut k);
        let pad = k.len() / 2;
        let mut out = vec![0.0; img.len()];
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0.0f64;
                    for (i, ky) in k.iter().enumerate() {
                        for (j, kx) in k.iter().enumerate() {
                            let sy = reflect(y as isize + i as isize - pad as isize, h);
                            let sx = reflect(x as isize + j as isize - pad as isize, w);
                            acc += f64::from(ky * kx) * f64::from(img[(c * h + sy) * w + sx]);
                        }
                    }
                    out[(c * h + y) * w + x] = acc as f32;
                }
            }
        }
        out
    }

    #[test]
    fn kernel_sizes_and_sums() {
        assert_eq!(gaussian_kernel_size(0.1), 3);
        assert_eq!(gaussian_kernel_size(1.0), 7);
        assert_eq!(gaussian_kernel_size(2.0), 13);
        let mut k = Vec::new();
        gaussian_kernel(1.5, &mut k);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(k.len(), 11);
        assert!(k.windows(2).take(5).all(|p| p[0] < p[1]) && k[0] == k[10]);
    }

    #[test]
    fn reflect_padding() {
        let idx: Vec<usize> = (-3..8).map(|i| reflect(i, 5)).collect();
        assert_eq!(idx, [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(reflect(-7, 2), 1);
        assert_eq!(reflect(5, 1), 0);
    }

    #[test]
    fn separable_matches_direct_2d() {
        let mut rng = crate::rng::KeyedRng::new(&[11]);
        for (w, h, sigma) in [(17, 13, 0.7), (40, 9, 2.0), (3, 2, 1.9), (1, 1, 0.5)] {
            let img: Vec<f32> = (0..3 * w * h).map(|_| rng.next_f64() as f32).collect();
            let mut out = img.clone();
            gaussian_blur(&mut out, w as u32, h as u32, sigma, &mut BlurScratch::new());
            let want = reference(&img, w, h, sigma);
            let max = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(max < 2e-6, "{w}x{h} sigma {sigma}: max {max}");
        }
    }

    #[test]
    fn simd_build_matches_portable() {
        let mut rng = crate::rng::KeyedRng::new(&[12]);
        let src: Vec<f32> = (0..300).map(|_| rng.next_f64() as f32).collect();
        let mut k = Vec::new();
        gaussian_kernel(1.3, &mut k);
        let n = src.len() - k.len() + 1;
        let rows: Vec<&[f32]> = (0..k.len()).map(|i| &src[i..i + n]).collect();
        let (mut a, mut b) = (vec![0.5; n], vec![0.5; n]);
        for accumulate in [false, true] {
            weighted_rows(&mut a, &rows, &k, accumulate);
            weighted_rows_portable(&mut b, &rows, &k, accumulate);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn long_kernels_are_split_without_changing_the_sum() {
        // sigma 6 has 37 taps: two groups of MAX_TAPS; the result equals the direct 2-D sum.
        let mut rng = crate::rng::KeyedRng::new(&[13]);
        let (w, h) = (45, 40);
        let img: Vec<f32> = (0..3 * w * h).map(|_| rng.next_f64() as f32).collect();
        let mut out = img.clone();
        gaussian_blur(&mut out, w as u32, h as u32, 6.0, &mut BlurScratch::new());
        let want = reference(&img, w, h, 6.0);
        let max = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(max < 2e-6, "max {max}");
    }

    #[test]
    fn constant_image_is_unchanged() {
        let mut img = vec![0.25; 3 * 20 * 10];
        gaussian_blur(&mut img, 20, 10, 1.2, &mut BlurScratch::new());
        assert!(img.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    }
}
