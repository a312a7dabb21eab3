//! Networks: the ResNet backbone, the MoCo v2 projector, and the encoder that pairs them.

mod projector;
mod resnet;

pub use projector::Projector;
pub use resnet::{Arch, ResNet, ResNetSpec, Stem};

use tch::{Device, Kind, Tensor};

use crate::bn::BnMode;
use crate::error::Result;
use crate::params::ParamStore;

/// A backbone `f` and a projector `g`, registered under OpenSelfSup's names: `0.<torchvision>` for
/// the backbone and `1.mlp.{0,2}` for the projector (a checkpoint prefixes `encoder_q.` /
/// `encoder_k.`).
#[derive(Debug)]
pub struct Encoder {
    store: ParamStore,
    backbone: ResNet,
    projector: Projector,
}

impl Encoder {
    /// Builds an encoder on the CPU (initialised from libtorch's default generator), then moves it
    /// to `device`, converting conv weights to channels_last when asked.
    ///
    /// # Errors
    /// A libtorch failure while moving or converting.
    pub fn new(
        spec: ResNetSpec,
        hidden: i64,
        dim: i64,
        device: Device,
        channels_last: bool,
    ) -> Result<Self> {
        let mut store = ParamStore::new();
        let backbone = ResNet::new(&mut store, "0", spec);
        let projector =
            Projector::new(&mut store, "1.mlp", spec.init, spec.feature_dim(), hidden, dim);
        if device != Device::Cpu {
            store.to_device(device);
        }
        if channels_last {
            store.to_channels_last()?;
        }
        Ok(Self { store, backbone, projector })
    }

    /// The named tensors.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The named tensors, mutable (freezing the key encoder).
    pub fn store_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    /// The backbone spec.
    pub fn spec(&self) -> &ResNetSpec {
        self.backbone.spec()
    }

    /// Backbone feature map `f(x)`.
    ///
    /// # Shapes
    /// `x: [B, 3, H, W]` -> `[B, D, H/R, W/R]`.
    pub fn features(&self, x: &Tensor, mode: BnMode) -> Tensor {
        self.backbone.forward(x, mode)
    }

    /// Projector `g` on pooled features.
    ///
    /// # Shapes
    /// `v: [N, D]` -> `[N, dim]`.
    pub fn project(&self, v: &Tensor) -> Tensor {
        self.projector.forward(v)
    }

    /// The global embedding `g(avgpool(f(x)))`, not normalised.
    ///
    /// # Shapes
    /// `x: [B, 3, H, W]` -> `[B, dim]`.
    pub fn embed(&self, x: &Tensor, mode: BnMode) -> Tensor {
        let f = self.features(x, mode); // [B, D, G, G]
        self.project(&f.mean_dim([2, 3].as_slice(), false, f.kind()))
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
