//! The optimisers, written over tensors so their state checkpoints (docs/method.md 2.6): SGD with
//! momentum (`v = mu v + (g + wd w)`, `w -= lr v`; dampening 0, no Nesterov) and AdamW (PyTorch's,
//! decoupled weight decay, `adamw.rs`).
//!
//! Parameters sit in groups; a group's learning rate is the scheduled LR times `lr_scale`, or a
//! fixed value (`fixed_lr`, e.g. SimSiam's predictor with `--fix-pred-lr`), and its own weight
//! decay ([`Optimizer::add_store`] splits a network into a decayed group and one without decay
//! for norms, biases and position tables, timm's rule). SGD runs as one multi-tensor call per
//! group (`_fused_sgd_` on CUDA, `_foreach` ops elsewhere).
//!
//! In a multi-process run ([`Optimizer::set_dist`]) the gradients are first averaged over the
//! ranks, in flat buckets (one all-reduce for ResNet-50), so every rank applies the same update
//! and the replicas stay identical: each rank's loss is the mean over its share of the batch, and
//! the mean of those is the loss of the whole batch. Gradient clipping ([`Optimizer::set_clip`])
//! then scales every gradient by `min(1, max_norm / (norm + 1e-6))`, the global norm of all of
//! them (PyTorch's `clip_grad_norm_`).

mod adamw;

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::config::{Config, OptimizerKind};
use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::params::ParamStore;

/// The update rule and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// SGD with momentum; `fused` picks libtorch's fused kernel (CUDA).
    Sgd {
        /// Momentum.
        momentum: f64,
        /// Use `_fused_sgd_` on CUDA.
        fused: bool,
    },
    /// AdamW.
    AdamW {
        /// `(beta1, beta2)`.
        betas: [f64; 2],
        /// Epsilon.
        eps: f64,
    },
}

impl Rule {
    /// The rule of `config.optim` (SGD fused on CUDA).
    pub fn for_config(config: &Config) -> Self {
        let o = &config.optim;
        match o.optimizer {
            OptimizerKind::AdamW => Rule::AdamW { betas: o.betas, eps: o.eps },
            _ => Rule::Sgd { momentum: o.momentum, fused: true },
        }
    }

    /// Names of the state tensors per parameter (suffixes of its name in a checkpoint).
    fn state_names(&self) -> &'static [&'static str] {
        match self {
            Rule::Sgd { .. } => &[""],
            Rule::AdamW { .. } => &[".exp_avg", ".exp_avg_sq"],
        }
    }
}

/// One parameter group.
#[derive(Debug)]
pub struct ParamGroup {
    /// Names (for checkpoints), parallel to `params`.
    pub names: Vec<String>,
    /// The parameters (leaf tensors that require grad).
    pub params: Vec<Tensor>,
    /// The rule's state per parameter, zero-initialised, parallel to `params`: SGD's momentum
    /// buffer; AdamW's first and second moments.
    pub state: Vec<Vec<Tensor>>,
    /// Multiplier on the scheduled LR.
    pub lr_scale: f64,
    /// A constant LR that ignores the schedule.
    pub fixed_lr: Option<f64>,
    /// Weight decay.
    pub weight_decay: f64,
}

/// The optimiser.
#[derive(Debug)]
pub struct Optimizer {
    groups: Vec<ParamGroup>,
    rule: Rule,
    /// AdamW's number of updates so far (a float scalar on the parameters' device), for the bias
    /// corrections; saved as `updates`.
    updates: Option<Tensor>,
    clip: Option<f64>,
    dist: Option<Dist>,
}

impl Optimizer {
    /// An optimiser with no groups.
    pub fn new(rule: Rule) -> Self {
        Self { groups: Vec::new(), rule, updates: None, clip: None, dist: None }
    }

    /// The optimiser of `config.optim` (rule, gradient clipping), with no groups.
    pub fn for_config(config: &Config) -> Self {
        let mut opt = Self::new(Rule::for_config(config));
        opt.set_clip(config.optim.clip_grad);
        opt
    }

    /// SGD with `momentum` and no groups; `fused` picks libtorch's fused kernel (CUDA).
    pub fn sgd(momentum: f64, fused: bool) -> Self {
        Self::new(Rule::Sgd { momentum, fused })
    }

    /// The rule.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// Averages the gradients over the ranks of `dist` before every update.
    pub fn set_dist(&mut self, dist: Dist) {
        self.dist = Some(dist);
    }

    /// Clips the global gradient norm to `max_norm` before every update (`0` = off).
    pub fn set_clip(&mut self, max_norm: f64) {
        self.clip = (max_norm > 0.0).then_some(max_norm);
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
        let params: Vec<&crate::params::Named> = store.params().collect();
        self.push_group(&params, prefix, weight_decay, lr_scale, fixed_lr);
    }

    /// Adds the trainable parameters of `store` with `weight_decay` (one group), or, without
    /// `decay_all`, as two groups: the weights with `weight_decay` and, without decay, the norms,
    /// biases and position tables (every 1-d tensor, `*.bias`, and timm's `pos_embed`,
    /// `cls_token`, `relative_position_bias_table`).
    pub fn add_store(
        &mut self,
        store: &ParamStore,
        prefix: &str,
        weight_decay: f64,
        decay_all: bool,
    ) {
        if decay_all {
            return self.add_group(store, prefix, weight_decay, 1.0, None);
        }
        let (decay, no_decay): (Vec<_>, Vec<_>) = store.params().partition(|e| !skips_decay(e));
        self.push_group(&decay, prefix, weight_decay, 1.0, None);
        self.push_group(&no_decay, prefix, 0.0, 1.0, None);
    }

    fn push_group(
        &mut self,
        params: &[&crate::params::Named],
        prefix: &str,
        weight_decay: f64,
        lr_scale: f64,
        fixed_lr: Option<f64>,
    ) {
        let states = self.rule.state_names().len();
        let mut g = ParamGroup {
            names: Vec::new(),
            params: Vec::new(),
            state: Vec::new(),
            lr_scale,
            fixed_lr,
            weight_decay,
        };
        for e in params {
            g.names.push(format!("{prefix}{}", e.name));
            g.state.push((0..states).map(|_| e.tensor.detach().zeros_like()).collect());
            g.params.push(e.tensor.shallow_clone());
        }
        if self.updates.is_none()
            && matches!(self.rule, Rule::AdamW { .. })
            && let Some(p) = g.params.first()
        {
            self.updates = Some(Tensor::zeros([], (Kind::Float, p.device())));
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
    /// averaged over the ranks first; then clipped, when asked.
    ///
    /// # Errors
    /// A libtorch failure, or a failed all-reduce ([`Error::Dist`]).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let grads: Vec<Tensor> = self
            .groups
            .iter()
            .flat_map(|g| g.params.iter().map(Tensor::grad))
            .filter(Tensor::defined)
            .collect();
        if let Some(dist) = self.dist.as_ref().filter(|d| d.is_distributed()) {
            dist.all_reduce_mean_(&grads.iter().collect::<Vec<_>>())?;
        }
        tch::no_grad(|| {
            if let Some(max_norm) = self.clip {
                clip_grad_norm(&grads, max_norm);
            }
            if let Some(t) = &self.updates {
                let _ = t.shallow_clone().f_add_scalar_(1.0)?;
            }
            for g in &self.groups {
                let lr = g.fixed_lr.unwrap_or(lr * g.lr_scale);
                let live: Vec<usize> =
                    (0..g.params.len()).filter(|&i| g.params[i].grad().defined()).collect();
                if live.is_empty() {
                    continue;
                }
                match self.rule {
                    Rule::Sgd { momentum, fused } => {
                        let p: Vec<&Tensor> = live.iter().map(|&i| &g.params[i]).collect();
                        let grads: Vec<Tensor> = p.iter().map(|t| t.grad()).collect();
                        let v: Vec<&Tensor> = live.iter().map(|&i| &g.state[i][0]).collect();
                        let fused = fused && p[0].device() != Device::Cpu;
                        let grad_refs: Vec<&Tensor> = grads.iter().collect();
                        crate::shim::sgd_step(
                            &p,
                            &grad_refs,
                            &v,
                            lr,
                            momentum,
                            g.weight_decay,
                            fused,
                        )?;
                    }
                    Rule::AdamW { betas, eps } => {
                        let t = self.updates.as_ref().expect("AdamW counts its updates");
                        let hyper = adamw::Hyper { lr, betas, eps, weight_decay: g.weight_decay };
                        for &i in &live {
                            adamw::update(&g.params[i], &g.state[i], t, hyper)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Every state tensor (parameter order, then AdamW's update count): what a multi-process
    /// start broadcasts from rank 0.
    pub fn state_tensors(&self) -> Vec<&Tensor> {
        let mut out: Vec<&Tensor> =
            self.groups.iter().flat_map(|g| g.state.iter().flatten()).collect();
        out.extend(&self.updates);
        out
    }

    /// The state by name (SGD: the parameter's name; AdamW: `{name}.exp_avg`,
    /// `{name}.exp_avg_sq`, and `updates`), as contiguous CPU tensors.
    pub fn export(&self) -> Vec<(String, Tensor)> {
        self.named_state()
            .into_iter()
            .map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous()))
            .collect()
    }

    /// The state tensors (on their device) under the names [`Optimizer::export`] gives them.
    pub fn named_state(&self) -> Vec<(String, &Tensor)> {
        let suffixes = self.rule.state_names();
        let mut named: Vec<(String, &Tensor)> = Vec::new();
        for g in &self.groups {
            for (n, s) in g.names.iter().zip(&g.state) {
                named.extend(suffixes.iter().zip(s).map(|(x, t)| (format!("{n}{x}"), t)));
            }
        }
        named.extend(self.updates.iter().map(|t| ("updates".to_string(), t)));
        named
    }

    /// Restores the state by name.
    ///
    /// # Errors
    /// A missing tensor or a shape mismatch.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        tch::no_grad(|| {
            for (n, b) in self.named_state() {
                let src = tensors
                    .get(&n)
                    .ok_or_else(|| Error::Input(format!("optimizer state `{n}` missing")))?;
                if src.size() != b.size() {
                    return Err(Error::Input(format!(
                        "optimizer state `{n}`: shape {:?} vs {:?}",
                        src.size(),
                        b.size()
                    )));
                }
                b.shallow_clone().f_copy_(src)?;
            }
            Ok(())
        })
    }
}

/// Whether timm's rule exempts a parameter from weight decay: norms and biases (1-d, `*.bias`)
/// and position tables.
fn skips_decay(e: &crate::params::Named) -> bool {
    e.tensor.dim() <= 1
        || e.name.ends_with(".bias")
        || ["pos_embed", "cls_token", "relative_position_bias_table"]
            .iter()
            .any(|k| e.name.contains(k))
}

/// Scales `grads` in place by `min(1, max_norm / (norm + 1e-6))`, `norm` the L2 norm of all of
/// them together, without a host sync.
fn clip_grad_norm(grads: &[Tensor], max_norm: f64) {
    if grads.is_empty() {
        return;
    }
    let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_kind(Kind::Float)).collect();
    let total = Tensor::stack(&norms, 0).norm(); // []
    let coef = ((total + 1e-6).reciprocal() * max_norm).clamp_max(1.0); // []
    for g in grads {
        let mut g = g.shallow_clone();
        g *= coef.to_kind(g.kind());
    }
}

#[cfg(test)]
mod tests;
