//! Per-view augmentation parameters, planned from the image size alone before any byte is decoded.
//!
//! A [`ViewSpec`] is a recipe (the MoCo v2 pipeline, or geometry only); [`ViewSpec::sample`] turns
//! it into the concrete [`ViewParams`] of one view. The CPU ops of this crate and the trainer's GPU
//! ops both read these parameters, so a view can be reproduced anywhere from its key.

use crate::crop::random_resized_crop;
use crate::error::{Error, Result};
use crate::geometry::Rect;
use crate::resize::Interpolation;
use crate::rng::KeyedRng;

/// The four ColorJitter operations, as stored in [`ColorJitter::order`].
pub const JITTER_BRIGHTNESS: u8 = 0;
/// See [`JITTER_BRIGHTNESS`].
pub const JITTER_CONTRAST: u8 = 1;
/// See [`JITTER_BRIGHTNESS`].
pub const JITTER_SATURATION: u8 = 2;
/// See [`JITTER_BRIGHTNESS`].
pub const JITTER_HUE: u8 = 3;

/// The drawn parameters of torchvision's `ColorJitter` for one view.
///
/// Factors of exactly 1.0 and a hue shift of exactly 0.0 mean "skip this op" (torchvision skips an
/// op whose strength is 0; skipping matters for hue, whose RGB -> HSV -> RGB round trip is not
/// exact).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ColorJitter {
    /// Brightness factor (`img * f`); 1.0 = identity.
    pub brightness: f32,
    /// Contrast factor (blend with the mean of the grayscale image); 1.0 = identity.
    pub contrast: f32,
    /// Saturation factor (blend with the grayscale image); 1.0 = identity.
    pub saturation: f32,
    /// Hue shift in turns, in `[-0.5, 0.5]`; 0.0 = identity.
    pub hue: f32,
    /// Order of application, a permutation of 0 = brightness, 1 = contrast, 2 = saturation,
    /// 3 = hue.
    pub order: [u8; 4],
}

impl ColorJitter {
    /// The identity jitter, in the default order.
    pub const IDENTITY: Self =
        Self { brightness: 1.0, contrast: 1.0, saturation: 1.0, hue: 0.0, order: [0, 1, 2, 3] };
}

/// Everything random about one view, in the order the MoCo v2 pipeline applies it: crop (then
/// resize to the view's size), jitter, grayscale, blur, solarize, flip, normalize. With the
/// resize filter of its spec, it is all that is needed to render the view again.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ViewParams {
    /// The crop, in pixels of the original image.
    pub crop: Rect,
    /// The resize filter (the spec's, copied: not random).
    pub interpolation: Interpolation,
    /// Mirror left-right.
    pub flip: bool,
    /// Colour jitter, when applied.
    pub jitter: Option<ColorJitter>,
    /// Convert to grayscale (replicated to 3 channels).
    pub grayscale: bool,
    /// Gaussian blur standard deviation in output pixels, when applied.
    pub blur_sigma: Option<f32>,
    /// Solarize at threshold 0.5.
    pub solarize: bool,
}

impl ViewParams {
    /// A view with only a crop and no other augmentation.
    pub fn crop_only(crop: Rect) -> Self {
        Self {
            crop,
            interpolation: Interpolation::Bilinear,
            flip: false,
            jitter: None,
            grayscale: false,
            blur_sigma: None,
            solarize: false,
        }
    }

    /// Whether any colour operation (jitter, grayscale, blur, solarize) is applied.
    pub fn has_color_ops(&self) -> bool {
        self.jitter.is_some() || self.grayscale || self.blur_sigma.is_some() || self.solarize
    }
}

/// A view recipe: output size, RandomResizedCrop ranges and filter, and the probability and
/// strength of each augmentation. The presets follow the official recipes: [`ViewSpec::mocov2`]
/// here, SimCLR, BYOL, DINO and supervised training in `presets.rs`.
///
/// With the `serde` feature, a spec reads from a config table whose missing fields take the MoCo
/// v2 224 px values ([`ViewSpec::default`]); unknown fields are errors.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ViewSpec {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// RandomResizedCrop area fraction range.
    pub scale: (f32, f32),
    /// RandomResizedCrop aspect (w/h) range.
    pub ratio: (f32, f32),
    /// The resize filter.
    pub interpolation: Interpolation,
    /// Probability of a horizontal flip.
    pub flip_p: f32,
    /// Probability of applying the colour jitter.
    pub jitter_p: f32,
    /// Brightness strength `x`: factor drawn from `U(max(0, 1 - x), 1 + x)`.
    pub brightness: f32,
    /// Contrast strength, as brightness.
    pub contrast: f32,
    /// Saturation strength, as brightness.
    pub saturation: f32,
    /// Hue strength `h` in `[0, 0.5]`: shift drawn from `U(-h, h)`.
    pub hue: f32,
    /// Probability of grayscale.
    pub grayscale_p: f32,
    /// Probability of the Gaussian blur.
    pub blur_p: f32,
    /// Range of the blur's standard deviation, in output pixels.
    pub blur_sigma: (f32, f32),
    /// Probability of solarize.
    pub solarize_p: f32,
}

impl Default for ViewSpec {
    /// The MoCo v2 view at 224 px.
    fn default() -> Self {
        Self::mocov2(224)
    }
}

impl ViewSpec {
    /// The MoCo v2 view, as `main_moco.py --aug-plus` of facebookresearch/moco builds it
    /// (docs/method.md section 8): RandomResizedCrop(size, scale (0.2, 1), ratio (3/4, 4/3),
    /// bilinear); ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8; grayscale p 0.2; Gaussian blur p 0.5
    /// with sigma U(0.1, 2.0); flip p 0.5; no solarize.
    pub fn mocov2(size: u32) -> Self {
        Self {
            width: size,
            height: size,
            scale: (0.2, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            interpolation: Interpolation::Bilinear,
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 0.5,
            blur_sigma: (0.1, 2.0),
            solarize_p: 0.0,
        }
    }

    /// The MoCo v2 geometry (RandomResizedCrop with scale (0.2, 1), flip p 0.5) and no colour op.
    pub fn geometry_only(size: u32) -> Self {
        Self { jitter_p: 0.0, grayscale_p: 0.0, blur_p: 0.0, solarize_p: 0.0, ..Self::mocov2(size) }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first field out of range: an empty size, a range that
    /// is not `0 < lo <= hi` (finite), a probability outside `[0, 1]`, a negative strength, or a hue
    /// strength above 0.5.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(format!("view spec: {what}")));
        if self.width == 0 || self.height == 0 {
            return bad(format!("empty output size {}x{}", self.width, self.height));
        }
        for (name, (lo, hi)) in
            [("scale", self.scale), ("ratio", self.ratio), ("blur_sigma", self.blur_sigma)]
        {
            if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
                return bad(format!("{name} range ({lo}, {hi}) is not 0 < lo <= hi"));
            }
        }
        for (name, p) in [
            ("flip_p", self.flip_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("blur_p", self.blur_p),
            ("solarize_p", self.solarize_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} {p} is not a probability"));
            }
        }
        for (name, x) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(x >= 0.0 && x.is_finite()) {
                return bad(format!("{name} strength {x} is negative"));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return bad(format!("hue strength {} outside [0, 0.5]", self.hue));
        }
        Ok(())
    }

    /// Draws the parameters of one view of a `img_w` x `img_h` image. Draw order: crop, jitter
    /// (apply?, order, brightness, contrast, saturation, hue), grayscale, blur, solarize, flip.
    ///
    /// # Panics
    /// If the image is empty or the spec is invalid (see [`ViewSpec::validate`]).
    pub fn sample(&self, img_w: u32, img_h: u32, rng: &mut KeyedRng) -> ViewParams {
        let crop = random_resized_crop(img_w, img_h, self.scale, self.ratio, rng);
        let jitter = rng.bernoulli(f64::from(self.jitter_p)).then(|| self.sample_jitter(rng));
        let grayscale = rng.bernoulli(f64::from(self.grayscale_p));
        let blur_sigma = rng.bernoulli(f64::from(self.blur_p)).then(|| {
            rng.uniform(f64::from(self.blur_sigma.0), f64::from(self.blur_sigma.1)) as f32
        });
        let solarize = rng.bernoulli(f64::from(self.solarize_p));
        let flip = rng.bernoulli(f64::from(self.flip_p));
        let interpolation = self.interpolation;
        ViewParams { crop, interpolation, flip, jitter, grayscale, blur_sigma, solarize }
    }

    /// torchvision's `ColorJitter.get_params`: a random order, then each factor (an op of strength
    /// 0 keeps its identity value).
    fn sample_jitter(&self, rng: &mut KeyedRng) -> ColorJitter {
        let mut order = [JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION, JITTER_HUE];
        rng.shuffle(&mut order);
        let mut factor = |x: f32| {
            if x > 0.0 {
                let x = f64::from(x);
                rng.uniform((1.0 - x).max(0.0), 1.0 + x) as f32
            } else {
                1.0
            }
        };
        let brightness = factor(self.brightness);
        let contrast = factor(self.contrast);
        let saturation = factor(self.saturation);
        let hue = if self.hue > 0.0 {
            let h = f64::from(self.hue);
            rng.uniform(-h, h) as f32
        } else {
            0.0
        };
        ColorJitter { brightness, contrast, saturation, hue, order }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        ViewSpec::mocov2(224).validate().unwrap();
        ViewSpec::geometry_only(96).validate().unwrap();
        let bad = ViewSpec { hue: 0.6, ..ViewSpec::mocov2(224) };
        assert!(bad.validate().unwrap_err().to_string().contains("hue"));
        let bad = ViewSpec { scale: (0.0, 1.0), ..ViewSpec::mocov2(224) };
        assert!(bad.validate().unwrap_err().to_string().contains("scale"));
        let bad = ViewSpec { blur_p: f32::NAN, ..ViewSpec::mocov2(224) };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn mocov2_frequencies_and_ranges() {
        let spec = ViewSpec::mocov2(224);
        let n = 20_000;
        let (mut jit, mut gray, mut blur, mut flip) = (0, 0, 0, 0);
        let mut orders = std::collections::HashSet::new();
        for i in 0..n {
            let p = spec.sample(500, 375, &mut KeyedRng::new(&[0, 0, 0, i, 0]));
            assert!(p.crop.fits_in(500, 375));
            assert!(!p.solarize);
            if let Some(j) = p.jitter {
                jit += 1;
                for f in [j.brightness, j.contrast, j.saturation] {
                    assert!((0.6..1.4).contains(&f), "{j:?}");
                }
                assert!((-0.1..0.1).contains(&j.hue));
                let mut o = j.order;
                o.sort_unstable();
                assert_eq!(o, [0, 1, 2, 3]);
                orders.insert(j.order);
            }
            gray += usize::from(p.grayscale);
            flip += usize::from(p.flip);
            if let Some(s) = p.blur_sigma {
                blur += 1;
                assert!((0.1..2.0).contains(&s));
            }
        }
        let near = |count: usize, p: f64| (count as f64 / n as f64 - p).abs() < 0.015;
        assert!(near(jit, 0.8) && near(gray, 0.2) && near(blur, 0.5) && near(flip, 0.5));
        assert_eq!(orders.len(), 24, "every order of the four ops occurs");
    }

    #[test]
    fn geometry_only_has_no_colour() {
        let spec = ViewSpec::geometry_only(224);
        for i in 0..1000 {
            assert!(!spec.sample(300, 200, &mut KeyedRng::new(&[i])).has_color_ops());
        }
    }

    #[test]
    fn zero_strength_keeps_identity() {
        let spec = ViewSpec { jitter_p: 1.0, brightness: 0.0, hue: 0.0, ..ViewSpec::mocov2(64) };
        let j = spec.sample(100, 100, &mut KeyedRng::new(&[1])).jitter.unwrap();
        assert_eq!((j.brightness, j.hue), (1.0, 0.0));
        assert_ne!(j.contrast, 1.0);
    }
}
