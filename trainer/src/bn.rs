//! BatchNorm2d with the single-GPU emulation of per-GPU BN (docs/method.md 2.5): in training, the
//! batch is normalised in `splits` groups, each with its own batch statistics, as `splits` GPUs
//! with plain BN would.
//!
//! Groups are **contiguous** chunks of `N / splits` samples (one chunk = one virtual GPU), so that
//! the RegionCL pairing, reversed inside each chunk, keeps swap partners in one BN group, as on real
//! GPUs. The running statistics become the mean of the per-group running statistics, as in the MoCo
//! CIFAR demo's `SplitBatchNorm`.
//!
//! Two formulations give the same numbers ([`SplitBnImpl`]):
//! - `Chunked` (default): one `batch_norm` call per chunk on `x.narrow(0, ..)`. A chunk along N of
//!   an NHWC (channels_last) tensor is itself channels_last and contiguous, so cuDNN's NHWC kernels
//!   apply and no layout copy is made; bf16 inputs stay bf16.
//! - `Reshape`: the demo's trick, `[N, C, H, W] -> [N/S, S*C, H, W]` with the affine parameters tiled
//!   S times (after a transpose that makes the groups contiguous). The reshape forces NCHW copies of
//!   every activation; kept as the reference formulation and for benchmarks.
//!
//! The same layer normalises `[N, C]` rows (PyTorch's BatchNorm1d) for the SimSiam projector and
//! predictor, with or without affine parameters ([`BatchNorm2d::without_affine`]); those heads run
//! with one group (SyncBN over the whole batch), the `Reshape` formulation is for 4-d inputs only.

use tch::{Kind, Tensor};

use crate::config::{BatchSplit, SplitBnImpl};
use crate::dist::{BnParams, Dist, DistHandle, sync_batch_norm};
use crate::params::ParamStore;

/// BN epsilon (PyTorch default).
pub const BN_EPS: f64 = 1e-5;
/// BN running-stat momentum (PyTorch convention).
pub const BN_MOMENTUM: f64 = 0.1;

/// How BN layers behave in a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnMode {
    /// Batch statistics and running-stat updates (true) or running statistics (false).
    pub train: bool,
    /// Number of BN groups in training (1 = the whole batch, like SyncBN).
    pub splits: i64,
    /// The formulation of split BN.
    pub imp: SplitBnImpl,
    /// SyncBN: in training, the batch statistics of every rank of this run together
    /// ([`crate::sync_batch_norm`]); `splits` is then 1.
    pub sync: Option<DistHandle>,
}

impl BnMode {
    /// Training mode with `splits` groups.
    pub fn train(splits: i64, imp: SplitBnImpl) -> Self {
        Self { train: true, splits, imp, sync: None }
    }

    /// Evaluation mode (running statistics).
    pub fn eval() -> Self {
        Self { train: false, splits: 1, imp: SplitBnImpl::Chunked, sync: None }
    }

    /// Training mode for one rank of `dist` with the BN groups of its `split` of the batch
    /// ([`crate::Config::batch_split`]): `split.groups` contiguous groups of the rank's share, or
    /// SyncBN over every rank's samples when `split.sync`.
    pub fn for_split(split: &BatchSplit, imp: SplitBnImpl, dist: &Dist) -> Self {
        match dist.handle() {
            Some(h) if split.sync => Self { sync: Some(h), ..Self::train(1, imp) },
            _ => Self::train(split.groups, imp),
        }
    }
}

/// A 2-d batch-norm layer with torchvision names (`weight`, `bias`, `running_mean`, `running_var`,
/// `num_batches_tracked`).
#[derive(Debug)]
pub struct BatchNorm2d {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    /// Registers a layer of `channels` under `prefix` (weight 1, bias 0, running mean 0, var 1).
    pub fn new(store: &mut ParamStore, prefix: &str, channels: i64) -> Self {
        let f = |v: f64| Tensor::full([channels], v, (Kind::Float, tch::Device::Cpu));
        let weight = Some(store.add_param(format!("{prefix}.weight"), f(1.0)));
        let bias = Some(store.add_param(format!("{prefix}.bias"), f(0.0)));
        Self::with_affine(store, prefix, channels, weight, bias)
    }

    /// A layer without affine parameters (`affine=False`: only the running statistics), as the last
    /// BN of the SimSiam projector.
    pub fn without_affine(store: &mut ParamStore, prefix: &str, channels: i64) -> Self {
        Self::with_affine(store, prefix, channels, None, None)
    }

    fn with_affine(
        store: &mut ParamStore,
        prefix: &str,
        channels: i64,
        weight: Option<Tensor>,
        bias: Option<Tensor>,
    ) -> Self {
        let f = |v: f64| Tensor::full([channels], v, (Kind::Float, tch::Device::Cpu));
        Self {
            weight,
            bias,
            running_mean: store.add_buffer(format!("{prefix}.running_mean"), f(0.0)),
            running_var: store.add_buffer(format!("{prefix}.running_var"), f(1.0)),
            num_batches_tracked: store.add_buffer(
                format!("{prefix}.num_batches_tracked"),
                Tensor::zeros([], (Kind::Int64, tch::Device::Cpu)),
            ),
        }
    }

    /// The scale `gamma` (None without affine parameters).
    pub(crate) fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }

    /// Normalises `x`.
    ///
    /// # Shapes
    /// `x: [N, C, H, W]` (any memory format) or `[N, C]` -> same shape and format.
    ///
    /// # Panics
    /// In training with `splits > 1`, if `N` is not divisible by `splits`; with SyncBN, if a
    /// collective fails (a peer died or timed out), as tch's infallible ops do on libtorch errors.
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Tensor {
        if !mode.train {
            return self.call(x, &self.running_mean, &self.running_var, false);
        }
        let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
        if let Some(h) = mode.sync {
            let dist = h.dist().expect("SyncBN: the multi-process run was dropped");
            let bn = BnParams {
                weight: self.weight.as_ref(),
                bias: self.bias.as_ref(),
                running_mean: &self.running_mean,
                running_var: &self.running_var,
                momentum: BN_MOMENTUM,
                eps: BN_EPS,
            };
            return sync_batch_norm(x, &bn, &dist).unwrap_or_else(|e| panic!("SyncBN: {e}"));
        }
        if mode.splits <= 1 {
            return self.call(x, &self.running_mean, &self.running_var, true);
        }
        let n = x.size()[0];
        assert!(
            n % mode.splits == 0,
            "split BN: batch {n} not divisible by {} splits",
            mode.splits
        );
        match mode.imp {
            SplitBnImpl::Chunked => self.chunked(x, mode.splits),
            SplitBnImpl::Reshape => self.reshaped(x, mode.splits),
        }
    }

    fn call(&self, x: &Tensor, rm: &Tensor, rv: &Tensor, train: bool) -> Tensor {
        Tensor::batch_norm(
            x,
            self.weight.as_ref(),
            self.bias.as_ref(),
            Some(rm),
            Some(rv),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )
    }

    /// Per-group running stats `[S, C]`, updated in place by the per-group calls, then averaged.
    fn split_stats(&self, splits: i64) -> (Tensor, Tensor) {
        let rm = self.running_mean.detach().unsqueeze(0).repeat([splits, 1]); // [S, C]
        let rv = self.running_var.detach().unsqueeze(0).repeat([splits, 1]); // [S, C]
        (rm, rv)
    }

    fn store_stats(&self, rm: &Tensor, rv: &Tensor) {
        tch::no_grad(|| {
            self.running_mean.shallow_clone().copy_(&rm.mean_dim(0, false, Kind::Float));
            self.running_var.shallow_clone().copy_(&rv.mean_dim(0, false, Kind::Float));
        });
    }

    fn chunked(&self, x: &Tensor, splits: i64) -> Tensor {
        let m = x.size()[0] / splits;
        let (rm, rv) = self.split_stats(splits);
        let outs: Vec<Tensor> = (0..splits)
            .map(|s| self.call(&x.narrow(0, s * m, m), &rm.get(s), &rv.get(s), true))
            .collect();
        self.store_stats(&rm, &rv);
        Tensor::cat(&outs, 0)
    }

    fn reshaped(&self, x: &Tensor, splits: i64) -> Tensor {
        let (n, c, h, w) = x.size4().expect("split BN input is 4-d");
        let m = n / splits;
        // Group s = samples [s*m, (s+1)*m): [S, M, C, H, W] -> [M, S*C, H, W].
        let xr = x.reshape([splits, m, c, h, w]).transpose(0, 1).reshape([m, splits * c, h, w]);
        let (rm, rv) = self.split_stats(splits);
        let (rm_flat, rv_flat) = (rm.view([-1]), rv.view([-1])); // [S*C], views of rm / rv
        let weight = self.weight.as_ref().map(|w| w.repeat([splits])); // [S*C]
        let bias = self.bias.as_ref().map(|b| b.repeat([splits])); // [S*C]
        let y = Tensor::batch_norm(
            &xr,
            weight.as_ref(),
            bias.as_ref(),
            Some(&rm_flat),
            Some(&rv_flat),
            true,
            BN_MOMENTUM,
            BN_EPS,
            true,
        );
        self.store_stats(&rm, &rv);
        y.reshape([m, splits, c, h, w]).transpose(0, 1).reshape([n, c, h, w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_devices;
    use tch::Device;

    fn layer(c: i64, device: Device) -> (ParamStore, BatchNorm2d) {
        let mut store = ParamStore::new();
        let bn = BatchNorm2d::new(&mut store, "bn", c);
        tch::no_grad(|| {
            let _ = store.get("bn.weight").unwrap().shallow_clone().uniform_(0.5, 1.5);
            let _ = store.get("bn.bias").unwrap().shallow_clone().uniform_(-0.5, 0.5);
        });
        store.to_device(device);
        (store, bn)
    }

    /// Group s normalised alone equals chunk s of the split forward (train mode, output and stats),
    /// in fp32 NCHW and channels_last, and for a bf16 channels_last input (kept bf16 and
    /// channels_last, within bf16's rounding), on every device.
    #[test]
    fn chunked_equals_per_group_bn_and_reshape() {
        for d in test_devices() {
            for kind in [Kind::Float, Kind::BFloat16] {
                chunked_case(d, kind);
            }
        }
    }

    fn chunked_case(d: Device, kind: Kind) {
        let what = format!("{d:?} {kind:?}");
        // bf16 activations round to 8 significant bits (2^-9 relative).
        let tol = if kind == Kind::BFloat16 { 2e-2 } else { 1e-5 };
        tch::manual_seed(1);
        let (store, bn) = layer(5, d);
        let x = (Tensor::randn([8, 5, 3, 4], (Kind::Float, Device::Cpu)) * 2.0 + 0.3).to_device(d);
        let x_cl = crate::shim::to_channels_last(&x.to_kind(kind)).unwrap();
        let y = bn.forward(&x_cl, BnMode::train(4, SplitBnImpl::Chunked));
        assert!(crate::shim::is_channels_last(&y), "{what}: chunked split BN keeps channels_last");
        assert_eq!(y.kind(), kind, "{what}: keeps the activation kind");
        let y = y.to_kind(Kind::Float);
        let rm_chunked = store.get("bn.running_mean").unwrap().copy();
        let rv_chunked = store.get("bn.running_var").unwrap().copy();

        let (store2, bn2) = layer(5, d);
        store2.copy_from(&store).unwrap();
        for name in ["bn.running_mean", "bn.running_var"] {
            let v = if name.ends_with("mean") { 0.0 } else { 1.0 };
            let _ = store2.get(name).unwrap().shallow_clone().fill_(v);
        }
        let xr = x.to_kind(kind).to_kind(Kind::Float); // the same (rounded) input in fp32
        let y2 = bn2.forward(&xr, BnMode::train(4, SplitBnImpl::Reshape));
        assert!(y.allclose(&y2, tol, tol, false), "{what}");
        let (rm2, rv2) =
            (store2.get("bn.running_mean").unwrap(), store2.get("bn.running_var").unwrap());
        assert!(rm_chunked.allclose(rm2, 1e-5, 1e-6, false), "{what}");
        assert!(rv_chunked.allclose(rv2, 1e-5, 1e-6, false), "{what}");

        // Independent reference: each group through its own plain BN.
        for s in 0..4 {
            let (st, b) = layer(5, d);
            st.copy_from(&store).unwrap();
            let g = xr.narrow(0, 2 * s, 2);
            let ys = b.forward(&g, BnMode::train(1, SplitBnImpl::Chunked));
            assert!(ys.allclose(&y.narrow(0, 2 * s, 2), tol, tol, false), "{what}: group {s}");
        }
        // Running mean = mean of the per-group updates: 0.9 * 0 + 0.1 * mean_s(mean of group s).
        let group_means = xr.reshape([4, 2, 5, 12]).mean_dim([1, 3].as_slice(), false, Kind::Float);
        let expect = group_means.mean_dim(0, false, Kind::Float) * 0.1;
        assert!(rm_chunked.allclose(&expect, 1e-5, 1e-6, false), "{what}");
    }

    #[test]
    fn eval_uses_running_stats() {
        for d in test_devices() {
            let (_store, bn) = layer(3, d);
            let x = Tensor::randn([2, 3, 2, 2], (Kind::Float, d));
            let y = bn.forward(&x, BnMode::eval());
            let y2 = bn.forward(&x.narrow(0, 0, 1), BnMode::eval());
            assert!(y.narrow(0, 0, 1).allclose(&y2, 1e-6, 1e-6, false), "{d:?}");
        }
    }
}
