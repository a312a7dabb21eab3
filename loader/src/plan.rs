//! Batch plans: everything random about a step, drawn before any byte is decoded.
//!
//! A [`BatchPlan`] holds the record indices of one rank's share of a step and, per view and sample,
//! the crop, flip and colour parameters, plus the RegionCL swap box and pairing. All of it comes
//! from [`KeyedRng`] streams keyed by the seed and the position in the run, never from a
//! thread-local generator:
//! - the order: `(seed, epoch, "order")` (see [`OrderKind`](crate::OrderKind)), one global sequence
//!   cut into global batches; rank `r` of `W` takes the `r`-th `batch / W` of each;
//! - view parameters: `(seed, "view", epoch, record index, view)`, so an image's augmentation in an
//!   epoch does not depend on the batch size, the world size or the thread count;
//! - the swap box: `(seed, "swap", epoch, step)`, one box per step shared by every rank, as in the
//!   official run; the pairing reverses each BN group of the global batch, and a rank holds whole
//!   groups.
//!
//! Consequences: the executor's output is identical for 1 or N threads; resuming at
//! `(epoch, step)` reproduces exactly the batches of an uninterrupted run; and the sequence of
//! global batches (records, views, boxes, pairs) is the same whatever the world size, so a run may
//! resume on another number of GPUs and 1 GPU trains on the data 8 GPUs would.

use std::sync::Arc;

use regioncl_augment::{CropBox, KeyedRng, Rect, ViewParams, ViewSpec};

use crate::error::{Error, Result};
use crate::order::{Order, OrderKind};
use crate::recipe::{Recipe, Sampling};
use crate::source::RecordSizes;
use crate::swap::{SwapBox, SwapPlanConfig, pairing, sample_swap_box};

const STREAM_VIEW: u64 = 0x7669_6577; // "view"
const STREAM_SWAP: u64 = 0x7377_6170; // "swap"

/// Everything random about one step, for one rank.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPlan {
    /// Epoch (0-based).
    pub epoch: u64,
    /// Step within the epoch (0-based).
    pub step: u64,
    /// Record indices, one per sample.
    pub indices: Vec<u64>,
    /// Per view, per sample: the parameters to apply. `views[v][i]` is view `v` of sample `i`.
    pub views: Vec<Vec<ViewParams>>,
    /// The swap box of this step (RegionCL only).
    pub swap: Option<SwapBox>,
    /// `pairing[i]`: the sample whose box is pasted into composite `i` (empty without a swap).
    pub pairing: Vec<u32>,
}

impl BatchPlan {
    /// Samples in the batch.
    pub fn batch_size(&self) -> usize {
        self.indices.len()
    }
}

/// Draws the view parameters of record `index` of `sizes` for `epoch`.
pub(crate) fn plan_views(
    recipe: &Recipe,
    seed: u64,
    epoch: u64,
    sizes: &dyn RecordSizes,
    index: u64,
) -> Vec<ViewParams> {
    let (w, h) = sizes.size(index);
    if let Sampling::Center { resize } = recipe.sampling {
        return recipe
            .views
            .iter()
            .map(|spec| ViewParams {
                interpolation: spec.interpolation,
                ..ViewParams::crop_only(center_crop(w, h, resize, spec))
            })
            .collect();
    }
    (0..recipe.views.len())
        .map(|v| {
            let key = [seed, STREAM_VIEW, epoch, sizes.view_key(index), v as u64];
            let mut rng = KeyedRng::new(&key);
            recipe.views[v].sample(w, h, &mut rng)
        })
        .collect()
}

/// The crop that `Resize(resize)` + `CenterCrop(spec size)` keeps, in whole pixels of the original
/// image: [`center_box`] rounded. The worker renders the exact box.
fn center_crop(w: u32, h: u32, resize: u32, spec: &ViewSpec) -> Rect {
    let b = center_box(w, h, resize, spec.width, spec.height);
    let x0 = (b.x.round() as u32).min(w - 1);
    let y0 = (b.y.round() as u32).min(h - 1);
    let x1 = ((b.x + b.w).round() as u32).clamp(x0 + 1, w);
    let y1 = ((b.y + b.h).round() as u32).clamp(y0 + 1, h);
    Rect::new(x0, y0, x1 - x0, y1 - y0)
}

/// The window of a `w` x `h` image that torchvision's `Resize(resize)` + `CenterCrop((out_h,
/// out_w))` keeps, in original pixels with fractional edges (torchvision 0.26 `resize` and
/// `center_crop`): the shorter side becomes `resize`, the longer `floor(resize * long / short)`;
/// the crop starts at `round((resized - out) / 2)` (Python's round, halves to even); each axis
/// maps back by its own scale `original / resized`, as PIL's resize does. Rendering this window
/// with the filter reading around it ([`regioncl_augment::render_window`]) gives torchvision's
/// pixels. Needs `out_w, out_h <= resize` ([`Recipe::validate`]) and a non-empty image.
pub(crate) fn center_box(w: u32, h: u32, resize: u32, out_w: u32, out_h: u32) -> CropBox {
    let (short, long) = (u64::from(w.min(h)), u64::from(w.max(h)));
    let resized_long = u64::from(resize) * long / short;
    let (rw, rh) =
        if w <= h { (u64::from(resize), resized_long) } else { (resized_long, u64::from(resize)) };
    // Python's round((resized - out) / 2.0): the half-way case goes to the even neighbour.
    let start = |resized: u64, out: u32| {
        let d = resized.saturating_sub(u64::from(out));
        let half = d / 2;
        if d % 2 == 1 && half % 2 == 1 { half + 1 } else { half }
    };
    // Products before the division keep the edges exact where they meet the image's.
    let axis = |size: u32, resized: u64, out: u32| {
        let (size, r) = (size as f64, resized as f64);
        let x0 = start(resized, out) as f64 * size / r;
        let x1 = (start(resized, out) + u64::from(out)) as f64 * size / r;
        (x0, (x1 - x0).min(size - x0))
    };
    let (x, bw) = axis(w, rw, out_w);
    let (y, bh) = axis(h, rh, out_h);
    CropBox { x, y, w: bw, h: bh }
}

/// What a [`Planner`] is made of; the builder's planning half.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PlanSettings {
    pub seed: u64,
    /// The global batch.
    pub batch: usize,
    pub rank: usize,
    pub world: usize,
    pub recipe: Recipe,
    pub swap: Option<SwapPlanConfig>,
    pub order: OrderKind,
    pub drop_last: bool,
    /// Cut every epoch to at most this many steps.
    pub max_steps_per_epoch: Option<u64>,
}

/// Turns `(epoch, step)` into one rank's batch plans. Made by
/// [`LoaderBuilder::planner`](crate::LoaderBuilder::planner).
#[derive(Clone)]
pub struct Planner {
    settings: PlanSettings,
    order: Order,
    sizes: Arc<dyn RecordSizes>,
    steps: u64,
    cached: Option<(u64, Arc<Vec<u64>>)>,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("settings", &self.settings)
            .field("steps_per_epoch", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Planner {
    /// # Errors
    /// [`Error::Config`] naming the setting: an invalid recipe or swap config, a rank outside the
    /// world, a world that does not divide the batch or the swap's BN groups, a batch the pairing
    /// cannot split, or an epoch shorter than one batch.
    pub(crate) fn new(settings: PlanSettings, sizes: Arc<dyn RecordSizes>) -> Result<Self> {
        let s = &settings;
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        s.recipe.validate()?;
        if s.world == 0 || s.rank >= s.world {
            return bad("world", format!("rank {} is not in a world of {}", s.rank, s.world));
        }
        if s.batch == 0 || !s.batch.is_multiple_of(s.world) {
            return bad(
                "batch_size",
                format!(
                    "the global batch {} must be a positive multiple of the world {}",
                    s.batch, s.world
                ),
            );
        }
        if let Some(swap) = &s.swap {
            swap.swap.validate()?;
            if !swap.bn_groups.is_multiple_of(s.world) {
                return bad(
                    "region_swap.bn_groups",
                    format!("{} BN groups cannot be shared by {} ranks", swap.bn_groups, s.world),
                );
            }
            pairing(s.batch, swap.bn_groups)?;
            let q = &s.recipe.views[0];
            if (q.width, q.height) != (swap.swap.view_width, swap.swap.view_height) {
                return bad(
                    "region_swap",
                    format!(
                        "the swap is planned for a {}x{} query view but view 0 is {}x{}",
                        swap.swap.view_width, swap.swap.view_height, q.width, q.height
                    ),
                );
            }
            if !s.drop_last {
                return bad(
                    "drop_last",
                    "a partial last batch cannot be paired for the swap".into(),
                );
            }
        }
        let n = sizes.num_records();
        if n == 0 {
            return bad("dataset", "no records".into());
        }
        let order = Order::new(s.order, s.seed, sizes.shard_lens(), s.batch)?;
        if order.num_records() != n {
            return bad(
                "dataset",
                format!("its shards hold {} records, not {n}", order.num_records()),
            );
        }
        let (len, b) = (order.len(), s.batch as u64);
        let mut steps = if s.drop_last { len / b } else { len.div_ceil(b) };
        if steps == 0 {
            return bad(
                "batch_size",
                format!("a global batch of {b} needs at least that many records ({len} here)"),
            );
        }
        if let Some(max) = s.max_steps_per_epoch {
            if max == 0 || max > steps {
                return bad(
                    "max_steps_per_epoch",
                    format!("{max} is not in 1..={steps}, the steps of a whole epoch"),
                );
            }
            steps = max;
        }
        Ok(Self { settings, order, sizes, steps, cached: None })
    }

    /// Steps per epoch: whole global batches, plus a partial last one without drop_last, cut to
    /// `max_steps_per_epoch`. The same on every rank.
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps
    }

    /// This rank's samples per step: `global_batch_size / world` (the partial last batch of an
    /// epoch without drop_last has fewer).
    pub fn batch_size(&self) -> usize {
        self.settings.batch / self.settings.world
    }

    /// Samples per step over all ranks.
    pub fn global_batch_size(&self) -> usize {
        self.settings.batch
    }

    /// `(rank, world)`.
    pub fn rank(&self) -> (usize, usize) {
        (self.settings.rank, self.settings.world)
    }

    /// The recipe.
    pub fn recipe(&self) -> &Recipe {
        &self.settings.recipe
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.settings.seed
    }

    fn epoch_order(&mut self, epoch: u64) -> Arc<Vec<u64>> {
        match &self.cached {
            Some((e, v)) if *e == epoch => v.clone(),
            _ => {
                let v = Arc::new(self.order.epoch(epoch));
                self.cached = Some((epoch, v.clone()));
                v
            }
        }
    }

    /// This rank's records of global batch `step`: the `rank`-th of `world` equal slices. A
    /// partial last batch (without drop_last) is first padded to a multiple of the world with the
    /// epoch's first records, as torch's `DistributedSampler` pads.
    fn rank_indices(&mut self, epoch: u64, step: u64) -> Vec<u64> {
        let (rank, world, b) = (self.settings.rank, self.settings.world, self.settings.batch);
        let order = self.epoch_order(epoch);
        let start = step as usize * b;
        let global = &order[start..(start + b).min(order.len())];
        let per = global.len().div_ceil(world);
        (rank * per..(rank + 1) * per)
            .map(|j| {
                global.get(j).copied().unwrap_or_else(|| order[(j - global.len()) % order.len()])
            })
            .collect()
    }

    /// The plan of `step` in `epoch`, for this rank.
    ///
    /// # Panics
    /// If `step >= steps_per_epoch()`.
    pub fn plan(&mut self, epoch: u64, step: u64) -> BatchPlan {
        assert!(step < self.steps, "step {step} beyond the epoch's {}", self.steps);
        let indices = self.rank_indices(epoch, step);
        let s = &self.settings;
        let mut views = vec![Vec::with_capacity(indices.len()); s.recipe.views.len()];
        for &i in &indices {
            let planned = plan_views(&s.recipe, s.seed, epoch, self.sizes.as_ref(), i);
            for (v, p) in planned.into_iter().enumerate() {
                views[v].push(p);
            }
        }
        let (swap, pairs) = match &s.swap {
            Some(swap) => {
                let mut rng = KeyedRng::new(&[s.seed, STREAM_SWAP, epoch, step]);
                let b = sample_swap_box(&swap.swap, &mut rng);
                // Whole BN groups per rank, checked in `new`.
                let groups = swap.bn_groups / s.world;
                (Some(b), pairing(indices.len(), groups).unwrap_or_default())
            }
            None => (None, Vec::new()),
        };
        BatchPlan { epoch, step, indices, views, swap, pairing: pairs }
    }
}

#[cfg(test)]
mod tests;
