//! The pieces both vision transformers ([`super::Swin`], [`super::Vit`]) are made of, with timm's
//! names and initialisation: Linear (`weight`, `bias`; truncated normal, std 0.02, zero bias),
//! LayerNorm (`weight` 1, `bias` 0), the GELU MLP (`fc1`, `fc2`), multi-head self-attention
//! (`qkv`, `proj`) and stochastic depth ([`DropPath`]).
//!
//! timm draws its weights with `trunc_normal_(std=0.02)`, truncated at +-2 (absolute): 100
//! standard deviations, so a plain normal draw has the same distribution.

use tch::{Device, Kind, Tensor};

use crate::params::ParamStore;
use crate::rng::KeyedRng;

/// timm's `Linear` init: weight `N(0, 0.02^2)`, bias 0.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Registers `{name}.weight` `[out, inp]` and, with `bias`, `{name}.bias` `[out]`.
    pub(crate) fn new(s: &mut ParamStore, name: &str, inp: i64, out: i64, bias: bool) -> Self {
        let weight = s.add_param(format!("{name}.weight"), normal(&[out, inp], 0.02));
        let bias = bias.then(|| s.add_param(format!("{name}.bias"), zeros(&[out])));
        Self { weight, bias }
    }

    /// # Shapes
    /// `x: [..., inp]` -> `[..., out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// A LayerNorm over the last dimension.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Registers `{name}.weight` (1) and `{name}.bias` (0), `[dim]`.
    pub(crate) fn new(s: &mut ParamStore, name: &str, dim: i64, eps: f64) -> Self {
        let weight = s.add_param(format!("{name}.weight"), zeros(&[dim]) + 1.0);
        let bias = s.add_param(format!("{name}.bias"), zeros(&[dim]));
        Self { weight, bias, eps }
    }

    /// # Shapes
    /// `x: [..., dim]` -> same.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let dim = self.weight.size()[0];
        x.layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

/// timm's `Mlp`: `fc1` -> GELU (exact) -> `fc2`.
#[derive(Debug)]
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// Registers `{name}.fc1` (`dim -> hidden`) and `{name}.fc2` (`hidden -> dim`).
    pub(crate) fn new(s: &mut ParamStore, name: &str, dim: i64, hidden: i64) -> Self {
        let fc1 = Linear::new(s, &format!("{name}.fc1"), dim, hidden, true);
        let fc2 = Linear::new(s, &format!("{name}.fc2"), hidden, dim, true);
        Self { fc1, fc2 }
    }

    /// # Shapes
    /// `x: [..., dim]` -> same.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).gelu("none"))
    }
}

/// Multi-head attention's projections (`qkv`, `proj`): the part ViT and Swin's window attention
/// share.
#[derive(Debug)]
pub(crate) struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: i64,
}

impl Attention {
    /// Registers `{name}.qkv` (`dim -> 3 dim`, with bias) and `{name}.proj`.
    pub(crate) fn new(s: &mut ParamStore, name: &str, dim: i64, heads: i64) -> Self {
        let qkv = Linear::new(s, &format!("{name}.qkv"), dim, 3 * dim, true);
        let proj = Linear::new(s, &format!("{name}.proj"), dim, dim, true);
        Self { qkv, proj, heads }
    }

    /// Queries, keys and values per head.
    ///
    /// # Shapes
    /// `x: [N, T, C]` -> three `[N, heads, T, C / heads]`.
    pub(crate) fn qkv(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (n, t, c) = x.size3().expect("tokens are [N, T, C]");
        let qkv = self.qkv.forward(x).reshape([n, t, 3, self.heads, c / self.heads]);
        let qkv = qkv.permute([2, 0, 3, 1, 4]); // [3, N, heads, T, d]
        (qkv.get(0), qkv.get(1), qkv.get(2))
    }

    /// Merges the heads and projects.
    ///
    /// # Shapes
    /// `o: [N, heads, T, d]` -> `[N, T, heads * d]`.
    pub(crate) fn out(&self, o: &Tensor) -> Tensor {
        let (n, h, t, d) = o.size4().expect("heads are [N, heads, T, d]");
        self.proj.forward(&o.transpose(1, 2).reshape([n, t, h * d]))
    }

    /// Number of heads.
    pub(crate) fn heads(&self) -> i64 {
        self.heads
    }
}

/// Stochastic depth for one training forward pass (Huang et al. 2016, as timm's `DropPath`): the
/// residual branch of block `i` is dropped for a sample with probability `rate_i` and scaled by
/// `1 / (1 - rate_i)` otherwise. Rates grow linearly from 0 at the first block to the model's
/// drop-path rate at the last (timm's `linspace(0, rate, depth)`).
///
/// The draws are keyed, not taken from a generator: sample `s` of block `i` is kept when
/// `KeyedRng([key.., s, i])` says so, `s` the sample's index in the **global** batch, so a resumed
/// run and a run on any number of processes drop the same branches.
#[derive(Debug)]
pub struct DropPath {
    /// `[blocks, B]` per-sample residual scales (0 or `1 / (1 - rate_i)`), on the device.
    scales: Tensor,
}

impl DropPath {
    /// Draws the masks of `rates.len()` blocks for the `batch` samples `first_sample..` of the
    /// global batch; `None` when every rate is 0.
    pub fn draw(
        rates: &[f64],
        key: &[u64],
        first_sample: u64,
        batch: i64,
        device: Device,
    ) -> Option<Self> {
        if rates.iter().all(|&r| r <= 0.0) {
            return None;
        }
        let mut scales = Vec::with_capacity(rates.len() * batch as usize);
        for (i, &rate) in rates.iter().enumerate() {
            let keep = 1.0 - rate;
            for s in first_sample..first_sample + batch as u64 {
                let mut k = key.to_vec();
                k.extend([s, i as u64]);
                let kept = rate <= 0.0 || KeyedRng::new(&k).next_f64() < keep;
                scales.push(if kept { (1.0 / keep) as f32 } else { 0.0 });
            }
        }
        let t = Tensor::from_slice(&scales).view([rates.len() as i64, batch]);
        Some(Self { scales: crate::shim::upload(&t, device) })
    }

    /// `residual` with block `block`'s mask applied, per sample.
    ///
    /// # Shapes
    /// `residual: [B, ...]` -> same.
    pub(crate) fn apply(&self, block: usize, residual: &Tensor) -> Tensor {
        let mut shape = vec![1i64; residual.dim()];
        shape[0] = -1;
        residual * self.scales.get(block as i64).view(shape.as_slice()).to_kind(residual.kind())
    }
}

/// `residual` through block `block`'s stochastic depth, if any.
pub(crate) fn drop_path(drop: Option<&DropPath>, block: usize, residual: Tensor) -> Tensor {
    match drop {
        Some(d) => d.apply(block, &residual),
        None => residual,
    }
}

/// The per-block drop-path rates `linspace(0, rate, blocks)`.
pub(crate) fn drop_rates(rate: f64, blocks: usize) -> Vec<f64> {
    match blocks {
        0 => Vec::new(),
        1 => vec![0.0],
        n => (0..n).map(|i| rate * i as f64 / (n - 1) as f64).collect(),
    }
}

/// A float tensor drawn from `N(0, std^2)`, on the CPU (from the keyed stream of an
/// `init::seeded` scope, as every initial weight).
pub(crate) fn normal(shape: &[i64], std: f64) -> Tensor {
    crate::init::normal(shape, std)
}

/// A float tensor of zeros, on the CPU.
pub(crate) fn zeros(shape: &[i64]) -> Tensor {
    Tensor::zeros(shape, (Kind::Float, Device::Cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_rates_are_timm_linspace() {
        assert_eq!(drop_rates(0.2, 5), [0.0, 0.05, 0.1, 0.15000000000000002, 0.2]);
        assert_eq!(drop_rates(0.2, 1), [0.0]);
    }

    /// Keyed masks: the same key gives the same masks, a rank's share of the global batch gets the
    /// global batch's rows, the kept fraction is 1 - rate, kept samples are scaled by 1 / keep.
    #[test]
    fn drop_path_is_keyed_per_global_sample() {
        let rates = [0.0, 0.5];
        let all = DropPath::draw(&rates, &[7, 3], 0, 400, Device::Cpu).unwrap();
        let again = DropPath::draw(&rates, &[7, 3], 0, 400, Device::Cpu).unwrap();
        assert!(all.scales.equal(&again.scales));
        let tail = DropPath::draw(&rates, &[7, 3], 100, 300, Device::Cpu).unwrap();
        assert!(tail.scales.equal(&all.scales.narrow(1, 100, 300)));
        let other = DropPath::draw(&rates, &[7, 4], 0, 400, Device::Cpu).unwrap();
        assert!(!other.scales.equal(&all.scales));
        let first = all.scales.get(0);
        assert!(first.equal(&Tensor::ones([400], (Kind::Float, Device::Cpu))), "rate 0 keeps all");
        let second = all.scales.get(1);
        let kept = second.ne(0.0).sum(Kind::Float).double_value(&[]);
        assert!((kept / 400.0 - 0.5).abs() < 0.08, "{kept} of 400 kept");
        assert!(second.eq(0.0).logical_or(&second.eq(2.0)).all().int64_value(&[]) == 1);
        assert!(DropPath::draw(&[0.0, 0.0], &[1], 0, 4, Device::Cpu).is_none());
        let x = Tensor::ones([400, 2, 3], (Kind::Float, Device::Cpu));
        let y = all.apply(1, &x);
        assert!(y.select(2, 0).select(1, 1).equal(&second));
    }
}
