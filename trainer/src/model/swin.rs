//! The Swin Transformer backbone (Liu et al. 2021, <https://arxiv.org/abs/2103.14030>) with timm's
//! parameter names (`timm.models.swin_transformer`), so a backbone exports to
//! `timm.create_model("swin_tiny_patch4_window7_224")` by copy, missing only `head.fc.*`.
//!
//! ```text
//! patch_embed.{proj, norm}                                 4x4/4 conv, LayerNorm    -> [B, H/4, W/4, C]
//! layers.{i}.downsample.{norm, reduction}  (i > 0)         2x2 patch merging        -> [B, ., ., 2^i C]
//! layers.{i}.blocks.{j}.{norm1, attn.{relative_position_bias_table, qkv, proj}, norm2, mlp.{fc1, fc2}}
//! norm                                                     final LayerNorm          -> [B, H/32, W/32, 8 C]
//! ```
//!
//! Blocks alternate window attention (W-MSA, non-overlapping `window x window` windows) and
//! shifted-window attention (SW-MSA: the map rolled by `window / 2` before the partition and back
//! after, with an attention mask of -100 between tokens that are neighbours only through the
//! roll's wrap-around). Each head adds the relative position bias `table[index]`. A stage whose
//! resolution is at most the window takes one window and no shift (timm's rule). The relative
//! position index and the masks are fixed by the input size (`img_size`, as timm's models) and
//! held beside the parameters, not in the store (timm's non-persistent buffers).

use tch::{Device, Kind, Tensor};

use super::transformer::{Attention, DropPath, LayerNorm, Linear, Mlp, drop_path, drop_rates};
use crate::params::ParamStore;

/// LayerNorm epsilon of timm's Swin (PyTorch's default).
const LN_EPS: f64 = 1e-5;
/// The additive attention mask between tokens of different shifted regions (timm's value).
const MASKED: f32 = -100.0;

/// What Swin to build.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SwinSpec {
    /// Input side the position tables and masks are built for (pixels).
    pub img_size: i64,
    /// Patch side (4).
    pub patch: i64,
    /// Channels of the first stage (96 for Swin-T).
    pub embed_dim: i64,
    /// Blocks per stage (2, 2, 6, 2 for Swin-T).
    pub depths: [i64; 4],
    /// Attention heads per stage (3, 6, 12, 24 for Swin-T).
    pub heads: [i64; 4],
    /// Window side (7).
    pub window: i64,
    /// Stochastic depth rate of the last block (0.2 for MoBY's online encoder).
    pub drop_path: f64,
}

impl SwinSpec {
    /// Swin-T (`swin_tiny_patch4_window7_224`): patch 4, window 7, C = 96, depths 2-2-6-2.
    pub fn swin_t(img_size: i64, drop_path: f64) -> Self {
        Self {
            img_size,
            patch: 4,
            embed_dim: 96,
            depths: [2, 2, 6, 2],
            heads: [3, 6, 12, 24],
            window: 7,
            drop_path,
        }
    }

    /// A CPU-sized Swin for tests: patch 2, window 4, C = 16, depths 2-2-2-2, heads 1-2-4-8
    /// (stride 16: a 64 px view gives 32, 16, 8 and 4 tokens a side, every stage shifting but
    /// the last).
    pub fn nano(img_size: i64, drop_path: f64) -> Self {
        Self {
            img_size,
            patch: 2,
            embed_dim: 16,
            depths: [2, 2, 2, 2],
            heads: [1, 2, 4, 8],
            window: 4,
            drop_path,
        }
    }

    /// Channels of the output map.
    pub fn feature_dim(&self) -> i64 {
        self.embed_dim * 8
    }

    /// Total stride of the output map.
    pub fn stride(&self) -> i64 {
        self.patch * 8
    }

    /// Tokens per side of stage `i`.
    fn resolution(&self, stage: usize) -> i64 {
        (self.img_size / self.patch) >> stage
    }

    /// Checks that every stage tiles into whole windows (timm pads instead; the recipes need no
    /// padding, 224 px for Swin-T) and that the heads divide the channels.
    ///
    /// # Errors
    /// A message naming the stage and the sizes.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.img_size % self.stride() != 0 {
            return Err(format!(
                "{} px is not a multiple of the stride {}",
                self.img_size,
                self.stride()
            ));
        }
        for stage in 0..4 {
            let r = self.resolution(stage);
            if r > self.window && r % self.window != 0 {
                return Err(format!(
                    "stage {stage}: {r}x{r} tokens do not tile into {w}x{w} windows ({} px)",
                    self.img_size,
                    w = self.window
                ));
            }
            if (self.embed_dim << stage) % self.heads[stage] != 0 {
                return Err(format!(
                    "stage {stage}: {} heads do not divide the channels",
                    self.heads[stage]
                ));
            }
        }
        Ok(())
    }
}

/// The window partition: `[B, H, W, C]` -> `[B * nW, w * w, C]`, windows in row-major order per
/// image, tokens row-major inside a window.
pub(crate) fn window_partition(x: &Tensor, w: i64) -> Tensor {
    let (b, h, wd, c) = x.size4().expect("tokens are [B, H, W, C]");
    x.view([b, h / w, w, wd / w, w, c]).permute([0, 1, 3, 2, 4, 5]).reshape([-1, w * w, c])
}

/// The inverse of [`window_partition`]: `[B * nW, w * w, C]` -> `[B, H, W, C]`.
pub(crate) fn window_reverse(windows: &Tensor, w: i64, h: i64, wd: i64) -> Tensor {
    let c = windows.size()[2];
    windows.view([-1, h / w, wd / w, w, w, c]).permute([0, 1, 3, 2, 4, 5]).reshape([-1, h, wd, c])
}

/// `index[i * N + j]` of tokens `i = (yi, xi)`, `j = (yj, xj)` of a `w x w` window (`N = w^2`):
/// `(yi - yj + w - 1) * (2w - 1) + (xi - xj + w - 1)`, the row of their bias in the table.
pub(crate) fn relative_position_index(w: i64) -> Vec<i64> {
    let n = w * w;
    let mut index = Vec::with_capacity((n * n) as usize);
    for i in 0..n {
        for j in 0..n {
            let (dy, dx) = (i / w - j / w + w - 1, i % w - j % w + w - 1);
            index.push(dy * (2 * w - 1) + dx);
        }
    }
    index
}

/// The SW-MSA mask of an `r x r` map rolled by `-shift`: `[nW, N, N]`, 0 between tokens of the
/// same region of the unrolled map, [`MASKED`] between tokens that the roll made neighbours.
/// The regions are timm's slices `[0, r - w)`, `[r - w, r - shift)`, `[r - shift, r)` per axis.
pub(crate) fn shifted_window_mask(r: i64, w: i64, shift: i64) -> Tensor {
    let region = |v: i64| i64::from(v >= r - w) + i64::from(v >= r - shift);
    let ids: Vec<f32> = (0..r * r).map(|p| (region(p / r) * 3 + region(p % r)) as f32).collect();
    let ids = Tensor::from_slice(&ids).view([1, r, r, 1]);
    let windows = window_partition(&ids, w).squeeze_dim(2); // [nW, N]
    let diff = windows.unsqueeze(1) - windows.unsqueeze(2); // [nW, N, N]
    diff.ne(0.0).to_kind(Kind::Float) * f64::from(MASKED)
}

#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    table: Tensor,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    shift: i64,
}

#[derive(Debug)]
struct Stage {
    /// `(norm, reduction)` of the 2x2 patch merging that opens stages 1-3.
    merge: Option<(LayerNorm, Linear)>,
    blocks: Vec<Block>,
    window: i64,
    /// `[N * N]` int64 rows of the bias table.
    index: Tensor,
    /// The SW-MSA mask `[nW, N, N]` of the shifted blocks (None when the stage does not shift).
    mask: Option<Tensor>,
}

/// A Swin Transformer up to and including the final LayerNorm.
#[derive(Debug)]
pub struct Swin {
    spec: SwinSpec,
    patch_proj: (Tensor, Tensor),
    patch_norm: LayerNorm,
    stages: Vec<Stage>,
    norm: LayerNorm,
}

impl Swin {
    /// Registers a Swin in `store` under `prefix` (`""` for bare timm names, or `"0"`), with
    /// timm's initialisation (truncated normal 0.02 for Linear weights and bias tables; PyTorch's
    /// default for the patch conv), drawn from libtorch's default generator.
    ///
    /// # Panics
    /// If `spec` does not validate (the config validates it first).
    pub fn new(store: &mut ParamStore, prefix: &str, spec: SwinSpec) -> Self {
        if let Err(e) = spec.validate() {
            panic!("invalid Swin spec: {e}");
        }
        let p = |n: &str| if prefix.is_empty() { n.to_string() } else { format!("{prefix}.{n}") };
        let (c0, k) = (spec.embed_dim, spec.patch);
        let fan_in = 3 * k * k;
        let w = store.add_param(
            p("patch_embed.proj.weight"),
            crate::init::default_uniform(&[c0, 3, k, k], fan_in),
        );
        let b = store
            .add_param(p("patch_embed.proj.bias"), crate::init::default_uniform(&[c0], fan_in));
        let patch_norm = LayerNorm::new(store, &p("patch_embed.norm"), c0, LN_EPS);
        let mut stages = Vec::with_capacity(4);
        for (i, (&depth, &heads)) in spec.depths.iter().zip(&spec.heads).enumerate() {
            let dim = c0 << i;
            let merge = (i > 0).then(|| {
                let name = p(&format!("layers.{i}.downsample"));
                let norm = LayerNorm::new(store, &format!("{name}.norm"), 2 * dim, LN_EPS);
                (norm, Linear::new(store, &format!("{name}.reduction"), 2 * dim, dim, false))
            });
            let r = spec.resolution(i);
            let window = r.min(spec.window);
            let shift = if r <= spec.window { 0 } else { spec.window / 2 };
            let blocks = (0..depth)
                .map(|j| {
                    let name = p(&format!("layers.{i}.blocks.{j}"));
                    let norm1 = LayerNorm::new(store, &format!("{name}.norm1"), dim, LN_EPS);
                    let rows = (2 * window - 1) * (2 * window - 1);
                    let table = store.add_param(
                        format!("{name}.attn.relative_position_bias_table"),
                        super::transformer::normal(&[rows, heads], 0.02),
                    );
                    let attn = Attention::new(store, &format!("{name}.attn"), dim, heads);
                    let norm2 = LayerNorm::new(store, &format!("{name}.norm2"), dim, LN_EPS);
                    let mlp = Mlp::new(store, &format!("{name}.mlp"), dim, 4 * dim);
                    Block {
                        norm1,
                        table,
                        attn,
                        norm2,
                        mlp,
                        shift: if j % 2 == 1 { shift } else { 0 },
                    }
                })
                .collect();
            let index = Tensor::from_slice(&relative_position_index(window));
            let mask = (shift > 0).then(|| shifted_window_mask(r, window, shift));
            stages.push(Stage { merge, blocks, window, index, mask });
        }
        let norm = LayerNorm::new(store, &p("norm"), spec.feature_dim(), LN_EPS);
        Self { spec, patch_proj: (w, b), patch_norm, stages, norm }
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &SwinSpec {
        &self.spec
    }

    /// Moves the position indices and masks to `device` (the parameters move with their store).
    pub fn to_device(&mut self, device: Device) {
        for s in &mut self.stages {
            s.index = s.index.to_device(device);
            s.mask = s.mask.as_ref().map(|m| m.to_device(device));
        }
    }

    /// The drop-path rates of the blocks, in order (timm's linspace over all stages).
    pub fn drop_rates(&self) -> Vec<f64> {
        drop_rates(self.spec.drop_path, self.spec.depths.iter().sum::<i64>() as usize)
    }

    /// The final token map, after the final LayerNorm.
    ///
    /// # Shapes
    /// `x: [B, 3, S, S]` (S = `img_size`) -> `[B, S / stride, S / stride, feature_dim]` (NHWC).
    pub fn forward_tokens(&self, x: &Tensor, drop: Option<&DropPath>) -> Tensor {
        let (w, b) = &self.patch_proj;
        let k = self.spec.patch;
        let y = x.conv2d(w, Some(b), [k, k], [0, 0], [1, 1], 1).permute([0, 2, 3, 1]);
        let mut y = self.patch_norm.forward(&y); // [B, H/p, W/p, C]
        let mut block = 0;
        for stage in &self.stages {
            if let Some((norm, reduction)) = &stage.merge {
                let (b, h, w, c) = y.size4().expect("NHWC");
                let merged = y.reshape([b, h / 2, 2, w / 2, 2, c]).permute([0, 1, 3, 4, 2, 5]);
                y = reduction.forward(&norm.forward(&merged.reshape([b, h / 2, w / 2, 4 * c])));
            }
            for blk in &stage.blocks {
                y = stage.block(blk, &y, drop, block);
                block += 1;
            }
        }
        self.norm.forward(&y)
    }
}

impl Stage {
    /// One block: `y + dp(attn(norm1(y)))`, then `+ dp(mlp(norm2(.)))`.
    ///
    /// # Shapes
    /// `y: [B, H, W, C]` -> same.
    fn block(&self, blk: &Block, y: &Tensor, drop: Option<&DropPath>, i: usize) -> Tensor {
        let (b, h, w, c) = y.size4().expect("NHWC");
        let mut x = blk.norm1.forward(y);
        if blk.shift > 0 {
            x = x.roll([-blk.shift, -blk.shift], [1, 2]);
        }
        let ws = self.window;
        let windows = window_partition(&x, ws); // [B nW, N, C]
        let (q, k, v) = blk.attn.qkv(&windows); // [B nW, heads, N, d]
        let (n, heads) = (ws * ws, blk.attn.heads());
        let scale = ((c / heads) as f64).powf(-0.5);
        let bias = blk.table.index_select(0, &self.index).view([n, n, heads]).permute([2, 0, 1]);
        let mut scores = q.matmul(&k.transpose(-2, -1)) * scale + bias; // [B nW, heads, N, N]
        if let (true, Some(mask)) = (blk.shift > 0, &self.mask) {
            let nw = mask.size()[0];
            scores = (scores.view([b, nw, heads, n, n]) + mask.view([1, nw, 1, n, n])).view([
                b * nw,
                heads,
                n,
                n,
            ]);
        }
        let o = scores.softmax(-1, scores.kind()).matmul(&v); // [B nW, heads, N, d]
        let mut x = window_reverse(&blk.attn.out(&o), ws, h, w);
        if blk.shift > 0 {
            x = x.roll([blk.shift, blk.shift], [1, 2]);
        }
        let y = y + drop_path(drop, i, x);
        let m = blk.mlp.forward(&blk.norm2.forward(&y));
        &y + drop_path(drop, i, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamStore;

    #[test]
    fn window_partition_round_trip_and_layout() {
        let (b, h, w, c, ws) = (2, 8, 12, 3, 4);
        let x = Tensor::randn([b, h, w, c], (Kind::Float, Device::Cpu));
        let windows = window_partition(&x, ws);
        assert_eq!(windows.size(), [b * (h / ws) * (w / ws), ws * ws, c]);
        assert!(window_reverse(&windows, ws, h, w).equal(&x));
        // Token (y, x) of image n is token (y % ws) * ws + x % ws of window
        // n * nW + (y / ws) * (w / ws) + x / ws.
        for (n, y, xx) in [(0, 0, 0), (1, 5, 9), (0, 7, 11), (1, 3, 4)] {
            let win = n * (h / ws) * (w / ws) + (y / ws) * (w / ws) + xx / ws;
            let tok = (y % ws) * ws + xx % ws;
            assert!(windows.get(win).get(tok).equal(&x.get(n).get(y).get(xx)));
        }
    }

    /// timm's construction of the index (meshgrid of coordinates, pairwise differences, shifted
    /// and row-strided), written with tensor ops, against the closed formula.
    #[test]
    fn relative_position_index_matches_the_reference() {
        for w in [2, 4, 7] {
            let ar = Tensor::arange(w, (Kind::Int64, Device::Cpu));
            let grids = Tensor::meshgrid_indexing(&[&ar, &ar], "ij");
            let coords = Tensor::stack(&grids, 0).flatten(1, 2); // [2, N]
            let rel = (coords.unsqueeze(2) - coords.unsqueeze(1)).permute([1, 2, 0]) + (w - 1);
            let reference = rel.select(2, 0) * (2 * w - 1) + rel.select(2, 1); // [N, N]
            let ours = Tensor::from_slice(&relative_position_index(w)).view([w * w, w * w]);
            assert!(ours.equal(&reference), "window {w}");
            assert_eq!(ours.max().int64_value(&[]), (2 * w - 1) * (2 * w - 1) - 1);
        }
    }

    /// After the shift, a token may attend to another token of its window exactly when the two
    /// are neighbours in the unrolled map too (their offset is the same before and after the
    /// roll): the mask is 0 for those pairs and -100 for pairs joined by the wrap-around.
    #[test]
    fn shifted_window_mask_keeps_attention_inside_unrolled_regions() {
        for (r, w) in [(8, 4), (14, 7), (12, 4)] {
            let s = w / 2;
            let mask = shifted_window_mask(r, w, s);
            let per_side = r / w;
            assert_eq!(mask.size(), [per_side * per_side, w * w, w * w]);
            for win in 0..per_side * per_side {
                for i in 0..w * w {
                    for j in 0..w * w {
                        // Rolled coordinates of tokens i, j of this window, and where they came
                        // from (the roll by -s moved position p to p - s mod r).
                        let at =
                            |t: i64| ((win / per_side) * w + t / w, (win % per_side) * w + t % w);
                        let from = |(y, x): (i64, i64)| ((y + s) % r, (x + s) % r);
                        let (pi, pj) = (at(i), at(j));
                        let (oi, oj) = (from(pi), from(pj));
                        let allowed = oi.0 - oj.0 == pi.0 - pj.0 && oi.1 - oj.1 == pi.1 - pj.1;
                        let m = mask.get(win).get(i).get(j).double_value(&[]);
                        assert_eq!(
                            m,
                            if allowed { 0.0 } else { -100.0 },
                            "r {r} w {w} win {win} {i} {j}"
                        );
                    }
                }
            }
        }
    }

    /// Swin-T has timm's 28.29 M backbone parameters (`swin_tiny_patch4_window7_224` without its
    /// head) and names; the nano Swin runs, shifting in all but its last stage.
    #[test]
    fn swin_t_names_counts_and_nano_shapes() {
        let mut store = ParamStore::new();
        let _ = Swin::new(&mut store, "", SwinSpec::swin_t(224, 0.2));
        assert_eq!(store.num_trainable(), 28_288_354 - 769_000);
        assert_eq!(store.entries().len(), 171);
        for (name, shape) in [
            ("patch_embed.proj.weight", &[96, 3, 4, 4][..]),
            ("layers.0.blocks.1.attn.relative_position_bias_table", &[169, 3]),
            ("layers.1.downsample.reduction.weight", &[192, 384]),
            ("layers.3.blocks.1.mlp.fc2.weight", &[768, 3072]),
            ("norm.bias", &[768]),
        ] {
            assert_eq!(store.get(name).unwrap().size(), shape, "{name}");
        }
        let mut store = ParamStore::new();
        let spec = SwinSpec::nano(64, 0.1);
        let net = Swin::new(&mut store, "0", spec);
        let shifts: Vec<i64> = net.stages.iter().map(|s| s.blocks[1].shift).collect();
        assert_eq!(shifts, [2, 2, 2, 0]);
        assert_eq!(net.stages[3].window, 4);
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(net.forward_tokens(&x, None).size(), [2, 4, 4, 128]);
        assert_eq!((spec.stride(), spec.feature_dim()), (16, 128));
        assert!(SwinSpec::swin_t(96, 0.0).validate().is_err());
        assert!(SwinSpec::swin_t(224, 0.0).validate().is_ok());
    }
}
