//! The backbone families behind one interface: what to build ([`BackboneSpec`], from the config's
//! [`Arch`]) and the built network ([`Backbone`]), which gives the last feature map (the region
//! branch pools it) and the global representation (the average of that map for ResNet and Swin,
//! the class token for ViT).

use tch::{Device, Kind, Tensor};

use super::resnet::{ResNet, ResNetSpec};
use super::swin::{Swin, SwinSpec};
use super::transformer::DropPath;
use super::vit::{Vit, VitSpec};
use crate::bn::BnMode;
use crate::config::{Arch, Config};
use crate::params::ParamStore;

/// What backbone to build.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum BackboneSpec {
    /// A ResNet.
    ResNet(ResNetSpec),
    /// A Swin Transformer.
    Swin(SwinSpec),
    /// A Vision Transformer.
    Vit(VitSpec),
}

impl BackboneSpec {
    /// The backbone `config` builds: a ResNet from `model.*`, or a transformer for
    /// `data.image_size` views with stochastic depth `model.drop_path` (the online encoder's).
    pub fn of(config: &Config) -> Self {
        let (m, size) = (&config.model, config.data.image_size);
        match m.arch {
            Arch::SwinT => BackboneSpec::Swin(SwinSpec::swin_t(size, m.drop_path)),
            Arch::SwinNano => BackboneSpec::Swin(SwinSpec::nano(size, m.drop_path)),
            Arch::VitS16 => BackboneSpec::Vit(VitSpec::vit_s16(size, m.drop_path)),
            Arch::VitNano => BackboneSpec::Vit(VitSpec::nano(size, m.drop_path)),
            Arch::ResNet18 | Arch::ResNet50 => BackboneSpec::ResNet(ResNetSpec::of(m)),
        }
    }

    /// Channels of the last feature map and of the global representation.
    pub fn feature_dim(&self) -> i64 {
        match self {
            BackboneSpec::ResNet(s) => s.feature_dim(),
            BackboneSpec::Swin(s) => s.feature_dim(),
            BackboneSpec::Vit(s) => s.feature_dim(),
        }
    }

    /// Total stride `R` of the last feature map (the swap box is aligned to it).
    pub fn stride(&self) -> i64 {
        match self {
            BackboneSpec::ResNet(s) => s.stride(),
            BackboneSpec::Swin(s) => s.stride(),
            BackboneSpec::Vit(s) => s.stride(),
        }
    }

    /// The same backbone with stochastic depth `rate` (transformers; a ResNet has none). MoBY's
    /// target encoder is its online encoder's spec at rate 0.
    pub fn with_drop_path(self, rate: f64) -> Self {
        match self {
            BackboneSpec::Swin(s) => BackboneSpec::Swin(SwinSpec { drop_path: rate, ..s }),
            BackboneSpec::Vit(s) => BackboneSpec::Vit(VitSpec { drop_path: rate, ..s }),
            other => other,
        }
    }

    /// The timm model whose backbone this is, at full size (`None` for ResNets and the test
    /// sizes): the name `timm.create_model` takes.
    pub fn timm_model(&self) -> Option<&'static str> {
        match self {
            BackboneSpec::Swin(s) if *s == SwinSpec::swin_t(224, s.drop_path) => {
                Some("swin_tiny_patch4_window7_224")
            }
            BackboneSpec::Vit(s) if *s == VitSpec::vit_s16(224, s.drop_path) => {
                Some("vit_small_patch16_224")
            }
            _ => None,
        }
    }
}

/// A built backbone.
#[derive(Debug)]
pub(crate) enum Backbone {
    ResNet(ResNet),
    Swin(Swin),
    Vit(Vit),
}

impl Backbone {
    /// Registers the backbone of `spec` in `store` under `prefix`.
    pub(crate) fn new(store: &mut ParamStore, prefix: &str, spec: BackboneSpec) -> Self {
        match spec {
            BackboneSpec::ResNet(s) => Backbone::ResNet(ResNet::new(store, prefix, s)),
            BackboneSpec::Swin(s) => Backbone::Swin(Swin::new(store, prefix, s)),
            BackboneSpec::Vit(s) => Backbone::Vit(Vit::new(store, prefix, s)),
        }
    }

    /// The spec it was built from.
    pub(crate) fn spec(&self) -> BackboneSpec {
        match self {
            Backbone::ResNet(n) => BackboneSpec::ResNet(*n.spec()),
            Backbone::Swin(n) => BackboneSpec::Swin(*n.spec()),
            Backbone::Vit(n) => BackboneSpec::Vit(*n.spec()),
        }
    }

    /// Moves what the backbone holds outside its store (Swin's position indices and masks).
    pub(crate) fn move_to(&mut self, device: Device) {
        if let Backbone::Swin(n) = self {
            n.to_device(device);
        }
    }

    /// The stochastic-depth rates of the blocks (empty for a ResNet).
    pub(crate) fn drop_rates(&self) -> Vec<f64> {
        match self {
            Backbone::ResNet(_) => Vec::new(),
            Backbone::Swin(n) => n.drop_rates(),
            Backbone::Vit(n) => n.drop_rates(),
        }
    }

    /// The global representation (float) and the last feature map. BN (ResNet) per `mode`;
    /// stochastic depth (transformers) per `drop`.
    ///
    /// # Shapes
    /// `x: [B, 3, H, W]` -> `([B, D], [B, D, H / R, W / R])`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        mode: BnMode,
        drop: Option<&DropPath>,
    ) -> (Tensor, Tensor) {
        let gap = |map: &Tensor| map.mean_dim([2, 3].as_slice(), false, Kind::Float);
        match self {
            Backbone::ResNet(n) => {
                let map = n.forward(x, mode);
                (gap(&map), map)
            }
            Backbone::Swin(n) => {
                let map = n.forward_tokens(x, drop).permute([0, 3, 1, 2]); // [B, D, h, w]
                (gap(&map), map)
            }
            Backbone::Vit(n) => {
                let (cls, map) = n.forward(x, drop);
                (cls.to_kind(Kind::Float), map)
            }
        }
    }
}
