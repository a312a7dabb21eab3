//! The momentum (key) encoder update (docs/method.md 2.3):
//! `theta_k = m * theta_k + (1 - m) * theta_q` over **trainable parameters only**; BN running statistics and counters are not averaged
//! (the key encoder keeps its own, from its own forward passes).

use tch::Tensor;

use crate::error::{Error, Result};
use crate::params::ParamStore;

/// Updates `key` from `query` in place, with momentum `m`, in one multi-tensor call.
///
/// # Errors
/// If the two stores do not hold the same parameter names in the same order.
pub fn momentum_update(key: &ParamStore, query: &ParamStore, m: f64) -> Result<()> {
    let k: Vec<&Tensor> = key.params().map(|e| &e.tensor).collect();
    let q: Vec<&Tensor> = query.params().map(|e| &e.tensor).collect();
    if k.len() != q.len() || key.params().zip(query.params()).any(|(a, b)| a.name != b.name) {
        return Err(Error::Input("momentum update: encoders differ".into()));
    }
    tch::no_grad(|| crate::shim::ema_update(&k, &q, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, Stem};
    use crate::model::{BackboneSpec, Encoder, ResNetSpec};
    use crate::runtime::test_devices;

    /// docs/method.md 11.3 #8.
    #[test]
    fn ema_of_trainable_parameters_only() {
        for d in test_devices() {
            tch::manual_seed(0);
            let spec = BackboneSpec::ResNet(ResNetSpec {
                arch: Arch::ResNet18,
                stem: Stem::Small,
                width: 4,
                init: crate::config::InitScheme::OpenSelfSup,
                zero_init_residual: false,
            });
            let q = Encoder::new(spec, 16, 8, d, false).unwrap();
            let mut k = Encoder::new(spec, 16, 8, d, false).unwrap();
            k.store_mut().freeze();
            // Give the key encoder distinct buffers to see that they stay.
            for e in k.store().buffers() {
                let _ = e.tensor.shallow_clone().fill_(3);
            }
            let before: Vec<Tensor> = k.store().entries().iter().map(|e| e.tensor.copy()).collect();
            let m = 0.99;
            momentum_update(k.store(), q.store(), m).unwrap();
            for (e, old) in k.store().entries().iter().zip(&before) {
                if e.trainable {
                    let expect = old * m + q.store().get(&e.name).unwrap() * (1.0 - m);
                    assert!(e.tensor.allclose(&expect, 1e-6, 1e-7, false), "{}", e.name);
                } else {
                    assert!(e.tensor.equal(old), "buffer {} changed", e.name);
                }
            }
        }
    }
}
