//! u8 HWC to float CHW conversion and per-channel normalisation.

use crate::simd::simd_kernel;

/// ImageNet channel means (R, G, B) of torchvision's `Normalize`, on `[0, 1]` values.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (R, G, B).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A per-channel affine normalisation `(x - mean[c]) / std[c]`, as torchvision's `normalize`
/// (a true division, not a multiplication by the reciprocal, so results match bit for bit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (non-zero).
    pub std: [f32; 3],
}

impl Normalize {
    /// ImageNet statistics ([`IMAGENET_MEAN`], [`IMAGENET_STD`]).
    pub const IMAGENET: Self = Self { mean: IMAGENET_MEAN, std: IMAGENET_STD };
    /// The identity (mean 0, std 1): leaves values in `[0, 1]`.
    pub const IDENTITY: Self = Self { mean: [0.0; 3], std: [1.0; 3] };

    /// Normalises a `[3, H, W]` image in place.
    ///
    /// # Panics
    /// If `chw.len()` is not a multiple of 3.
    pub fn apply(&self, chw: &mut [f32]) {
        assert!(chw.len().is_multiple_of(3), "normalize: {} floats is not 3 planes", chw.len());
        if *self == Self::IDENTITY {
            return;
        }
        let n = chw.len() / 3;
        for (c, plane) in chw.chunks_exact_mut(n.max(1)).enumerate() {
            normalize_plane(plane, self.mean[c], self.std[c]);
        }
    }
}

impl Default for Normalize {
    fn default() -> Self {
        Self::IMAGENET
    }
}

simd_kernel! {
    fn normalize_plane / normalize_plane_portable(x: &mut [f32], mean: f32, std: f32) {
        for v in x {
            *v = (*v - mean) / std;
        }
    }
}

simd_kernel! {
    fn deinterleave / deinterleave_portable(hwc: &[u8], r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
        for (((p, r), g), b) in hwc.chunks_exact(3).zip(r).zip(g).zip(b) {
            *r = f32::from(p[0]) / 255.0;
            *g = f32::from(p[1]) / 255.0;
            *b = f32::from(p[2]) / 255.0;
        }
    }
}

/// Converts packed RGB u8 `[H, W, 3]` to planar float `[3, H, W]` in `[0, 1]` (`x / 255`, as
/// torchvision's `to_tensor` and `convert_image_dtype`).
///
/// # Panics
/// If `chw.len() != hwc.len()` or the length is not a multiple of 3.
pub fn hwc_to_chw_f32(hwc: &[u8], chw: &mut [f32]) {
    assert_eq!(
        hwc.len(),
        chw.len(),
        "hwc_to_chw_f32: {} bytes into {} floats",
        hwc.len(),
        chw.len()
    );
    let (r, g, b) = crate::color::planes(chw);
    deinterleave(hwc, r, g, b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_and_normalisation() {
        let hwc = [0u8, 128, 255, 51, 102, 153];
        let mut chw = [0.0f32; 6];
        hwc_to_chw_f32(&hwc, &mut chw);
        assert_eq!(chw, [0.0, 0.2, 128.0 / 255.0, 0.4, 1.0, 0.6]);
        Normalize::IMAGENET.apply(&mut chw);
        assert_eq!(chw[0], (0.0 - 0.485) / 0.229);
        assert_eq!(chw[5], (0.6 - 0.406) / 0.225);
        let mut same = [0.5f32; 3];
        Normalize::IDENTITY.apply(&mut same);
        assert_eq!(same, [0.5; 3]);
    }

    #[test]
    fn simd_builds_match_portable() {
        let hwc: Vec<u8> = (0..3 * 1001).map(|i| (i * 37 % 256) as u8).collect();
        let (mut a, mut b) = (vec![0.0; hwc.len()], vec![0.0; hwc.len()]);
        hwc_to_chw_f32(&hwc, &mut a);
        {
            let (r, g, bb) = crate::color::planes(&mut b);
            deinterleave_portable(&hwc, r, g, bb);
        }
        assert_eq!(a, b);
        normalize_plane(&mut a, 0.4, 0.3);
        normalize_plane_portable(&mut b, 0.4, 0.3);
        assert_eq!(a, b);
    }
}
