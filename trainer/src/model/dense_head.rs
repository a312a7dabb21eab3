//! DenseCL's dense projection head (docs/method.md 5.1): 1x1 Conv(d -> hidden, bias) -> ReLU ->
//! 1x1 Conv(hidden -> dim, bias) on the backbone's feature map, registered as `mlp2.{0,2}` next to
//! the global MLP (`mlp.{0,2}`) of the DenseCL neck. Both convs keep PyTorch's default init, as in
//! the official code (its neck initialiser only touches Linear and BN layers).

use tch::Tensor;

use crate::init;
use crate::params::ParamStore;

/// The conv-ReLU-conv head applied at every grid cell.
#[derive(Debug)]
pub struct DenseHead {
    w0: Tensor,
    b0: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl DenseHead {
    /// Registers `{prefix}.0.{weight,bias}` (`[hidden, d, 1, 1]`) and `{prefix}.2.{weight,bias}`
    /// (`[dim, hidden, 1, 1]`).
    pub fn new(store: &mut ParamStore, prefix: &str, d: i64, hidden: i64, dim: i64) -> Self {
        Self {
            w0: store.add_param(
                format!("{prefix}.0.weight"),
                init::default_uniform(&[hidden, d, 1, 1], d),
            ),
            b0: store.add_param(format!("{prefix}.0.bias"), init::default_uniform(&[hidden], d)),
            w2: store.add_param(
                format!("{prefix}.2.weight"),
                init::default_uniform(&[dim, hidden, 1, 1], hidden),
            ),
            b2: store.add_param(format!("{prefix}.2.bias"), init::default_uniform(&[dim], hidden)),
        }
    }

    /// The dense embeddings (not normalised), in the input's memory format.
    ///
    /// # Shapes
    /// `f: [B, d, Gh, Gw]` -> `[B, dim, Gh, Gw]`.
    pub fn forward(&self, f: &Tensor) -> Tensor {
        let conv = |x: &Tensor, w: &Tensor, b: &Tensor| x.conv2d(w, Some(b), [1], [0], [1], 1);
        conv(&conv(f, &self.w0, &self.b0).relu_(), &self.w2, &self.b2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// A 1x1 conv head is the MLP applied to each cell's feature vector.
    #[test]
    fn equals_per_cell_mlp_and_default_init_bounds() {
        tch::manual_seed(3);
        let mut store = ParamStore::new();
        let head = DenseHead::new(&mut store, "mlp2", 6, 5, 4);
        let f = Tensor::randn([2, 6, 3, 3], (Kind::Float, Device::Cpu));
        let y = head.forward(&f);
        assert_eq!(y.size(), [2, 4, 3, 3]);
        let w0 = store.get("mlp2.0.weight").unwrap().view([5, 6]);
        let w2 = store.get("mlp2.2.weight").unwrap().view([4, 5]);
        let rows = f.permute([0, 2, 3, 1]).reshape([18, 6]);
        let mlp = rows
            .linear(&w0, Some(store.get("mlp2.0.bias").unwrap()))
            .relu()
            .linear(&w2, Some(store.get("mlp2.2.bias").unwrap()));
        let y_rows = y.permute([0, 2, 3, 1]).reshape([18, 4]);
        assert!(y_rows.allclose(&mlp, 1e-5, 1e-6, false));
        let bound = 1.0 / 6f64.sqrt();
        assert!(w0.abs().max().double_value(&[]) <= bound);
    }
}
