//! The MoCo v2 projector: Linear(d -> hidden, bias) -> ReLU -> Linear(hidden -> dim, bias), no BN
//! (docs/method.md 1). Names follow OpenSelfSup's neck: `mlp.0`, `mlp.2` (torchvision's MoCo names
//! it `fc.0` / `fc.2`; the checkpoint exporter can rename).

use tch::Tensor;

use crate::config::InitScheme;
use crate::init;
use crate::params::ParamStore;

/// The two-layer MLP head.
#[derive(Debug)]
pub struct Projector {
    w0: Tensor,
    b0: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Projector {
    /// Registers `{prefix}.0.{weight,bias}` and `{prefix}.2.{weight,bias}`.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        init: InitScheme,
        d: i64,
        hidden: i64,
        dim: i64,
    ) -> Self {
        let (w0, b0) = init::linear(init, hidden, d);
        let (w2, b2) = init::linear(init, dim, hidden);
        Self {
            w0: store.add_param(format!("{prefix}.0.weight"), w0),
            b0: store.add_param(format!("{prefix}.0.bias"), b0),
            w2: store.add_param(format!("{prefix}.2.weight"), w2),
            b2: store.add_param(format!("{prefix}.2.bias"), b2),
        }
    }

    /// Projects pooled features (not normalised).
    ///
    /// # Shapes
    /// `x: [N, d]` -> `[N, dim]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w0, Some(&self.b0)).relu_().linear(&self.w2, Some(&self.b2))
    }
}
