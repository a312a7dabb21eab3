//! SimSiam's heads (docs/method.md 6.1; Chen & He, <https://arxiv.org/abs/2011.10566>):
//!
//! - projector `mlp`: Linear(d -> h, no bias) -> BN -> ReLU -> Linear(h -> h, no bias) -> BN ->
//!   ReLU -> Linear(h -> dim, no bias) -> BN(dim, no affine). Indices follow the official
//!   `fc.{0..7}`
//!   (`mlp.0, mlp.1, mlp.3, mlp.4, mlp.6, mlp.7`). The official third Linear has a bias frozen at
//!   its init value; the affine-free BN after it cancels any constant, so it is left out.
//! - predictor: Linear(dim -> p, no bias) -> BN -> ReLU -> Linear(p -> dim, bias), names
//!   `{0, 1, 3}`.
//!
//! Every Linear keeps PyTorch's default init (the official code builds the heads after
//! torchvision's initialiser ran); BN weight 1, bias 0.

use tch::{Device, Tensor};

use crate::bn::{BatchNorm2d, BnMode};
use crate::error::Result;
use crate::init;
use crate::params::ParamStore;

fn linear(store: &mut ParamStore, name: &str, out: i64, inp: i64) -> Tensor {
    store.add_param(format!("{name}.weight"), init::default_uniform(&[out, inp], inp))
}

/// The 3-layer projector with BN.
#[derive(Debug)]
pub struct SimSiamProjector {
    w0: Tensor,
    bn1: BatchNorm2d,
    w3: Tensor,
    bn4: BatchNorm2d,
    w6: Tensor,
    bn7: BatchNorm2d,
}

impl SimSiamProjector {
    /// Registers `{prefix}.{0,1,3,4,6,7}.*`.
    pub fn new(store: &mut ParamStore, prefix: &str, d: i64, hidden: i64, dim: i64) -> Self {
        let w0 = linear(store, &format!("{prefix}.0"), hidden, d);
        let bn1 = BatchNorm2d::new(store, &format!("{prefix}.1"), hidden);
        let w3 = linear(store, &format!("{prefix}.3"), hidden, hidden);
        let bn4 = BatchNorm2d::new(store, &format!("{prefix}.4"), hidden);
        let w6 = linear(store, &format!("{prefix}.6"), dim, hidden);
        let bn7 = BatchNorm2d::without_affine(store, &format!("{prefix}.7"), dim);
        Self { w0, bn1, w3, bn4, w6, bn7 }
    }

    /// Projects pooled features; BN per `mode` (batch statistics of the whole call in training).
    ///
    /// # Shapes
    /// `x: [N, d]` -> `[N, dim]`.
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Tensor {
        let y = self.bn1.forward(&x.linear(&self.w0, None::<Tensor>), mode).relu_();
        let y = self.bn4.forward(&y.linear(&self.w3, None::<Tensor>), mode).relu_();
        self.bn7.forward(&y.linear(&self.w6, None::<Tensor>), mode)
    }
}

/// The predictor `h`, with its own named tensors (`predictor.*` in a checkpoint).
#[derive(Debug)]
pub struct Predictor {
    store: ParamStore,
    w0: Tensor,
    bn1: BatchNorm2d,
    w3: Tensor,
    b3: Tensor,
}

impl Predictor {
    /// Builds `dim -> hidden -> dim` on the CPU (libtorch's default generator), then moves it to
    /// `device`.
    ///
    /// # Errors
    /// A libtorch failure while moving.
    pub fn new(dim: i64, hidden: i64, device: Device) -> Result<Self> {
        let mut store = ParamStore::new();
        let w0 = linear(&mut store, "0", hidden, dim);
        let bn1 = BatchNorm2d::new(&mut store, "1", hidden);
        let w3 = linear(&mut store, "3", dim, hidden);
        let b3 = store.add_param("3.bias".into(), init::default_uniform(&[dim], hidden));
        if device != Device::Cpu {
            store.to_device(device);
        }
        Ok(Self { store, w0, bn1, w3, b3 })
    }

    /// The named tensors.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// `p = h(z)` (not normalised).
    ///
    /// # Shapes
    /// `z: [N, dim]` -> `[N, dim]`.
    pub fn forward(&self, z: &Tensor, mode: BnMode) -> Tensor {
        let y = self.bn1.forward(&z.linear(&self.w0, None::<Tensor>), mode).relu_();
        y.linear(&self.w3, Some(&self.b3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SplitBnImpl;
    use tch::Kind;

    #[test]
    fn names_shapes_and_the_affine_free_output_bn() {
        tch::manual_seed(0);
        let mut store = ParamStore::new();
        let proj = SimSiamProjector::new(&mut store, "1.mlp", 8, 12, 6);
        let names: Vec<&str> = store.params().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "1.mlp.0.weight",
                "1.mlp.1.weight",
                "1.mlp.1.bias",
                "1.mlp.3.weight",
                "1.mlp.4.weight",
                "1.mlp.4.bias",
                "1.mlp.6.weight"
            ]
        );
        assert!(
            store.get("1.mlp.7.running_var").is_some() && store.get("1.mlp.7.weight").is_none()
        );
        let x = Tensor::randn([10, 8], (Kind::Float, Device::Cpu));
        let z = proj.forward(&x, BnMode::train(1, SplitBnImpl::Chunked));
        assert_eq!(z.size(), [10, 6]);
        // BN without affine: each output column has batch mean 0 and (biased) variance ~1.
        let mean = z.mean_dim(0, false, Kind::Float);
        let var = z.var_correction([0].as_slice(), 0, false);
        assert!(mean.abs().max().double_value(&[]) < 1e-5);
        assert!((var - 1.0).abs().max().double_value(&[]) < 1e-3);
        let pred = Predictor::new(6, 3, Device::Cpu).unwrap();
        assert_eq!(pred.forward(&z, BnMode::eval()).size(), [10, 6]);
        let names: Vec<&str> = pred.store().entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "0.weight",
                "1.weight",
                "1.bias",
                "1.running_mean",
                "1.running_var",
                "1.num_batches_tracked",
                "3.weight",
                "3.bias"
            ]
        );
    }
}
