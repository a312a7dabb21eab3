//! What the pipeline makes of every sample: a [`Recipe`] of views, with presets for the official
//! recipes of MoCo v2, SimCLR, BYOL, DINO, supervised training and evaluation.

use regioncl_augment::ViewSpec;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where the colour operations of a recipe run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ColorOn {
    /// Workers write u8 `[H, W, 3]` views (crop, resize, flip only); the consumer applies the
    /// planned colour parameters itself (the trainer does it on the GPU).
    #[default]
    Consumer,
    /// Workers apply the whole augmentation and write normalized f32 `[3, H, W]` views.
    Cpu,
}

/// How the crops of a recipe are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
#[non_exhaustive]
pub enum Sampling {
    /// Drawn per view from its [`ViewSpec`] (training).
    #[default]
    Random,
    /// Deterministic evaluation crop: resize the shorter side to `resize`, then take the central
    /// `width` x `height` of the view (torchvision's `Resize(256)` + `CenterCrop(224)`), no flip,
    /// no colour.
    Center {
        /// Shorter side after the resize.
        resize: u32,
    },
}

/// The views made from every sample. Presets reproduce the official recipes (each names its
/// source); every field is public, so a preset is a starting point:
///
/// ```
/// use regioncl_loader::{ColorOn, Recipe};
///
/// // BYOL's two asymmetric views, fully augmented on the CPU (normalized f32 out).
/// let recipe = Recipe { color_on: ColorOn::Cpu, ..Recipe::byol(224) };
/// assert_eq!(recipe.views[1].solarize_p, 0.2);
/// ```
///
/// With serde, a recipe reads from a config table (`views` is a list of [`ViewSpec`] tables).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// One spec per view; view 0 is the query view of two-view methods.
    pub views: Vec<ViewSpec>,
    /// Where colour runs.
    #[serde(default)]
    pub color_on: ColorOn,
    /// Random or central crops.
    #[serde(default)]
    pub sampling: Sampling,
}

impl Recipe {
    /// Views `views`, colour left to the consumer, random crops.
    fn random(views: Vec<ViewSpec>) -> Self {
        Self { views, color_on: ColorOn::Consumer, sampling: Sampling::Random }
    }

    /// MoCo v2: two views alike, [`ViewSpec::mocov2`] (facebookresearch/moco `main_moco.py
    /// --aug-plus`; docs/method.md section 8).
    pub fn mocov2(size: u32) -> Self {
        Self::random(vec![ViewSpec::mocov2(size); 2])
    }

    /// SimCLR: two views alike, [`ViewSpec::simclr`] (google-research/simclr `data_util.py`).
    pub fn simclr(size: u32) -> Self {
        Self::random(vec![ViewSpec::simclr(size); 2])
    }

    /// BYOL: two asymmetric views, [`ViewSpec::byol`] 0 and 1 (blur p 1.0 / 0.1, solarize p 0 /
    /// 0.2; Grill et al. 2020, Table 6).
    pub fn byol(size: u32) -> Self {
        Self::random(vec![ViewSpec::byol(size, 0), ViewSpec::byol(size, 1)])
    }

    /// DINO multi-crop (facebookresearch/dino `DataAugmentationDINO`; its defaults are 2 global
    /// and 8 local views): `global_views` 224 px crops, alternately [`ViewSpec::dino_global`] 0
    /// and 1, then `local_views` 96 px [`ViewSpec::dino_local`] crops, all resized **bicubic** as
    /// DINO does.
    pub fn dino(global_views: usize, local_views: usize) -> Self {
        let mut views: Vec<ViewSpec> = (0..global_views).map(ViewSpec::dino_global).collect();
        views.extend(std::iter::repeat_n(ViewSpec::dino_local(), local_views));
        Self::random(views)
    }

    /// Supervised training: one [`ViewSpec::supervised`] view (RandomResizedCrop scale (0.08, 1)
    /// and a flip; torchvision's classification reference).
    pub fn supervised(size: u32) -> Self {
        Self::random(vec![ViewSpec::supervised(size)])
    }

    /// The evaluation view: the shorter side resized to `resize`, then the central `crop` x `crop`
    /// (torchvision's `Resize(resize)` + `CenterCrop(crop)`; `eval_center(256, 224)` on ImageNet).
    pub fn eval_center(resize: u32, crop: u32) -> Self {
        Self {
            views: vec![ViewSpec::geometry_only(crop)],
            color_on: ColorOn::Consumer,
            sampling: Sampling::Center { resize },
        }
    }

    /// Checks every view spec.
    ///
    /// # Errors
    /// [`Error::Config`] naming the view.
    pub fn validate(&self) -> Result<()> {
        if self.views.is_empty() {
            return Err(Error::Config("recipe.views: no views".into()));
        }
        if let Sampling::Center { resize } = self.sampling {
            if resize == 0 {
                return Err(Error::Config("recipe.sampling: resize must be at least 1".into()));
            }
            if let Some((i, v)) =
                self.views.iter().enumerate().find(|(_, v)| v.width.max(v.height) > resize)
            {
                return Err(Error::Config(format!(
                    "recipe.views[{i}]: a {}x{} centre crop does not fit the image resized to \
                     {resize} on its shorter side",
                    v.width, v.height
                )));
            }
        }
        for (i, v) in self.views.iter().enumerate() {
            v.validate().map_err(|e| Error::Config(format!("recipe.views[{i}]: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use regioncl_augment::Interpolation;

    use super::*;

    #[test]
    fn presets_validate_and_have_their_views() {
        let dino = Recipe::dino(2, 8);
        for (name, r, n) in [
            ("mocov2", Recipe::mocov2(224), 2),
            ("simclr", Recipe::simclr(224), 2),
            ("byol", Recipe::byol(224), 2),
            ("dino", dino.clone(), 10),
            ("supervised", Recipe::supervised(224), 1),
            ("eval_center", Recipe::eval_center(256, 224), 1),
        ] {
            r.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.views.len(), n, "{name}");
        }
        assert_eq!(dino.views[0].blur_p, 1.0);
        assert_eq!((dino.views[1].blur_p, dino.views[1].solarize_p), (0.1, 0.2));
        assert!(dino.views[2..].iter().all(|v| v.width == 96 && v.scale == (0.05, 0.4)));
        assert!(dino.views.iter().all(|v| v.interpolation == Interpolation::Bicubic));
        assert_eq!(Recipe::eval_center(256, 224).sampling, Sampling::Center { resize: 256 });
    }

    /// A recipe round-trips through JSON; a config names only what differs from the MoCo v2 view.
    #[test]
    fn recipes_serialize_and_read_partial_view_tables() {
        let r = Recipe { color_on: ColorOn::Cpu, ..Recipe::dino(2, 2) };
        let back: Recipe = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let text = r#"{"views": [{"width": 96, "height": 96, "interpolation": "bicubic"}],
                       "sampling": {"kind": "center", "resize": 110}}"#;
        let r: Recipe = serde_json::from_str(text).unwrap();
        let want = regioncl_augment::ViewSpec {
            width: 96,
            height: 96,
            interpolation: Interpolation::Bicubic,
            ..regioncl_augment::ViewSpec::mocov2(224)
        };
        assert_eq!((r.views[0], r.sampling), (want, Sampling::Center { resize: 110 }));
        assert!(serde_json::from_str::<Recipe>(r#"{"views": [{"widht": 3}]}"#).is_err());
    }
}
