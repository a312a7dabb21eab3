//! The view recipes of the official SSL codebases, as [`ViewSpec`] data (MoCo v2's is
//! [`ViewSpec::mocov2`]). Each constructor names the code it was read from. All crops use ratio
//! (3/4, 4/3) and flip p 0.5; the colour jitter is applied in a random order, as torchvision's
//! `ColorJitter` does; the blur sigma is in pixels of the output view.

use crate::params::ViewSpec;
use crate::resize::Interpolation;

impl ViewSpec {
    /// SimCLR (google-research/simclr `data_util.py`, colour strength s = 1): RandomResizedCrop
    /// scale (0.08, 1); ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) with p 0.8; grayscale p 0.2;
    /// Gaussian blur p 0.5 with sigma U(0.1, 2.0); no solarize.
    pub fn simclr(size: u32) -> Self {
        Self {
            scale: (0.08, 1.0),
            brightness: 0.8,
            contrast: 0.8,
            saturation: 0.8,
            hue: 0.2,
            ..Self::mocov2(size)
        }
    }

    /// BYOL's two asymmetric views (Grill et al. 2020, Table 6; deepmind-research
    /// `byol/utils/augmentations.py`): RandomResizedCrop scale (0.08, 1); ColorJitter(0.4, 0.4,
    /// 0.2, 0.1) with p 0.8; grayscale p 0.2; Gaussian blur with sigma U(0.1, 2.0) at p 1.0 for
    /// view 0 and 0.1 for view 1; solarize at p 0.0 for view 0 and 0.2 for view 1.
    ///
    /// `view` is 0 or 1; any other value gives view 1's spec.
    pub fn byol(size: u32, view: usize) -> Self {
        let (blur_p, solarize_p) = if view == 0 { (1.0, 0.0) } else { (0.1, 0.2) };
        Self { blur_p, solarize_p, ..Self::byol_colour(size) }
    }

    /// The crop and colour BYOL and DINO share: RandomResizedCrop scale (0.08, 1), ColorJitter(0.4,
    /// 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2 (MoCo v2's, with saturation 0.2).
    fn byol_colour(size: u32) -> Self {
        Self { scale: (0.08, 1.0), saturation: 0.2, ..Self::mocov2(size) }
    }

    /// DINO's global crop `i` (facebookresearch/dino `main_dino.py`, `DataAugmentationDINO`):
    /// RandomResizedCrop(224, scale (0.4, 1), **bicubic**); ColorJitter(0.4, 0.4, 0.2, 0.1) with
    /// p 0.8; grayscale p 0.2; then for even `i` (DINO's `global_transfo1`) Gaussian blur p 1.0,
    /// for odd `i` (`global_transfo2`) blur p 0.1 and solarize p 0.2. The blur radius is U(0.1,
    /// 2.0).
    pub fn dino_global(i: usize) -> Self {
        let (blur_p, solarize_p) = if i.is_multiple_of(2) { (1.0, 0.0) } else { (0.1, 0.2) };
        Self {
            scale: (0.4, 1.0),
            interpolation: Interpolation::Bicubic,
            blur_p,
            solarize_p,
            ..Self::byol_colour(224)
        }
    }

    /// DINO's local crop (`local_transfo` of `DataAugmentationDINO`): RandomResizedCrop(96, scale
    /// (0.05, 0.4), bicubic); the global crops' jitter and grayscale; Gaussian blur p 0.5.
    pub fn dino_local() -> Self {
        Self {
            width: 96,
            height: 96,
            scale: (0.05, 0.4),
            blur_p: 0.5,
            solarize_p: 0.0,
            ..Self::dino_global(0)
        }
    }

    /// Supervised ImageNet training (torchvision `references/classification/presets.py`,
    /// `ClassificationPresetTrain`): RandomResizedCrop(size, scale (0.08, 1), bilinear) and a
    /// horizontal flip p 0.5; no colour operation.
    pub fn supervised(size: u32) -> Self {
        Self { scale: (0.08, 1.0), ..Self::geometry_only(size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_carry_the_official_numbers() {
        for spec in [
            ViewSpec::simclr(224),
            ViewSpec::byol(224, 0),
            ViewSpec::byol(224, 1),
            ViewSpec::dino_global(0),
            ViewSpec::dino_global(1),
            ViewSpec::dino_local(),
            ViewSpec::supervised(224),
        ] {
            spec.validate().unwrap();
            assert_eq!(spec.ratio, (3.0 / 4.0, 4.0 / 3.0));
            assert_eq!(spec.flip_p, 0.5);
        }
        let b = [ViewSpec::byol(224, 0), ViewSpec::byol(224, 1)];
        assert_eq!(
            [b[0].blur_p, b[1].blur_p, b[0].solarize_p, b[1].solarize_p],
            [1.0, 0.1, 0.0, 0.2]
        );
        assert_eq!(
            (b[0].brightness, b[0].contrast, b[0].saturation, b[0].hue),
            (0.4, 0.4, 0.2, 0.1)
        );
        let s = ViewSpec::simclr(224);
        assert_eq!(
            (s.brightness, s.contrast, s.saturation, s.hue, s.scale),
            (0.8, 0.8, 0.8, 0.2, (0.08, 1.0))
        );
        let (g, l) = (ViewSpec::dino_global(1), ViewSpec::dino_local());
        assert_eq!((g.width, g.scale, g.interpolation), (224, (0.4, 1.0), Interpolation::Bicubic));
        assert_eq!((l.width, l.scale, l.blur_p, l.solarize_p), (96, (0.05, 0.4), 0.5, 0.0));
        let sup = ViewSpec::supervised(160);
        assert_eq!((sup.width, sup.scale, sup.jitter_p, sup.blur_p), (160, (0.08, 1.0), 0.0, 0.0));
    }
}
