//! The schema of what is trained: the method, the networks, the method's hyper-parameters, the
//! region swap and the optimiser, as plain data with the defaults of the official RegionCL-M
//! recipe (docs/method.md 4.4).

use serde::{Deserialize, Serialize};

/// The pretraining method: three base methods, each with its RegionCL variant (the base method
/// plus the region branch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Method {
    /// RegionCL-M (MoCo v2 + region swapping), docs/method.md 4.
    RegionClm,
    /// MoCo v2: the same step with the region branch off.
    MocoV2,
    /// DenseCL (docs/method.md 5.1): MoCo v2 plus the dense head, loss and queue.
    DenseCl,
    /// RegionCL-D (docs/method.md 5.2): DenseCL plus the region loss through the global head.
    RegionCld,
    /// SimSiam (docs/method.md 6.1): predictor, negative cosine, stop-gradient; no queue.
    SimSiam,
    /// RegionCL-S (docs/method.md 6.2): SimSiam plus the region positives.
    RegionCls,
}

impl Method {
    /// Every method, base methods after their RegionCL variant.
    pub const ALL: [Method; 6] = [
        Method::RegionClm,
        Method::MocoV2,
        Method::RegionCld,
        Method::DenseCl,
        Method::RegionCls,
        Method::SimSiam,
    ];

    /// The config spelling (`regionclm`, `mocov2`, `densecl`, `regioncld`, `simsiam`, `regioncls`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::RegionClm => "regionclm",
            Method::MocoV2 => "mocov2",
            Method::DenseCl => "densecl",
            Method::RegionCld => "regioncld",
            Method::SimSiam => "simsiam",
            Method::RegionCls => "regioncls",
        }
    }

    /// Whether the region branch (swap, mask pooling, region loss) runs.
    pub fn has_region(self) -> bool {
        matches!(self, Method::RegionClm | Method::RegionCld | Method::RegionCls)
    }

    /// Whether the method has a momentum encoder and a queue of negatives (MoCo v2, DenseCL and
    /// their RegionCL variants; not SimSiam).
    pub fn uses_queue(self) -> bool {
        !matches!(self, Method::SimSiam | Method::RegionCls)
    }

    /// The checkpoint prefix of the online encoder (backbone `0.*`, head `1.*`): `encoder_q.`, or
    /// `encoder.` for SimSiam (which has no key encoder).
    pub fn encoder_prefix(self) -> &'static str {
        if self.uses_queue() { "encoder_q." } else { "encoder." }
    }
}

/// Networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `resnet18` or `resnet50`.
    pub arch: Arch,
    /// `imagenet` (stride 32) or `small` (3x3 stem, no max-pool, stride 8).
    pub stem: Stem,
    /// Base width (64 = torchvision).
    pub width: i64,
    /// `openselfsup` (official RegionCL-M) or `torchvision` (official MoCo v2).
    pub init: InitScheme,
    /// Projector hidden width; 0 = the backbone's feature dim (2048 for ResNet-50).
    pub proj_hidden: i64,
    /// Embedding dim (128 for the contrastive methods, 2048 for SimSiam).
    pub proj_dim: i64,
    /// Zero the last BN scale of every residual block (SimSiam's torchvision init).
    pub zero_init_residual: bool,
}

/// Backbone depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Arch {
    /// BasicBlocks (2, 2, 2, 2), 512-d features at width 64.
    ResNet18,
    /// Bottlenecks (3, 4, 6, 3), 2048-d features at width 64.
    ResNet50,
}

impl Arch {
    /// Channels of the last stage per unit of width (`feature_dim = 8 * width * expansion`).
    pub fn expansion(self) -> i64 {
        match self {
            Arch::ResNet18 => 1,
            Arch::ResNet50 => 4,
        }
    }
}

/// The network's input stem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Stem {
    /// 7x7/2 conv + max-pool (stride 32 overall).
    ImageNet,
    /// 3x3/1 conv, no max-pool (stride 8 overall).
    Small,
}

impl Stem {
    /// Total stride `R` of the backbone's output feature map with this stem.
    pub fn stride(self) -> i64 {
        match self {
            Stem::ImageNet => 32,
            Stem::Small => 8,
        }
    }
}

/// Which initialisation the networks use (docs/method.md 2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum InitScheme {
    /// Official RegionCL (OpenSelfSup): fan_in convs, Kaiming-normal Linear, zero bias.
    #[serde(rename = "openselfsup")]
    OpenSelfSup,
    /// torchvision / official MoCo: fan_out convs, PyTorch-default Linear.
    Torchvision,
}

/// Momentum encoder, queue and head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoConfig {
    /// Queue length K (a multiple of the batch size).
    pub queue_size: i64,
    /// Temperature tau.
    pub tau: f64,
    /// EMA momentum m.
    pub momentum: f64,
    /// BN groups S of the single-GPU shuffle-BN emulation (1 = whole-batch BN).
    pub bn_splits: i64,
    /// `chunked` (one BN call per group, keeps channels_last) or `reshape` (the MoCo demo's trick).
    pub bn_impl: SplitBnImpl,
    /// Shuffle the key batch before the key encoder (shuffle-BN).
    pub shuffle_keys: bool,
}

/// How split BN (the single-GPU emulation of per-GPU BN, docs/method.md 2.5) is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SplitBnImpl {
    /// One BN call per contiguous chunk (keeps channels_last).
    #[default]
    Chunked,
    /// The `[N/S, S*C, H, W]` reshape of the MoCo demo (NCHW copies).
    Reshape,
}

/// Region swapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegionConfig {
    /// `official` (released code, off-by-one clamp) or `aligned` (paper intent).
    pub sampler: SwapSampler,
    /// Smallest box side in cells (C_L).
    pub c_lower: i64,
    /// Largest box side in cells (C_U), inclusive.
    pub c_upper: i64,
    /// Paste rows of Eq. 2 (Table 10).
    pub paste: bool,
    /// Canvas rows of Eq. 2.
    pub canvas: bool,
    /// Intra-image negative.
    pub negative: bool,
}

/// How the swap box origin is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SwapSampler {
    /// The released code (docs/method.md 3.4): `v ~ U{0..W-1}`, `g = round_half_even(v / R)`,
    /// `s = min(R g, W - 1 - R k)`, cells from `floor(s / R)`. Produced the published numbers.
    #[default]
    Official,
    /// The paper's intent (docs/method.md 3.5): `x0 ~ U{0..G-k}`, pixel box `= R * cells`.
    Aligned,
}

/// Which terms of Eq. 2 are used (paper Table 10). All off = MoCo v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionTerms {
    /// Paste rows (`p` against `k`).
    pub paste: bool,
    /// Canvas rows (`c` against `k`).
    pub canvas: bool,
    /// The intra-image negative (`sg(c)` for `p`, `sg(p)` for `c`).
    pub negative: bool,
}

impl Default for RegionTerms {
    fn default() -> Self {
        Self { paste: true, canvas: true, negative: true }
    }
}

impl RegionTerms {
    /// None: the base methods.
    pub const NONE: Self = Self { paste: false, canvas: false, negative: false };

    /// Whether the region branch runs at all.
    pub fn any(&self) -> bool {
        self.paste || self.canvas
    }
}

/// DenseCL's dense term and RegionCL-D's region weight (docs/method.md 5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseClConfig {
    /// `lambda`: `L = (1 - lambda) L_single + lambda L_dense` (official 0.5).
    pub lambda: f64,
    /// RegionCL-D's weight `w_r` of the region term, added to the DenseCL loss. No code was
    /// released; the default 0.5 = `1 - lambda` gives the region term the weight of the global term
    /// it extends, as in RegionCL-M where both weigh 1 (docs/method.md 5.2).
    pub region_weight: f64,
}

/// SimSiam's predictor and learning rate, and RegionCL-S's region weight (docs/method.md 6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSiamConfig {
    /// Hidden width of the predictor (512 for a 2048-d projector).
    pub pred_hidden: i64,
    /// Keep the predictor's learning rate at the peak LR (`--fix-pred-lr` of the official recipe);
    /// only the encoder's follows the cosine.
    pub fix_pred_lr: bool,
    /// RegionCL-S's weight of the region positives, added to the SimSiam loss (1, as RegionCL-M's
    /// region term; docs/method.md 6.2).
    pub region_weight: f64,
}

/// How the learning rate follows the batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LrScaling {
    /// `lr = base_lr * batch_size / ref_batch` (official RegionCL-M: 0.15 at 1024).
    Linear,
    /// `lr = base_lr`.
    None,
}

/// Optimiser and schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Global batch size B.
    pub batch_size: i64,
    /// Learning rate at `ref_batch`.
    pub base_lr: f64,
    /// Batch size at which `base_lr` applies.
    pub ref_batch: i64,
    /// Scaling rule.
    pub lr_scaling: LrScaling,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (on every parameter, BN and biases included).
    pub weight_decay: f64,
    /// Epochs of the cosine schedule (per-epoch updates, no warm-up).
    pub epochs: u64,
}

impl OptimConfig {
    /// The learning rate at epoch 0 after the scaling rule: `base_lr * batch_size / ref_batch`
    /// (linear; official RegionCL-M 0.15 at 1024, MoCo v2 0.03 at 256), or `base_lr`.
    pub fn peak_lr(&self) -> f64 {
        match self.lr_scaling {
            LrScaling::Linear => self.base_lr * self.batch_size as f64 / self.ref_batch as f64,
            LrScaling::None => self.base_lr,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::ResNet50,
            stem: Stem::ImageNet,
            width: 64,
            init: InitScheme::OpenSelfSup,
            proj_hidden: 0,
            proj_dim: 128,
            zero_init_residual: false,
        }
    }
}

impl Default for DenseClConfig {
    fn default() -> Self {
        Self { lambda: 0.5, region_weight: 0.5 }
    }
}

impl Default for SimSiamConfig {
    fn default() -> Self {
        Self { pred_hidden: 512, fix_pred_lr: true, region_weight: 1.0 }
    }
}

impl Default for MocoConfig {
    fn default() -> Self {
        Self {
            queue_size: 65536,
            tau: 0.2,
            momentum: 0.999,
            bn_splits: 8,
            bn_impl: SplitBnImpl::Chunked,
            shuffle_keys: true,
        }
    }
}

impl Default for RegionConfig {
    fn default() -> Self {
        Self {
            sampler: SwapSampler::Official,
            c_lower: 3,
            c_upper: 5,
            paste: true,
            canvas: true,
            negative: true,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            batch_size: 1024,
            base_lr: 0.15,
            ref_batch: 1024,
            lr_scaling: LrScaling::Linear,
            momentum: 0.9,
            weight_decay: 1e-4,
            epochs: 200,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scaling rule at the official points (docs/method.md 2.7).
    #[test]
    fn peak_lr_scales_linearly() {
        let lr = |base, batch, ref_batch, lr_scaling| {
            OptimConfig {
                base_lr: base,
                batch_size: batch,
                ref_batch,
                lr_scaling,
                ..OptimConfig::default()
            }
            .peak_lr()
        };
        assert_eq!(lr(0.15, 1024, 1024, LrScaling::Linear), 0.15);
        assert_eq!(lr(0.15, 256, 1024, LrScaling::Linear), 0.0375);
        assert_eq!(lr(0.03, 128, 256, LrScaling::Linear), 0.015);
        assert_eq!(lr(0.03, 128, 256, LrScaling::None), 0.03);
    }
}
