//! Networks: the backbones (ResNet with torchvision names; Swin and ViT with timm names), the
//! heads (MoCo v2 projector, DenseCL's dense head, SimSiam's projector and predictor, MoBY's
//! projector and predictor), and the encoder that pairs a backbone with a head.

mod backbone;
mod dense_head;
mod moby_head;
mod projector;
mod resnet;
mod simsiam_head;
mod swin;
mod transformer;
mod vit;

pub use backbone::BackboneSpec;
pub use dense_head::DenseHead;
pub use moby_head::{MobyMlp, MobyPredictor};
pub use projector::Projector;
pub use resnet::{ResNet, ResNetSpec};
pub use simsiam_head::{Predictor, SimSiamProjector};
pub use swin::{Swin, SwinSpec};
pub use transformer::DropPath;
pub use vit::{Vit, VitSpec};

use backbone::Backbone;
use tch::{Device, Kind, Tensor};

use crate::bn::BnMode;
use crate::config::{Config, Method};
use crate::error::Result;
use crate::params::ParamStore;

/// Which head an [`Encoder`] carries after its backbone (`1.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadSpec {
    /// MoCo v2 / RegionCL-M: Linear -> ReLU -> Linear (`1.mlp.{0,2}`), no BN.
    Mlp {
        /// Hidden width.
        hidden: i64,
        /// Embedding dim.
        dim: i64,
    },
    /// DenseCL / RegionCL-D: the same global MLP plus the dense 1x1-conv head (`1.mlp2.{0,2}`).
    Dense {
        /// Hidden width of both branches.
        hidden: i64,
        /// Embedding dim of both branches.
        dim: i64,
    },
    /// SimSiam / RegionCL-S: the 3-layer projector with BN (`1.mlp.{0,1,3,4,6,7}`).
    SimSiam {
        /// Hidden width.
        hidden: i64,
        /// Output dim.
        dim: i64,
    },
    /// MoBY / RegionCL+MoBY: the 2-layer projector with BN (`1.linear_hidden.{1,2}`,
    /// `1.linear_out`).
    Moby {
        /// Hidden width.
        hidden: i64,
        /// Output dim.
        dim: i64,
    },
}

impl HeadSpec {
    /// The head of `config`'s method (`model.proj_hidden`, 0 = the backbone's feature dim, and
    /// `model.proj_dim`).
    pub fn for_config(config: &Config) -> Self {
        let hidden = match config.model.proj_hidden {
            0 => BackboneSpec::of(config).feature_dim(),
            h => h,
        };
        let dim = config.model.proj_dim;
        match config.method {
            Method::DenseCl | Method::RegionCld => HeadSpec::Dense { hidden, dim },
            Method::SimSiam | Method::RegionCls => HeadSpec::SimSiam { hidden, dim },
            Method::Moby | Method::RegionClMoby => HeadSpec::Moby { hidden, dim },
            _ => HeadSpec::Mlp { hidden, dim },
        }
    }
}

#[derive(Debug)]
enum Head {
    Mlp(Projector),
    Dense(Projector, DenseHead),
    SimSiam(SimSiamProjector),
    Moby(MobyMlp),
}

/// A backbone `f` and a head `g`, registered under OpenSelfSup's names: `0.<torchvision or timm>`
/// for the backbone and `1.*` for the head (a checkpoint prefixes `encoder_q.` / `encoder_k.`, or
/// `encoder.` for SimSiam).
#[derive(Debug)]
pub struct Encoder {
    store: ParamStore,
    backbone: Backbone,
    head: Head,
}

impl Encoder {
    /// Builds an encoder with the MoCo v2 projector ([`HeadSpec::Mlp`]); see
    /// [`Encoder::with_head`].
    ///
    /// # Errors
    /// A libtorch failure while moving or converting.
    pub fn new(
        spec: BackboneSpec,
        hidden: i64,
        dim: i64,
        device: Device,
        channels_last: bool,
    ) -> Result<Self> {
        Self::with_head(spec, HeadSpec::Mlp { hidden, dim }, device, channels_last)
    }

    /// The encoder of `config`'s method ([`HeadSpec::for_config`]).
    ///
    /// # Errors
    /// As [`Encoder::with_head`].
    pub fn for_config(config: &Config, device: Device, channels_last: bool) -> Result<Self> {
        Self::with_head(
            BackboneSpec::of(config),
            HeadSpec::for_config(config),
            device,
            channels_last,
        )
    }

    /// Builds an encoder on the CPU (initialised from libtorch's default generator), then moves it
    /// to `device`, converting conv weights to channels_last when asked.
    ///
    /// # Errors
    /// A libtorch failure while moving or converting.
    pub fn with_head(
        spec: BackboneSpec,
        head: HeadSpec,
        device: Device,
        channels_last: bool,
    ) -> Result<Self> {
        let mut store = ParamStore::new();
        let backbone = Backbone::new(&mut store, "0", spec);
        let d = spec.feature_dim();
        let init = match spec {
            BackboneSpec::ResNet(r) => r.init,
            _ => crate::config::InitScheme::Torchvision,
        };
        let head = match head {
            HeadSpec::Mlp { hidden, dim } => {
                Head::Mlp(Projector::new(&mut store, "1.mlp", init, d, hidden, dim))
            }
            HeadSpec::Dense { hidden, dim } => {
                let mlp = Projector::new(&mut store, "1.mlp", init, d, hidden, dim);
                Head::Dense(mlp, DenseHead::new(&mut store, "1.mlp2", d, hidden, dim))
            }
            HeadSpec::SimSiam { hidden, dim } => {
                Head::SimSiam(SimSiamProjector::new(&mut store, "1.mlp", d, hidden, dim))
            }
            HeadSpec::Moby { hidden, dim } => {
                Head::Moby(MobyMlp::new(&mut store, "1", d, hidden, dim))
            }
        };
        let mut encoder = Self { store, backbone, head };
        encoder.to_device(device);
        if channels_last {
            encoder.store.to_channels_last()?;
        }
        Ok(encoder)
    }

    /// Moves every tensor to `device` in place.
    pub fn to_device(&mut self, device: Device) {
        if device != Device::Cpu {
            self.store.to_device(device);
            self.backbone.move_to(device);
        }
    }

    /// The named tensors.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The named tensors, mutable (freezing the key encoder).
    pub fn store_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    /// The backbone's tensors under bare torchvision names (`conv1.weight`,
    /// `layer1.0.bn1.running_mean`, ...), as contiguous CPU tensors.
    pub fn backbone_tensors(&self) -> Vec<(String, Tensor)> {
        let tensors = self.store.export("").into_iter();
        tensors.filter_map(|(n, t)| n.strip_prefix("0.").map(|s| (s.to_string(), t))).collect()
    }

    /// The backbone spec.
    pub fn spec(&self) -> BackboneSpec {
        self.backbone.spec()
    }

    /// Backbone feature map `f(x)` (a transformer's final token map).
    ///
    /// # Shapes
    /// `x: [B, 3, H, W]` -> `[B, D, H/R, W/R]`.
    pub fn features(&self, x: &Tensor, mode: BnMode) -> Tensor {
        self.backbone.forward(x, mode, None).1
    }

    /// The backbone's global representation (float) and last feature map in one pass: the
    /// average of the map (ResNet, Swin) or the class token (ViT). Stochastic depth per `drop`
    /// ([`Encoder::drop_path`]).
    ///
    /// # Shapes
    /// `x: [B, 3, H, W]` -> `([B, D], [B, D, H/R, W/R])`.
    pub fn backbone(&self, x: &Tensor, mode: BnMode, drop: Option<&DropPath>) -> (Tensor, Tensor) {
        self.backbone.forward(x, mode, drop)
    }

    /// The backbone's global representation, float, without stochastic depth: what evaluation
    /// and export compare.
    ///
    /// # Shapes
    /// `x: [B, 3, H, W]` -> `[B, D]`.
    pub fn pooled(&self, x: &Tensor, mode: BnMode) -> Tensor {
        self.backbone.forward(x, mode, None).0
    }

    /// Stochastic-depth masks of one training pass over `batch` samples, the first being sample
    /// `first_sample` of the global batch, keyed by `key` ([`DropPath::draw`]); `None` for a
    /// backbone without stochastic depth.
    pub fn drop_path(&self, key: &[u64], first_sample: u64, batch: i64) -> Option<DropPath> {
        let device = self.store.entries().first().map_or(Device::Cpu, |e| e.tensor.device());
        DropPath::draw(&self.backbone.drop_rates(), key, first_sample, batch, device)
    }

    /// Head `g` on pooled features, BN layers of the head (SimSiam's) on running statistics: the
    /// evaluation path. Training uses [`Encoder::project_with`].
    ///
    /// # Shapes
    /// `v: [N, D]` -> `[N, dim]`.
    pub fn project(&self, v: &Tensor) -> Tensor {
        self.project_with(v, BnMode::eval())
    }

    /// Head `g` on pooled features; BN layers of the head (SimSiam's) per `mode`, statistics over
    /// the rows of this call.
    ///
    /// # Shapes
    /// `v: [N, D]` -> `[N, dim]`.
    pub fn project_with(&self, v: &Tensor, mode: BnMode) -> Tensor {
        match &self.head {
            Head::Mlp(mlp) | Head::Dense(mlp, _) => mlp.forward(v),
            Head::SimSiam(p) => p.forward(v, mode),
            Head::Moby(p) => p.forward(v, mode),
        }
    }

    /// DenseCL's dense head on the feature map (not normalised); `None` for other heads.
    ///
    /// # Shapes
    /// `f: [B, D, Gh, Gw]` -> `[B, dim, Gh, Gw]`.
    pub fn project_dense(&self, f: &Tensor) -> Option<Tensor> {
        match &self.head {
            Head::Dense(_, dense) => Some(dense.forward(f)),
            _ => None,
        }
    }

    /// The global embedding `g(pool(f(x)))` ([`Encoder::pooled`]), not normalised.
    ///
    /// # Shapes
    /// `x: [B, 3, H, W]` -> `[B, dim]`.
    pub fn embed(&self, x: &Tensor, mode: BnMode) -> Tensor {
        self.project_with(&self.pooled(x, mode), mode)
    }
}

/// L2-normalises rows in fp32.
///
/// # Shapes
/// `z: [N, d]` -> `[N, d]`, float.
pub fn l2_normalize(z: &Tensor) -> Tensor {
    let z = z.to_kind(Kind::Float);
    let norm = z.norm_scalaropt_dim(2, [1].as_slice(), true).clamp_min(1e-12); // [N, 1]
    z / norm
}

/// L2-normalises along the last dimension in fp32 (per-cell feature vectors).
///
/// # Shapes
/// `z: [..., d]` -> same shape, float.
pub(crate) fn l2_normalize_last(z: &Tensor) -> Tensor {
    let z = z.to_kind(Kind::Float);
    let norm = z.norm_scalaropt_dim(2, [-1].as_slice(), true).clamp_min(1e-12); // [..., 1]
    z / norm
}
