//! The schema of what is trained: the method, the networks, the method's hyper-parameters and the
//! region swap, as plain data with the defaults of the official RegionCL-M recipe (docs/method.md
//! 4.4); the optimiser's is in `optim.rs`.

pub use regioncl_loader::SwapSampler;
use serde::{Deserialize, Serialize};

/// The pretraining method: four base methods, each with its RegionCL variant (the base method
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
    /// MoBY (Xie et al. 2021, `docs/moby.md`): MoCo's queues and BYOL's predictor and momentum
    /// ramp, symmetric over the two views; Swin-T or ViT-S.
    Moby,
    /// RegionCL+MoBY (paper Section 4.4, `docs/moby.md`): MoBY plus the region loss of
    /// RegionCL-M through the online projector and predictor.
    RegionClMoby,
}

impl Method {
    /// Every method, base methods after their RegionCL variant.
    pub const ALL: [Method; 8] = [
        Method::RegionClm,
        Method::MocoV2,
        Method::RegionCld,
        Method::DenseCl,
        Method::RegionCls,
        Method::SimSiam,
        Method::RegionClMoby,
        Method::Moby,
    ];

    /// The config spelling (`regionclm`, `mocov2`, `densecl`, `regioncld`, `simsiam`, `regioncls`,
    /// `moby`, `regionclmoby`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::RegionClm => "regionclm",
            Method::MocoV2 => "mocov2",
            Method::DenseCl => "densecl",
            Method::RegionCld => "regioncld",
            Method::SimSiam => "simsiam",
            Method::RegionCls => "regioncls",
            Method::Moby => "moby",
            Method::RegionClMoby => "regionclmoby",
        }
    }

    /// Whether the region branch (swap, mask pooling, region loss) runs.
    pub fn has_region(self) -> bool {
        matches!(
            self,
            Method::RegionClm | Method::RegionCld | Method::RegionCls | Method::RegionClMoby
        )
    }

    /// Whether it is MoBY or RegionCL+MoBY (transformer backbones, AdamW, two queues).
    pub fn is_moby(self) -> bool {
        matches!(self, Method::Moby | Method::RegionClMoby)
    }

    /// Whether the method has a momentum encoder and a queue of negatives (MoCo v2, DenseCL, MoBY
    /// and their RegionCL variants; not SimSiam).
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
    /// `resnet18`, `resnet50`, `swin_t`, `vit_s16`, or the CPU-sized `swin_nano` and `vit_nano`
    /// (the transformers are the MoBY methods' backbones).
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
    /// Stochastic depth of the online transformer backbone at its last block (MoBY: 0.2); the
    /// momentum (target) encoder has none, as the official MoBY.
    pub drop_path: f64,
}

impl ModelConfig {
    /// Total stride `R` of the backbone's output feature map (the swap box is aligned to it).
    pub fn stride(&self) -> i64 {
        self.arch.stride(self.stem)
    }
}

/// The backbone (`model.arch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Arch {
    /// ResNet-18: BasicBlocks (2, 2, 2, 2), 512-d features at width 64.
    #[serde(rename = "resnet18")]
    ResNet18,
    /// ResNet-50: Bottlenecks (3, 4, 6, 3), 2048-d features at width 64.
    #[serde(rename = "resnet50")]
    ResNet50,
    /// Swin-T (patch 4, window 7, C = 96, depths 2-2-6-2): 768-d features, stride 32.
    #[serde(rename = "swin_t")]
    SwinT,
    /// The CPU-sized Swin of the tests (patch 2, window 4, C = 16): 128-d, stride 16.
    #[serde(rename = "swin_nano")]
    SwinNano,
    /// ViT-S/16 = DeiT-S: 384-d, stride 16.
    #[serde(rename = "vit_s16")]
    VitS16,
    /// The CPU-sized ViT of the tests (patch 8, C = 32): 32-d, stride 8.
    #[serde(rename = "vit_nano")]
    VitNano,
}

impl Arch {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet50 => "resnet50",
            Arch::SwinT => "swin_t",
            Arch::SwinNano => "swin_nano",
            Arch::VitS16 => "vit_s16",
            Arch::VitNano => "vit_nano",
        }
    }

    /// Whether it is a vision transformer (trained by the MoBY methods).
    pub fn is_transformer(self) -> bool {
        !matches!(self, Arch::ResNet18 | Arch::ResNet50)
    }

    /// Channels of a ResNet's last stage per unit of width (`feature_dim = 8 * width *
    /// expansion`); `None` for the transformers.
    pub fn expansion(self) -> Option<i64> {
        match self {
            Arch::ResNet18 => Some(1),
            Arch::ResNet50 => Some(4),
            _ => None,
        }
    }

    /// Swin's patch and window sides (`None` for the other backbones): every stage of a view
    /// must tile into whole windows.
    pub fn swin_patch_window(self) -> Option<(i64, i64)> {
        match self {
            Arch::SwinT => Some((4, 7)),
            Arch::SwinNano => Some((2, 4)),
            _ => None,
        }
    }

    /// Total stride of the output feature map: the stem's for a ResNet, 32 for Swin-T (8 times
    /// its patch), the patch for ViT.
    pub fn stride(self, stem: Stem) -> i64 {
        match self {
            Arch::ResNet18 | Arch::ResNet50 => stem.stride(),
            Arch::SwinT => 32,
            Arch::SwinNano | Arch::VitS16 => 16,
            Arch::VitNano => 8,
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

/// MoBY's predictor and RegionCL+MoBY's region weight (`docs/moby.md`). The queues, temperature
/// and momentum are `moco.*` (MoBY: `queue_size` per view, the momentum the start of the cosine
/// ramp to 1); the projector is `model.proj_hidden`, `model.proj_dim`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MobyConfig {
    /// Hidden width of the predictor (4096).
    pub pred_hidden: i64,
    /// RegionCL+MoBY's weight of the region term, added to the MoBY loss (1, as RegionCL-M's).
    pub region_weight: f64,
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
            drop_path: 0.0,
        }
    }
}

impl Default for MobyConfig {
    fn default() -> Self {
        Self { pred_hidden: 4096, region_weight: 1.0 }
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
