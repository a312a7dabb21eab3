//! SyncBN: batch normalisation whose batch statistics are those of every rank's samples together,
//! as `torch.nn.SyncBatchNorm` (SimSiam normalises its whole global batch, docs/method.md 6.1).
//!
//! Each rank computes its per-channel mean and (biased) variance and its sample count; one
//! differentiable all-gather ([`Dist::all_gather_autograd`]) gives every rank all of them, and the
//! global statistics follow from the law of total variance:
//!
//! ```text
//! mean = sum_r w_r mean_r,   var = sum_r w_r (var_r + (mean_r - mean)^2),   w_r = n_r / N
//! ```
//!
//! (numerically stable: no sum of squares minus squared sum). Autograd differentiates the whole
//! composite; the gather's backward all-reduces the gradient of the statistics, so a rank's input
//! gradient includes what its samples contribute to the other ranks' losses. With the parameter
//! gradients averaged over ranks afterwards, every gradient equals that of plain BN on the
//! concatenated batch with the mean of the ranks' losses.

use tch::{Kind, Tensor};

use crate::dist::Dist;
use crate::error::Result;

/// Normalises `x` with the statistics of every rank's batch, updating the running statistics like
/// PyTorch's BN (`momentum`, unbiased variance), the same way on every rank. For a world of one
/// it equals `batch_norm(training = true)`.
///
/// # Shapes
/// `x: [N, C, ...]` (any `N` per rank, any memory format) -> same shape and dtype; the statistics
/// are computed in fp32.
///
/// # Errors
/// A failed collective ([`crate::Error::Dist`]).
#[allow(clippy::too_many_arguments)]
pub fn sync_batch_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f64,
    eps: f64,
    dist: &Dist,
) -> Result<Tensor> {
    let size = x.size();
    let c = size[1];
    let dims: Vec<i64> = (0..size.len() as i64).filter(|&d| d != 1).collect();
    let mut shape = vec![1i64; size.len()];
    shape[1] = c; // [1, C, 1, ...]
    let n_local = (x.numel() as i64 / c.max(1)) as f64;

    let xf = x.to_kind(Kind::Float);
    let mean = xf.mean_dim(dims.as_slice(), false, Kind::Float); // [C]
    let var =
        (&xf - mean.view(shape.as_slice())).square().mean_dim(dims.as_slice(), false, Kind::Float); // [C], biased
    let count = Tensor::full([1], n_local, (Kind::Float, x.device()));
    let stats = Tensor::cat(&[mean, var, count], 0).unsqueeze(0); // [1, 2C + 1]
    let all = dist.all_gather_autograd(&stats)?; // [W, 2C + 1]
    let means = all.narrow(1, 0, c); // [W, C]
    let vars = all.narrow(1, c, c); // [W, C]
    let counts = all.narrow(1, 2 * c, 1).detach(); // [W, 1]
    let total = counts.sum(Kind::Float);
    let w = &counts / &total; // [W, 1]
    let mean = (&w * &means).sum_dim_intlist(0, false, Kind::Float); // [C]
    let var = (&w * (&vars + (&means - mean.unsqueeze(0)).square())).sum_dim_intlist(
        0,
        false,
        Kind::Float,
    ); // [C]

    tch::no_grad(|| {
        let n = total.double_value(&[]);
        let unbiased = &var * (n / (n - 1.0).max(1.0));
        let mut rm = running_mean.shallow_clone();
        let mut rv = running_var.shallow_clone();
        let _ = rm.g_mul_scalar_(1.0 - momentum).g_add_(&(&mean * momentum));
        let _ = rv.g_mul_scalar_(1.0 - momentum).g_add_(&(unbiased * momentum));
    });

    let inv = (var + eps).rsqrt(); // [C]
    let mut y = (xf - mean.view(shape.as_slice())) * inv.view(shape.as_slice());
    if let Some(w) = weight {
        y *= w.view(shape.as_slice());
    }
    if let Some(b) = bias {
        y += b.view(shape.as_slice());
    }
    Ok(y.to_kind(x.kind()))
}
