//! The RegionCL swap box and pairing, planned per batch (paper Section 3.1, docs/method.md 3).
//!
//! One box per batch: its size in grid cells is drawn per axis from `{C_L, ..., C_U}`, its origin
//! by one of two samplers:
//! - [`SwapSampler::Official`] reproduces the released code (docs/method.md 3.4), including its
//!   off-by-one clamp (`min(32 g, W - 1 - 32 k)`): the pixel box may then start 31 px after the
//!   feature box, and the box never reaches the last grid row or column.
//! - [`SwapSampler::Aligned`] is the paper's intent (docs/method.md 3.5): the origin is uniform
//!   over the grid positions and the pixel box is exactly the feature box times the stride.
//!
//! The pairing `pi(i)` reverses the batch inside each contiguous group of `B / groups` samples (one
//! group = one BN group, a "virtual GPU"), so swap partners share a BN group as they did on the
//! official 8-GPU run, where each GPU reversed its own 128 images.

use regioncl_augment::{KeyedRng, Rect};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the origin of the swap box is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SwapSampler {
    /// The released code's sampler, off-by-one clamp included (the published 69.4% used it):
    /// `v ~ U{0..W-1}`, `g = round_half_even(v / R)`, `s = min(R g, W - 1 - R k)`, cells from
    /// `floor(s / R)` (docs/method.md 3.4).
    #[default]
    Official,
    /// Grid-aligned, uniform origin, the paper's intent: `x0 ~ U{0..G-k}`, and the pixel box is
    /// exactly the feature box, `R * cells` (docs/method.md 3.5).
    Aligned,
}

/// Parameters of the swap box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapConfig {
    /// Total stride of the backbone (R = 32 for ResNet-50).
    pub stride: u32,
    /// Smallest box side in grid cells (C_L).
    pub min_cells: u32,
    /// Largest box side in grid cells (C_U), inclusive.
    pub max_cells: u32,
    /// Origin sampler.
    pub sampler: SwapSampler,
    /// Width of the query view in pixels (a multiple of `stride`).
    pub view_width: u32,
    /// Height of the query view in pixels (a multiple of `stride`).
    pub view_height: u32,
}

impl SwapConfig {
    /// The paper's setting for a `size` x `size` query view: R = 32, C_L = 3, C_U = 5.
    pub fn paper(size: u32) -> Self {
        Self {
            stride: 32,
            min_cells: 3,
            max_cells: 5,
            sampler: SwapSampler::Official,
            view_width: size,
            view_height: size,
        }
    }

    /// Feature grid size (columns, rows).
    pub fn grid(&self) -> (u32, u32) {
        (self.view_width / self.stride.max(1), self.view_height / self.stride.max(1))
    }

    /// Checks that boxes fit: the view is a whole number of cells, and `C_L <= C_U <= G - 1` so the
    /// canvas is never empty.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        if self.stride == 0 {
            return bad("swap.stride", "must be positive".into());
        }
        if !self.view_width.is_multiple_of(self.stride)
            || !self.view_height.is_multiple_of(self.stride)
        {
            return bad(
                "swap.stride",
                format!(
                    "view {}x{} is not a multiple of the stride {}",
                    self.view_width, self.view_height, self.stride
                ),
            );
        }
        if self.min_cells == 0 || self.min_cells > self.max_cells {
            return bad(
                "swap.min_cells",
                format!(
                    "need 1 <= min_cells ({}) <= max_cells ({})",
                    self.min_cells, self.max_cells
                ),
            );
        }
        let (gw, gh) = self.grid();
        if self.max_cells + 1 > gw.min(gh) {
            return bad(
                "swap.max_cells",
                format!(
                    "max_cells {} leaves no canvas on a {gw}x{gh} grid (at most {})",
                    self.max_cells,
                    gw.min(gh).saturating_sub(1)
                ),
            );
        }
        Ok(())
    }
}

/// One batch's swap box: the cells pooled on the feature map and the pixels pasted on the query
/// view. Under [`SwapSampler::Aligned`], `pixels == grid * stride`; under the official sampler the
/// pixel box may be shifted by up to `stride - 1` pixels (docs/method.md 3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SwapBox {
    /// Feature-map box in grid cells.
    pub grid: Rect,
    /// Pixel box on the query view.
    pub pixels: Rect,
}

/// The RegionCL part of a plan: box sampling and the pairing's BN groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapPlanConfig {
    /// Box geometry and sampler.
    pub swap: SwapConfig,
    /// Contiguous BN groups of the **global** batch the pairing stays inside (the trainer's
    /// `bn_splits`); each rank holds `bn_groups / world` of them.
    pub bn_groups: usize,
}

/// Per-axis origin: returns (pixel start, grid start) for a side of `cells` cells.
fn sample_axis(
    sampler: SwapSampler,
    extent: u32,
    stride: u32,
    cells: u32,
    rng: &mut KeyedRng,
) -> (u32, u32) {
    match sampler {
        SwapSampler::Official => {
            // v ~ U{0..extent-1}; g = round_half_even(v / R); s = min(R g, extent - 1 - R k).
            let v = rng.below(u64::from(extent)) as u32;
            let g = round_half_even_div(v, stride);
            let s = (stride * g).min(extent - 1 - stride * cells);
            (s, s / stride)
        }
        SwapSampler::Aligned => {
            let grid = extent / stride;
            let x0 = rng.below(u64::from(grid - cells + 1)) as u32;
            (x0 * stride, x0)
        }
    }
}

/// `round(v / d)` with ties to even, as `torch.round` does.
fn round_half_even_div(v: u32, d: u32) -> u32 {
    let q = v / d;
    let r = v % d;
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

/// Draws one swap box. The config must have passed [`SwapConfig::validate`].
pub fn sample_swap_box(config: &SwapConfig, rng: &mut KeyedRng) -> SwapBox {
    let span = u64::from(config.max_cells - config.min_cells + 1);
    // Width first, then height, as the official code draws them.
    let w = config.min_cells + rng.below(span) as u32;
    let h = config.min_cells + rng.below(span) as u32;
    let (px, x0) = sample_axis(config.sampler, config.view_width, config.stride, w, rng);
    let (py, y0) = sample_axis(config.sampler, config.view_height, config.stride, h, rng);
    SwapBox {
        grid: Rect::new(x0, y0, w, h),
        pixels: Rect::new(px, py, w * config.stride, h * config.stride),
    }
}

/// The pairing `pi`: `pi(i)` is the sample whose box region is pasted into composite `i`. The batch
/// is reversed inside each of `groups` contiguous groups; `pi` is its own inverse.
///
/// # Errors
/// [`Error::Config`] unless `batch` splits into `groups` groups of an even size (an odd group
/// would pair its middle sample with itself).
pub fn pairing(batch: usize, groups: usize) -> Result<Vec<u32>> {
    if groups == 0 || !batch.is_multiple_of(groups) || !(batch / groups).is_multiple_of(2) {
        return Err(Error::Config(format!(
            "batch_size: batch {batch} must split into {groups} BN groups of an even size for the swap \
                 pairing"
        )));
    }
    let g = batch / groups;
    Ok((0..batch).map(|i| ((i / g) * g + (g - 1 - i % g)) as u32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_even_matches_torch_round() {
        assert_eq!(round_half_even_div(16, 32), 0); // 0.5 -> 0
        assert_eq!(round_half_even_div(48, 32), 2); // 1.5 -> 2
        assert_eq!(round_half_even_div(80, 32), 2); // 2.5 -> 2
        assert_eq!(round_half_even_div(17, 32), 1);
        assert_eq!(round_half_even_div(223, 32), 7);
    }

    /// Exact per-axis distribution of the official sampler over all 224 values of v
    /// (docs/method.md 3.4 table), computed by enumerating v instead of sampling.
    #[test]
    fn official_sampler_table_matches_method_md() {
        let count = |k: u32| {
            let mut m = std::collections::BTreeMap::new();
            for v in 0..224u32 {
                let g = round_half_even_div(v, 32);
                let s = (32 * g).min(223 - 32 * k);
                *m.entry((s, s / 32)).or_insert(0u32) += 1;
            }
            m.into_iter().collect::<Vec<_>>()
        };
        assert_eq!(
            count(3),
            vec![((0, 0), 17), ((32, 1), 31), ((64, 2), 33), ((96, 3), 31), ((127, 3), 112)]
        );
        assert_eq!(count(4), vec![((0, 0), 17), ((32, 1), 31), ((64, 2), 33), ((95, 2), 143)]);
        assert_eq!(count(5), vec![((0, 0), 17), ((32, 1), 31), ((63, 1), 176)]);
    }

    #[test]
    fn official_sampler_frequencies_match_table() {
        // docs/method.md 11.3 #12: P(x0 = 3 | k = 3) = 143/224 and P(s = 63 | k = 5) = 176/224.
        let cfg = SwapConfig::paper(224);
        let (mut n3, mut x3, mut n5, mut s63) = (0u32, 0u32, 0u32, 0u32);
        for i in 0..60_000u64 {
            let b = sample_swap_box(&cfg, &mut KeyedRng::new(&[7, i]));
            if b.grid.w == 3 {
                n3 += 1;
                x3 += u32::from(b.grid.x == 3);
            }
            if b.grid.w == 5 {
                n5 += 1;
                s63 += u32::from(b.pixels.x == 63);
            }
            assert!(b.grid.right() <= 6 && b.grid.bottom() <= 6, "{b:?}");
            assert!(b.pixels.right() <= 223 && b.pixels.bottom() <= 223, "{b:?}");
        }
        let p3 = f64::from(x3) / f64::from(n3);
        let p5 = f64::from(s63) / f64::from(n5);
        assert!((p3 - 143.0 / 224.0).abs() < 0.015, "P(x0=3|k=3) = {p3}");
        assert!((p5 - 176.0 / 224.0).abs() < 0.015, "P(s=63|k=5) = {p5}");
    }

    #[test]
    fn aligned_sampler_is_grid_exact_and_uniform() {
        let cfg = SwapConfig { sampler: SwapSampler::Aligned, ..SwapConfig::paper(224) };
        let mut hist = [0u32; 7];
        for i in 0..20_000u64 {
            let b = sample_swap_box(&cfg, &mut KeyedRng::new(&[1, i]));
            assert_eq!(
                b.pixels,
                Rect::new(b.grid.x * 32, b.grid.y * 32, b.grid.w * 32, b.grid.h * 32)
            );
            assert!(b.grid.right() <= 7 && b.grid.bottom() <= 7);
            assert!((3..=5).contains(&b.grid.w) && (3..=5).contains(&b.grid.h));
            if b.grid.w == 3 {
                hist[b.grid.x as usize] += 1;
            }
        }
        // k = 3 on a 7-cell grid: x0 uniform over 0..=4.
        let n: u32 = hist.iter().sum();
        for &c in &hist[..5] {
            let p = f64::from(c) / f64::from(n);
            assert!((p - 0.2).abs() < 0.03, "{hist:?}");
        }
        assert_eq!(hist[5] + hist[6], 0);
    }

    #[test]
    fn pairing_reverses_within_groups_and_is_an_involution() {
        assert_eq!(pairing(4, 1).unwrap(), vec![3, 2, 1, 0]);
        assert_eq!(pairing(8, 2).unwrap(), vec![3, 2, 1, 0, 7, 6, 5, 4]);
        let p = pairing(256, 8).unwrap();
        for (i, &j) in p.iter().enumerate() {
            assert_ne!(i as u32, j, "no sample pairs with itself");
            assert_eq!(p[j as usize], i as u32);
            assert_eq!(i / 32, j as usize / 32, "partners share a BN group");
        }
        assert!(pairing(6, 2).is_err());
        assert!(pairing(10, 4).is_err());
    }

    #[test]
    fn validate_rejects_boxes_without_canvas() {
        assert!(SwapConfig::paper(224).validate().is_ok());
        assert!(SwapConfig { max_cells: 7, ..SwapConfig::paper(224) }.validate().is_err());
        assert!(SwapConfig::paper(96).validate().is_err());
        let small = SwapConfig { min_cells: 1, max_cells: 2, ..SwapConfig::paper(96) };
        assert!(small.validate().is_ok());
        assert!(SwapConfig::paper(200).validate().is_err());
    }
}
