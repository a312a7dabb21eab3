//! Batch plans: everything random about a step, drawn before any byte is decoded.
//!
//! A [`BatchPlan`] holds the record indices of a step and, per view and sample, the crop, flip and
//! colour parameters, plus the RegionCL swap box and pairing. All of it comes from [`KeyedRng`]
//! streams keyed by the seed and the position in the run, never from a thread-local generator:
//! - view parameters: `(seed, "view", epoch, record index, view)`, so an image's augmentation in an
//!   epoch does not depend on the batch size, the world size or the thread count;
//! - the swap box: `(seed, "swap", epoch, step)`, one box per step shared by every rank, as in the
//!   official run.
//!
//! Consequences: the executor's output is identical for 1 or N threads, and resuming at
//! `(epoch, step)` reproduces exactly the batches of an uninterrupted run.

use std::sync::Arc;

use regioncl_augment::{KeyedRng, Rect, ViewParams, ViewSpec};

use crate::error::{Error, Result};
use crate::order::Order;
use crate::swap::{SwapBox, SwapConfig, pairing, sample_swap_box};

const STREAM_VIEW: u64 = 0x7669_6577; // "view"
const STREAM_SWAP: u64 = 0x7377_6170; // "swap"

/// Sizes of the records, known before decoding (a shard's index stores them).
pub trait RecordSizes: Send + Sync {
    /// Number of records.
    fn num_records(&self) -> u64;
    /// (width, height) of record `index`.
    fn size(&self, index: u64) -> (u32, u32);
}

impl RecordSizes for crate::Dataset {
    fn num_records(&self) -> u64 {
        self.len() as u64
    }
    fn size(&self, index: u64) -> (u32, u32) {
        // Opening the dataset validated every index entry; an index past the end is a caller bug
        // that the planner cannot produce (its order covers exactly `num_records`).
        self.record(index as usize).map_or((1, 1), |r| (r.width, r.height))
    }
}

impl RecordSizes for Vec<(u32, u32)> {
    fn num_records(&self) -> u64 {
        self.len() as u64
    }
    fn size(&self, index: u64) -> (u32, u32) {
        self[index as usize]
    }
}

/// Where the colour operations of a recipe run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ColorOn {
    /// Workers write u8 `[H, W, 3]` views (crop, resize, flip only); the consumer applies the
    /// planned colour parameters itself (the trainer does it on the GPU).
    #[default]
    Consumer,
    /// Workers apply the whole augmentation and write normalized f32 `[3, H, W]` views.
    Cpu,
}

/// How the crops of a recipe are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Sampling {
    /// Drawn per view from its [`ViewSpec`] (training).
    #[default]
    Random,
    /// Deterministic evaluation crop: resize the shorter side to `resize`, then take the central
    /// `width` x `height` of the view (torchvision's `Resize(256)` + `CenterCrop(224)`), no flip,
    /// no colour.
    Center {
        /// Shorter side after the resize.
        resize: u32,
    },
}

/// The views made from every sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// One spec per view; view 0 is the query view of two-view methods.
    pub views: Vec<ViewSpec>,
    /// Where colour runs.
    pub color_on: ColorOn,
    /// Random or central crops.
    pub sampling: Sampling,
}

impl Recipe {
    /// MoCo v2: two independently augmented `size` x `size` views (docs/method.md section 8).
    pub fn mocov2(size: u32) -> Self {
        Self {
            views: vec![ViewSpec::mocov2(size); 2],
            color_on: ColorOn::Consumer,
            sampling: Sampling::Random,
        }
    }

    /// One evaluation view: shorter side resized to `resize`, central `crop` x `crop`.
    pub fn center_crop(resize: u32, crop: u32) -> Self {
        Self {
            views: vec![ViewSpec::geometry_only(crop)],
            color_on: ColorOn::Consumer,
            sampling: Sampling::Center { resize },
        }
    }

    /// Multi-crop: `globals` MoCo v2 views of `global_size` and `locals` views of `local_size`
    /// with RandomResizedCrop scale (0.05, 0.4) (SwAV/DINO style).
    pub fn multi_crop(globals: usize, global_size: u32, locals: usize, local_size: u32) -> Self {
        let local = ViewSpec { scale: (0.05, 0.4), ..ViewSpec::mocov2(local_size) };
        let mut views =
            vec![ViewSpec { scale: (0.4, 1.0), ..ViewSpec::mocov2(global_size) }; globals];
        views.extend(std::iter::repeat_n(local, locals));
        Self { views, color_on: ColorOn::Consumer, sampling: Sampling::Random }
    }

    /// Checks every view spec.
    ///
    /// # Errors
    /// [`Error::Config`] naming the view.
    pub fn validate(&self) -> Result<()> {
        if self.views.is_empty() {
            return Err(Error::Config("recipe.views: no views".into()));
        }
        for (i, v) in self.views.iter().enumerate() {
            v.validate().map_err(|e| Error::Config(format!("recipe.views[{i}]: {e}")))?;
        }
        Ok(())
    }
}

/// The RegionCL part of a plan: box sampling and the pairing's BN groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwapPlanConfig {
    /// Box geometry and sampler.
    pub swap: SwapConfig,
    /// Contiguous BN groups the pairing stays inside (the trainer's `bn_splits`).
    pub bn_groups: usize,
}

/// Everything random about one step.
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

/// Draws the view parameters of `record` (of size `w` x `h`) for `epoch`.
pub fn plan_views(
    recipe: &Recipe,
    seed: u64,
    epoch: u64,
    record: u64,
    (w, h): (u32, u32),
) -> Vec<ViewParams> {
    if let Sampling::Center { resize } = recipe.sampling {
        return recipe
            .views
            .iter()
            .map(|spec| ViewParams::crop_only(center_crop(w, h, resize, spec)))
            .collect();
    }
    (0..recipe.views.len())
        .map(|v| {
            let mut rng = KeyedRng::new(&[seed, STREAM_VIEW, epoch, record, v as u64]);
            recipe.views[v].sample(w, h, &mut rng)
        })
        .collect()
}

/// The crop (in original pixels) that `Resize(resize)` + `CenterCrop(spec size)` keeps.
fn center_crop(w: u32, h: u32, resize: u32, spec: &ViewSpec) -> Rect {
    // Resize scales the shorter side to `resize`: one output pixel is `short / resize` input pixels.
    let px = f64::from(w.min(h)) / f64::from(resize.max(1));
    let cw = ((f64::from(spec.width) * px).round() as u32).clamp(1, w);
    let ch = ((f64::from(spec.height) * px).round() as u32).clamp(1, h);
    Rect::new((w - cw) / 2, (h - ch) / 2, cw, ch)
}

/// Turns (epoch, step) into batch plans for one rank.
#[derive(Clone)]
pub struct Planner {
    seed: u64,
    batch_size: usize,
    recipe: Recipe,
    swap: Option<SwapPlanConfig>,
    order: Order,
    sizes: Arc<dyn RecordSizes>,
    cached: Option<(u64, Arc<Vec<u64>>)>,
    /// Whether the last, partial batch of an epoch is planned (evaluation) or dropped (training).
    keep_last: bool,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("seed", &self.seed)
            .field("batch_size", &self.batch_size)
            .field("recipe", &self.recipe)
            .field("swap", &self.swap)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

impl Planner {
    /// A planner drawing `batch_size` samples per step from `order`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid recipe or swap config, a batch the pairing cannot split,
    /// an order over a different number of records than `sizes`, or an epoch shorter than a batch.
    pub fn new(
        seed: u64,
        batch_size: usize,
        recipe: Recipe,
        swap: Option<SwapPlanConfig>,
        order: Order,
        sizes: Arc<dyn RecordSizes>,
    ) -> Result<Self> {
        recipe.validate()?;
        if let Some(s) = &swap {
            s.swap.validate()?;
            pairing(batch_size, s.bn_groups)?;
            let q = &recipe.views[0];
            if (q.width, q.height) != (s.swap.view_width, s.swap.view_height) {
                return Err(Error::Config(format!(
                    "swap: the swap is planned for a {}x{} query view but view 0 is {}x{}",
                    s.swap.view_width, s.swap.view_height, q.width, q.height
                )));
            }
        }
        if order.num_records() != sizes.num_records() {
            return Err(Error::Config(format!(
                "order: order over {} records for a dataset of {}",
                order.num_records(),
                sizes.num_records()
            )));
        }
        if batch_size == 0 || order.len_per_rank() < batch_size as u64 {
            return Err(Error::Config(format!(
                "batch_size: batch {batch_size} needs at least that many records per rank ({} here)",
                order.len_per_rank()
            )));
        }
        Ok(Self { seed, batch_size, recipe, swap, order, sizes, cached: None, keep_last: false })
    }

    /// Also plans the last, partial batch of each epoch (`len % batch_size` samples), so that an
    /// epoch covers every record once: for evaluation and feature extraction. Training keeps the
    /// default, drop-last, as MoCo's loader does.
    ///
    /// # Errors
    /// [`Error::Config`] with a swap: its pairing needs full batches.
    pub fn keep_partial_last(mut self) -> Result<Self> {
        if self.swap.is_some() {
            return Err(Error::Config(
                "swap: a partial last batch cannot be paired; keep drop-last with a swap".into(),
            ));
        }
        self.keep_last = true;
        Ok(self)
    }

    /// Steps per epoch: the last partial batch is dropped (as MoCo's loader does) unless
    /// [`Planner::keep_partial_last`].
    pub fn steps_per_epoch(&self) -> u64 {
        let (n, b) = (self.order.len_per_rank(), self.batch_size as u64);
        if self.keep_last { n.div_ceil(b) } else { n / b }
    }

    /// Samples per step (the last step of an epoch may have fewer with
    /// [`Planner::keep_partial_last`]).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The recipe.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
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

    /// The plan of `step` in `epoch`.
    ///
    /// # Panics
    /// If `step >= steps_per_epoch()`.
    pub fn plan(&mut self, epoch: u64, step: u64) -> BatchPlan {
        assert!(step < self.steps_per_epoch(), "step {step} beyond the epoch");
        let order = self.epoch_order(epoch);
        let start = step as usize * self.batch_size;
        let indices = order[start..(start + self.batch_size).min(order.len())].to_vec();
        let mut views = vec![Vec::with_capacity(self.batch_size); self.recipe.views.len()];
        for &i in &indices {
            for (v, p) in plan_views(&self.recipe, self.seed, epoch, i, self.sizes.size(i))
                .into_iter()
                .enumerate()
            {
                views[v].push(p);
            }
        }
        let (swap, pairs) = match &self.swap {
            Some(s) => {
                let mut rng = KeyedRng::new(&[self.seed, STREAM_SWAP, epoch, step]);
                let b = sample_swap_box(&s.swap, &mut rng);
                // Checked in `new`.
                let p = pairing(self.batch_size, s.bn_groups).unwrap_or_default();
                (Some(b), p)
            }
            None => (None, Vec::new()),
        };
        BatchPlan { epoch, step, indices, views, swap, pairing: pairs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{OrderKind, Tail};

    fn sizes(n: usize) -> Arc<dyn RecordSizes> {
        Arc::new(
            (0..n)
                .map(|i| (200 + (i as u32 * 37) % 300, 150 + (i as u32 * 53) % 250))
                .collect::<Vec<_>>(),
        )
    }

    fn planner(n: usize, batch: usize, rank: usize, world: usize) -> Planner {
        let order =
            Order::new(OrderKind::Shuffle, 11, vec![n as u64], rank, world, Tail::Drop).unwrap();
        let swap = SwapPlanConfig { swap: SwapConfig::paper(224), bn_groups: 2 };
        Planner::new(11, batch, Recipe::mocov2(224), Some(swap), order, sizes(n)).unwrap()
    }

    #[test]
    fn plans_are_reproducible_and_resume_exactly() {
        let mut a = planner(100, 8, 0, 1);
        let steps = a.steps_per_epoch();
        let mut all = Vec::new();
        for e in 0..2 {
            for s in 0..steps {
                all.push(a.plan(e, s));
            }
        }
        // A fresh planner asked for (1, 3) directly gives the same plan as the sequential run.
        let mut b = planner(100, 8, 0, 1);
        assert_eq!(b.plan(1, 3), all[12 + 3]);
        assert_eq!(a.steps_per_epoch(), 12);
        for p in &all {
            assert_eq!(p.views.len(), 2);
            assert!(p.views.iter().all(|v| v.len() == 8));
            let b = p.swap.unwrap();
            assert!((3..=5).contains(&b.grid.w));
            assert_eq!(p.pairing, vec![3, 2, 1, 0, 7, 6, 5, 4]);
        }
    }

    #[test]
    fn view_params_depend_on_record_not_on_batching() {
        let mut a = planner(96, 8, 0, 1);
        let mut b = planner(96, 16, 0, 1);
        let pa = a.plan(0, 1);
        let pb = b.plan(0, 0);
        // Both batches contain records 8..16 of the epoch order: same parameters for each record.
        assert_eq!(pa.indices[..], pb.indices[8..]);
        assert_eq!(pa.views[0][..], pb.views[0][8..]);
        assert_eq!(pa.views[1][..], pb.views[1][8..]);
    }

    #[test]
    fn crops_lie_inside_their_images() {
        let s = sizes(64);
        let mut p = planner(64, 8, 0, 1);
        for step in 0..p.steps_per_epoch() {
            let plan = p.plan(3, step);
            for (i, &idx) in plan.indices.iter().enumerate() {
                let (w, h) = s.size(idx);
                for v in 0..2 {
                    assert!(plan.views[v][i].crop.fits_in(w, h));
                }
            }
        }
    }

    #[test]
    fn bad_configs_are_rejected() {
        let order = || Order::new(OrderKind::Shuffle, 0, vec![10], 0, 1, Tail::Drop).unwrap();
        let swap = SwapPlanConfig { swap: SwapConfig::paper(224), bn_groups: 1 };
        assert!(Planner::new(0, 3, Recipe::mocov2(224), Some(swap), order(), sizes(10)).is_err());
        assert!(Planner::new(0, 16, Recipe::mocov2(224), None, order(), sizes(10)).is_err());
        assert!(Planner::new(0, 4, Recipe::mocov2(96), Some(swap), order(), sizes(10)).is_err());
        assert!(Planner::new(0, 4, Recipe::mocov2(224), None, order(), sizes(11)).is_err());
        assert!(
            Planner::new(0, 4, Recipe::multi_crop(2, 224, 6, 96), None, order(), sizes(10)).is_ok()
        );
    }
}
