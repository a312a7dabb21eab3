//! The AdamW update of one parameter (Loshchilov & Hutter 2019, as PyTorch's `torch.optim.AdamW`
//! with `amsgrad = False`), on the device, the bias corrections computed from the update count
//! tensor so that no value is read back to the host:
//!
//! ```text
//! w *= 1 - lr wd
//! m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
//! w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```

use tch::Tensor;

use crate::error::Result;

/// The hyper-parameters of one group's update.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hyper {
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
}

/// Updates `w` in place from its gradient; `state = [m, v]`, `t` the update count (already
/// incremented for this update).
pub(super) fn update(w: &Tensor, state: &[Tensor], t: &Tensor, h: Hyper) -> Result<()> {
    let g = w.grad();
    let (m, v) = (&state[0], &state[1]);
    let [b1, b2] = h.betas;
    let mut w = w.shallow_clone();
    if h.weight_decay != 0.0 {
        let _ = w.f_mul_scalar_(1.0 - h.lr * h.weight_decay)?;
    }
    let _ = m.shallow_clone().f_lerp_(&g, 1.0 - b1)?;
    let mut v = v.shallow_clone();
    let _ = v.f_mul_scalar_(b2)?;
    let _ = v.f_add_(&(&g * &g * (1.0 - b2)))?;
    let bc1: Tensor = 1.0 - Tensor::f_pow_scalar(b1, t)?; // 1 - b1^t, []
    let bc2: Tensor = 1.0 - Tensor::f_pow_scalar(b2, t)?; // 1 - b2^t, []
    let denom = v.sqrt() / bc2.sqrt() + h.eps;
    let step = (m / denom) * (bc1.reciprocal() * h.lr);
    let _ = w.f_sub_(&step.to_kind(w.kind()))?;
    Ok(())
}
