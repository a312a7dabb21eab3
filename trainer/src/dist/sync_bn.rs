//! SyncBN: batch normalisation whose batch statistics are those of every rank's samples together,
//! as `torch.nn.SyncBatchNorm` (SimSiam normalises its whole global batch, docs/method.md 6.1).
//!
//! One autograd function in the dist shim (`csrc/sync_bn.cpp`): each rank computes its per-channel
//! mean, biased variance and sample count in fp32; **one** all-gather per layer gives every rank all
//! of them, and the global statistics follow from the law of total variance
//!
//! ```text
//! mean = sum_r w_r mean_r,   var = sum_r w_r (var_r + (mean_r - mean)^2),   w_r = n_r / N
//! ```
//!
//! (numerically stable: no sum of squares minus squared sum). The backward makes **one** all-reduce
//! of the two per-channel gradient sums, so a rank's input gradient includes what its samples
//! contribute to the other ranks' losses; with the parameter gradients averaged over ranks
//! afterwards, every gradient equals that of plain BN on the concatenated batch with the mean of the
//! ranks' losses. Nothing waits on the host (the counts and statistics stay on the device), and the
//! input's dtype and memory format are kept (a bf16 channels_last activation stays one; only the
//! input is saved for the backward, as in plain BN).

use tch::Tensor;

use crate::dist::Dist;
use crate::error::Result;

/// One batch-norm layer's affine parameters, running statistics and constants, as
/// `torch.nn.functional.batch_norm` takes them.
#[derive(Clone, Copy, Debug)]
pub struct BnParams<'a> {
    /// `gamma: [C]`, or `None` for no scale.
    pub weight: Option<&'a Tensor>,
    /// `beta: [C]`, or `None` for no shift.
    pub bias: Option<&'a Tensor>,
    /// `[C]` fp32, updated in place.
    pub running_mean: &'a Tensor,
    /// `[C]` fp32 (unbiased), updated in place.
    pub running_var: &'a Tensor,
    /// PyTorch's momentum of the running statistics (0.1).
    pub momentum: f64,
    /// Added to the variance (1e-5).
    pub eps: f64,
}

/// Normalises `x` with the statistics of every rank's batch, updating the running statistics of
/// `bn` like PyTorch's BN (`momentum`, unbiased variance), the same way on every rank. For a world
/// of one without a process group it is `batch_norm(training = true)`.
///
/// # Shapes
/// `x: [N, C, ...]` (any `N` per rank, any memory format, fp32 or bf16) -> same shape, dtype and
/// memory format; the statistics are computed in fp32.
///
/// # Errors
/// A failed collective or an input off the group's device ([`crate::Error::Dist`]).
pub fn sync_batch_norm(x: &Tensor, bn: &BnParams<'_>, dist: &Dist) -> Result<Tensor> {
    if let Some(y) = dist.sync_batch_norm(x, bn)? {
        return Ok(y);
    }
    Ok(Tensor::batch_norm(
        x,
        bn.weight,
        bn.bias,
        Some(bn.running_mean),
        Some(bn.running_var),
        true,
        bn.momentum,
        bn.eps,
        false,
    ))
}
