//! MoBY's projector and predictor (Xie et al. 2021, <https://arxiv.org/abs/2105.04553>; the
//! official `MoBYMLP` with two layers): Linear(d -> hidden, bias) -> BN -> ReLU -> Linear(hidden
//! -> dim, bias), under the official names `linear_hidden.1`, `linear_hidden.2` (the BN) and
//! `linear_out`. Linear layers keep PyTorch's default init (the official code builds them after the
//! backbone's initialiser ran), BN weight 1 and bias 0.

use tch::{Device, Tensor};

use crate::bn::{BatchNorm2d, BnMode};
use crate::error::Result;
use crate::init;
use crate::params::ParamStore;

/// The two-layer MLP with BN of MoBY's projector and predictor.
#[derive(Debug)]
pub struct MobyMlp {
    w1: Tensor,
    b1: Tensor,
    bn: BatchNorm2d,
    w_out: Tensor,
    b_out: Tensor,
}

impl MobyMlp {
    /// Registers `{prefix}.linear_hidden.{1,2}.*` and `{prefix}.linear_out.*` (`prefix` may be
    /// empty).
    pub fn new(store: &mut ParamStore, prefix: &str, d: i64, hidden: i64, dim: i64) -> Self {
        let p = |n: &str| if prefix.is_empty() { n.to_string() } else { format!("{prefix}.{n}") };
        let w1 =
            store.add_param(p("linear_hidden.1.weight"), init::default_uniform(&[hidden, d], d));
        let b1 = store.add_param(p("linear_hidden.1.bias"), init::default_uniform(&[hidden], d));
        let bn = BatchNorm2d::new(store, &p("linear_hidden.2"), hidden);
        let w_out =
            store.add_param(p("linear_out.weight"), init::default_uniform(&[dim, hidden], hidden));
        let b_out = store.add_param(p("linear_out.bias"), init::default_uniform(&[dim], hidden));
        Self { w1, b1, bn, w_out, b_out }
    }

    /// `linear_out(relu(bn(linear_hidden(x))))`, BN per `mode` (statistics over the rows of the
    /// call, every rank's with SyncBN).
    ///
    /// # Shapes
    /// `x: [N, d]` -> `[N, dim]`.
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Tensor {
        let h = self.bn.forward(&x.linear(&self.w1, Some(&self.b1)), mode).relu_();
        h.linear(&self.w_out, Some(&self.b_out))
    }
}

/// MoBY's predictor with its own named tensors (`predictor.*` in a checkpoint).
#[derive(Debug)]
pub struct MobyPredictor {
    store: ParamStore,
    mlp: MobyMlp,
}

impl MobyPredictor {
    /// Builds `dim -> hidden -> dim` on the CPU (libtorch's default generator), then moves it to
    /// `device`.
    ///
    /// # Errors
    /// A libtorch failure while moving.
    pub fn new(dim: i64, hidden: i64, device: Device) -> Result<Self> {
        let mut store = ParamStore::new();
        let mlp = MobyMlp::new(&mut store, "", dim, hidden, dim);
        if device != Device::Cpu {
            store.to_device(device);
        }
        Ok(Self { store, mlp })
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
        self.mlp.forward(z, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SplitBnImpl;
    use tch::Kind;

    #[test]
    fn official_names_and_shapes() {
        tch::manual_seed(0);
        let p = MobyPredictor::new(8, 32, Device::Cpu).unwrap();
        let names: Vec<&str> = p.store().entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "linear_hidden.1.weight",
                "linear_hidden.1.bias",
                "linear_hidden.2.weight",
                "linear_hidden.2.bias",
                "linear_hidden.2.running_mean",
                "linear_hidden.2.running_var",
                "linear_hidden.2.num_batches_tracked",
                "linear_out.weight",
                "linear_out.bias"
            ]
        );
        let z = Tensor::randn([6, 8], (Kind::Float, Device::Cpu));
        let y = p.forward(&z, BnMode::train(1, SplitBnImpl::Chunked));
        assert_eq!(y.size(), [6, 8]);
    }
}
