//! The Vision Transformer backbone (Dosovitskiy et al. 2021; DeiT-S of Touvron et al. 2021, the
//! encoder of MoBY's ViT runs) with timm's parameter names (`timm.models.vision_transformer`), so a
//! backbone exports to `timm.create_model("vit_small_patch16_224")` (= `deit_small_patch16_224`)
//! by copy, missing only `head.*`.
//!
//! ```text
//! cls_token [1, 1, C], pos_embed [1, 1 + N, C], patch_embed.proj      16x16/16 conv -> N tokens
//! blocks.{i}.{norm1, attn.{qkv, proj}, norm2, mlp.{fc1, fc2}}          pre-norm blocks
//! norm                                                                 final LayerNorm (eps 1e-6)
//! ```
//!
//! The global representation is the class token after the final norm (timm's `global_pool =
//! "token"`); the patch tokens after the same norm form the `[B, C, S/16, S/16]` map that the
//! region branch pools.

use tch::Tensor;

use super::transformer::{Attention, DropPath, LayerNorm, Mlp, drop_path, drop_rates, normal};
use crate::params::ParamStore;

/// LayerNorm epsilon of timm's ViT.
const LN_EPS: f64 = 1e-6;

/// What ViT to build.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VitSpec {
    /// Input side the position embedding is built for (pixels).
    pub img_size: i64,
    /// Patch side (16).
    pub patch: i64,
    /// Token width (384 for ViT-S).
    pub embed_dim: i64,
    /// Blocks (12).
    pub depth: i64,
    /// Attention heads (6).
    pub heads: i64,
    /// Stochastic depth rate of the last block.
    pub drop_path: f64,
}

impl VitSpec {
    /// ViT-S/16 (DeiT-S): C = 384, 12 blocks, 6 heads.
    pub fn vit_s16(img_size: i64, drop_path: f64) -> Self {
        Self { img_size, patch: 16, embed_dim: 384, depth: 12, heads: 6, drop_path }
    }

    /// A CPU-sized ViT for tests: patch 8, C = 32, 4 blocks, 2 heads (a 64 px view gives 8x8
    /// patches).
    pub fn nano(img_size: i64, drop_path: f64) -> Self {
        Self { img_size, patch: 8, embed_dim: 32, depth: 4, heads: 2, drop_path }
    }

    /// Channels of the output tokens.
    pub fn feature_dim(&self) -> i64 {
        self.embed_dim
    }

    /// Pixels per patch side: the stride of the patch-token map.
    pub fn stride(&self) -> i64 {
        self.patch
    }

    /// Checks the sizes.
    ///
    /// # Errors
    /// A message naming the mismatch.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.img_size % self.patch != 0 {
            return Err(format!(
                "{} px is not a multiple of the patch {}",
                self.img_size, self.patch
            ));
        }
        if self.embed_dim % self.heads != 0 {
            return Err(format!("{} heads do not divide {} channels", self.heads, self.embed_dim));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

/// A ViT up to and including the final LayerNorm.
#[derive(Debug)]
pub struct Vit {
    spec: VitSpec,
    cls_token: Tensor,
    pos_embed: Tensor,
    patch_proj: (Tensor, Tensor),
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl Vit {
    /// Registers a ViT in `store` under `prefix` with timm's initialisation (`pos_embed`
    /// truncated normal 0.02, `cls_token` normal 1e-6, Linear weights truncated normal 0.02 with
    /// zero bias, the patch conv PyTorch's default), drawn from libtorch's default generator.
    ///
    /// # Panics
    /// If `spec` does not validate (the config validates it first).
    pub fn new(store: &mut ParamStore, prefix: &str, spec: VitSpec) -> Self {
        if let Err(e) = spec.validate() {
            panic!("invalid ViT spec: {e}");
        }
        let p = |n: &str| if prefix.is_empty() { n.to_string() } else { format!("{prefix}.{n}") };
        let (c, k) = (spec.embed_dim, spec.patch);
        let tokens = 1 + (spec.img_size / k) * (spec.img_size / k);
        let cls_token = store.add_param(p("cls_token"), normal(&[1, 1, c], 1e-6));
        let pos_embed = store.add_param(p("pos_embed"), normal(&[1, tokens, c], 0.02));
        let fan_in = 3 * k * k;
        let init = crate::init::default_uniform;
        let w = store.add_param(p("patch_embed.proj.weight"), init(&[c, 3, k, k], fan_in));
        let b = store.add_param(p("patch_embed.proj.bias"), init(&[c], fan_in));
        let blocks = (0..spec.depth)
            .map(|i| {
                let name = p(&format!("blocks.{i}"));
                Block {
                    norm1: LayerNorm::new(store, &format!("{name}.norm1"), c, LN_EPS),
                    attn: Attention::new(store, &format!("{name}.attn"), c, spec.heads),
                    norm2: LayerNorm::new(store, &format!("{name}.norm2"), c, LN_EPS),
                    mlp: Mlp::new(store, &format!("{name}.mlp"), c, 4 * c),
                }
            })
            .collect();
        let norm = LayerNorm::new(store, &p("norm"), c, LN_EPS);
        Self { spec, cls_token, pos_embed, patch_proj: (w, b), blocks, norm }
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &VitSpec {
        &self.spec
    }

    /// The drop-path rates of the blocks, in order.
    pub fn drop_rates(&self) -> Vec<f64> {
        drop_rates(self.spec.drop_path, self.spec.depth as usize)
    }

    /// Every token after the final norm, the class token first.
    ///
    /// # Shapes
    /// `x: [B, 3, S, S]` (S = `img_size`) -> `[B, 1 + (S / patch)^2, C]`.
    pub fn forward_tokens(&self, x: &Tensor, drop: Option<&DropPath>) -> Tensor {
        let (w, b) = &self.patch_proj;
        let k = self.spec.patch;
        let t = x.conv2d(w, Some(b), [k, k], [0, 0], [1, 1], 1).flatten(2, 3).transpose(1, 2);
        let n = t.size()[0];
        let cls = self.cls_token.expand([n, 1, self.spec.embed_dim], false);
        let mut y = Tensor::cat(&[cls, t], 1) + &self.pos_embed; // [B, 1 + N, C]
        for (i, blk) in self.blocks.iter().enumerate() {
            let (q, k, v) = blk.attn.qkv(&blk.norm1.forward(&y)); // [B, heads, T, d]
            let o = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                false,
                None,
                false,
            );
            y = &y + drop_path(drop, i, blk.attn.out(&o));
            y = &y + drop_path(drop, i, blk.mlp.forward(&blk.norm2.forward(&y)));
        }
        self.norm.forward(&y)
    }

    /// The class token and the patch-token map, after the final norm.
    ///
    /// # Shapes
    /// `x: [B, 3, S, S]` -> `([B, C], [B, C, S / patch, S / patch])`.
    pub fn forward(&self, x: &Tensor, drop: Option<&DropPath>) -> (Tensor, Tensor) {
        let y = self.forward_tokens(x, drop);
        let (b, _, c) = y.size3().expect("[B, T, C]");
        let g = self.spec.img_size / self.spec.patch;
        let map = y.narrow(1, 1, g * g).transpose(1, 2).reshape([b, c, g, g]);
        (y.select(1, 0), map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// ViT-S/16 has timm's backbone parameter count (`vit_small_patch16_224` = 22.05 M with its
    /// 384 x 1000 head) and names; the nano ViT gives the class token and the patch map.
    #[test]
    fn vit_s16_names_counts_and_nano_shapes() {
        let mut store = ParamStore::new();
        let _ = Vit::new(&mut store, "", VitSpec::vit_s16(224, 0.0));
        assert_eq!(store.num_trainable(), 22_050_664 - 385_000);
        assert_eq!(store.entries().len(), 150);
        assert_eq!(store.get("pos_embed").unwrap().size(), [1, 197, 384]);
        assert_eq!(store.get("blocks.11.attn.qkv.weight").unwrap().size(), [1152, 384]);
        let mut store = ParamStore::new();
        let net = Vit::new(&mut store, "0", VitSpec::nano(64, 0.1));
        let x = Tensor::randn([3, 3, 64, 64], (Kind::Float, Device::Cpu));
        let (cls, map) = net.forward(&x, None);
        assert_eq!((cls.size(), map.size()), (vec![3, 32], vec![3, 32, 8, 8]));
        let tokens = net.forward_tokens(&x, None);
        assert!(map.get(1).select(1, 2).select(1, 5).equal(&tokens.get(1).get(1 + 2 * 8 + 5)));
    }
}
