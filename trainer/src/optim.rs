//! SGD with momentum and weight decay, written over tensors so its state checkpoints
//! (docs/method.md 2.6): `v = mu v + (g + wd w)`, `w -= lr v`; dampening 0, no Nesterov, weight
//! decay on every parameter (BN and biases included).
//!
//! Parameters sit in groups; a group's learning rate is the scheduled LR times `lr_scale`, or a
//! fixed value (`fixed_lr`, e.g. SimSiam's predictor with `--fix-pred-lr`). The update runs as one
//! multi-tensor call per group (`_fused_sgd_` on CUDA, `_foreach` ops elsewhere).
//!
//! In a multi-process run ([`Sgd::set_dist`]) the gradients are first averaged over the ranks, in
//! flat buckets (one all-reduce for ResNet-50), so every rank applies the same update and the
//! replicas stay identical: each rank's loss is the mean over its share of the batch, and the mean
//! of those is the loss of the whole batch.

use std::collections::HashMap;

use tch::{Device, Tensor};

use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::params::ParamStore;

/// One parameter group.
#[derive(Debug)]
pub struct ParamGroup {
    /// Names (for checkpoints), parallel to `params`.
    pub names: Vec<String>,
    /// The parameters (leaf tensors that require grad).
    pub params: Vec<Tensor>,
    /// Momentum buffers, zero-initialised, parallel to `params`.
    pub bufs: Vec<Tensor>,
    /// Multiplier on the scheduled LR.
    pub lr_scale: f64,
    /// A constant LR that ignores the schedule.
    pub fixed_lr: Option<f64>,
    /// Weight decay.
    pub weight_decay: f64,
}

/// The optimiser.
#[derive(Debug)]
pub struct Sgd {
    groups: Vec<ParamGroup>,
    momentum: f64,
    fused: bool,
    dist: Option<Dist>,
}

impl Sgd {
    /// An optimiser with no groups. `fused` picks libtorch's fused kernel (CUDA).
    pub fn new(momentum: f64, fused: bool) -> Self {
        Self { groups: Vec::new(), momentum, fused, dist: None }
    }

    /// Averages the gradients over the ranks of `dist` before every update.
    pub fn set_dist(&mut self, dist: Dist) {
        self.dist = Some(dist);
    }

    /// Adds every trainable parameter of `store` (names prefixed by `prefix`) as one group.
    pub fn add_group(
        &mut self,
        store: &ParamStore,
        prefix: &str,
        weight_decay: f64,
        lr_scale: f64,
        fixed_lr: Option<f64>,
    ) {
        let mut g = ParamGroup {
            names: Vec::new(),
            params: Vec::new(),
            bufs: Vec::new(),
            lr_scale,
            fixed_lr,
            weight_decay,
        };
        for e in store.params() {
            g.names.push(format!("{prefix}{}", e.name));
            g.bufs.push(e.tensor.detach().zeros_like());
            g.params.push(e.tensor.shallow_clone());
        }
        self.groups.push(g);
    }

    /// The groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for g in &mut self.groups {
            for p in &mut g.params {
                p.zero_grad();
            }
        }
    }

    /// One step with the scheduled learning rate `lr`. Parameters without a gradient are skipped
    /// (on every rank alike: the ranks run the same graph). With a [`Dist`], the gradients are
    /// averaged over the ranks first.
    ///
    /// # Errors
    /// A libtorch failure, or a failed all-reduce ([`Error::Dist`]).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        if let Some(dist) = self.dist.as_ref().filter(|d| d.is_distributed()) {
            let grads: Vec<Tensor> = self
                .groups
                .iter()
                .flat_map(|g| g.params.iter().map(Tensor::grad))
                .filter(Tensor::defined)
                .collect();
            dist.all_reduce_mean_(&grads.iter().collect::<Vec<_>>())?;
        }
        tch::no_grad(|| {
            for g in &self.groups {
                let lr = g.fixed_lr.unwrap_or(lr * g.lr_scale);
                let mut p = Vec::new();
                let mut grads = Vec::new();
                let mut v = Vec::new();
                for (param, buf) in g.params.iter().zip(&g.bufs) {
                    let grad = param.grad();
                    if grad.defined() {
                        p.push(param);
                        grads.push(grad);
                        v.push(buf);
                    }
                }
                if p.is_empty() {
                    continue;
                }
                let grad_refs: Vec<&Tensor> = grads.iter().collect();
                let fused = self.fused && p[0].device() != Device::Cpu;
                crate::shim::sgd_step(
                    &p,
                    &grad_refs,
                    &v,
                    lr,
                    self.momentum,
                    g.weight_decay,
                    fused,
                )?;
            }
            Ok(())
        })
    }

    /// The momentum buffers by parameter name, as contiguous CPU tensors.
    pub fn export(&self) -> Vec<(String, Tensor)> {
        self.groups
            .iter()
            .flat_map(|g| g.names.iter().zip(&g.bufs))
            .map(|(n, b)| (n.clone(), b.to_device(Device::Cpu).contiguous()))
            .collect()
    }

    /// Restores momentum buffers by name.
    ///
    /// # Errors
    /// A missing buffer or a shape mismatch.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        tch::no_grad(|| {
            for g in &self.groups {
                for (n, b) in g.names.iter().zip(&g.bufs) {
                    let src = tensors
                        .get(n)
                        .ok_or_else(|| Error::Input(format!("momentum buffer `{n}` missing")))?;
                    if src.size() != b.size() {
                        return Err(Error::Input(format!(
                            "momentum buffer `{n}`: shape {:?} vs {:?}",
                            src.size(),
                            b.size()
                        )));
                    }
                    b.shallow_clone().copy_(src);
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_devices;
    use tch::Kind;

    /// Two steps against PyTorch's SGD formula written out by hand, with a fixed-LR group, on every
    /// device (`_fused_sgd_` on CUDA, `_foreach` ops on the CPU).
    #[test]
    fn matches_pytorch_sgd() {
        for d in test_devices() {
            tch::manual_seed(0);
            let mut store = ParamStore::new();
            let _ = store.add_param("w".into(), Tensor::randn([3, 4], (Kind::Float, d)));
            let mut head = ParamStore::new();
            let _ = head.add_param("h".into(), Tensor::randn([2], (Kind::Float, d)));
            let mut sgd = Sgd::new(0.9, true);
            sgd.add_group(&store, "", 1e-4, 1.0, None);
            sgd.add_group(&head, "pred.", 1e-4, 1.0, Some(0.05));
            let x = Tensor::randn([5, 3], (Kind::Float, d));
            let w = store.get("w").unwrap();
            let h = head.get("h").unwrap();
            let mut w_ref = w.detach().copy();
            let mut v_ref = w_ref.zeros_like();
            let mut h_ref = h.detach().copy();
            let mut hv_ref = h_ref.zeros_like();
            for (step, lr) in [0.1, 0.07].into_iter().enumerate() {
                sgd.zero_grad();
                let loss =
                    x.matmul(w).pow_tensor_scalar(2).sum(Kind::Float) + (h * h).sum(Kind::Float);
                loss.backward();
                let g = w.grad().copy();
                let hg = h.grad().copy();
                sgd.step(lr).unwrap();
                v_ref = &v_ref * 0.9 + (g + &w_ref * 1e-4);
                w_ref = &w_ref - &v_ref * lr;
                hv_ref = &hv_ref * 0.9 + (hg + &h_ref * 1e-4);
                h_ref = &h_ref - &hv_ref * 0.05;
                assert!(w.allclose(&w_ref, 1e-6, 1e-7, false), "step {step}");
                assert!(h.allclose(&h_ref, 1e-6, 1e-7, false), "fixed-lr group, step {step}");
            }
            let state = sgd.export();
            assert_eq!(state.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["w", "pred.h"]);
            let v_ref = v_ref.to_device(state[0].1.device());
            assert!(state[0].1.allclose(&v_ref, 1e-6, 1e-7, false));
        }
    }
}
