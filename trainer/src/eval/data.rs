//! Labeled evaluation data: a shard dataset read through the loader's pipeline as batches of u8
//! views with their labels, every record exactly once (centre crop), or a shuffled epoch of random
//! crops (the linear probe's training augmentation).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use regioncl_augment::{IMAGENET_MEAN, IMAGENET_STD, ViewSpec};
use regioncl_loader::{
    ColorOn, Dataset, HeapAllocator, Order, OrderKind, Pipeline, PipelineConfig, Planner, Recipe,
    Sampling, Tail,
};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// The deterministic evaluation view: shorter side resized to `resize`, then the central
/// `crop` x `crop` (torchvision's `Resize(resize)` + `CenterCrop(crop)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalView {
    /// Shorter side after the resize.
    pub resize: u32,
    /// Side of the square central crop (the network's input).
    pub crop: u32,
}

impl EvalView {
    /// ImageNet's `Resize(256)` + `CenterCrop(224)`.
    pub const IMAGENET: Self = Self { resize: 256, crop: 224 };

    /// The ImageNet ratio (256 / 224) at another input size: `resize = round(crop * 8 / 7)`.
    pub fn for_crop(crop: u32) -> Self {
        Self { resize: (f64::from(crop) * 256.0 / 224.0).round() as u32, crop }
    }
}

/// A labeled shard dataset (`regioncl convert` output) to evaluate on.
#[derive(Clone, Debug)]
pub struct EvalSet {
    dataset: Arc<Dataset>,
    path: PathBuf,
}

fn loader_err(path: &Path, e: regioncl_loader::Error) -> Error {
    Error::Data(format!("{}: {e}", path.display()))
}

impl EvalSet {
    /// Opens the dataset directory `path`.
    ///
    /// # Errors
    /// [`Error::Data`] for a missing, corrupt or empty dataset.
    pub fn open(path: &Path) -> Result<Self> {
        let dataset = Dataset::open(path).map_err(|e| loader_err(path, e))?;
        if dataset.is_empty() {
            return Err(Error::Data(format!("{}: no records", path.display())));
        }
        Ok(Self { dataset: Arc::new(dataset), path: path.to_path_buf() })
    }

    /// The dataset directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records.
    pub fn len(&self) -> usize {
        self.dataset.len()
    }

    /// Whether it holds no record (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.dataset.is_empty()
    }

    /// Number of classes: the manifest's class names, or one past the largest label when the
    /// manifest names none (a list-file conversion).
    pub fn num_classes(&self) -> usize {
        if self.dataset.num_classes() > 0 {
            return self.dataset.num_classes();
        }
        (0..self.len())
            .filter_map(|i| self.dataset.record(i).ok())
            .map(|r| r.label as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// Class names from the manifest.
    pub fn class_names(&self) -> &[String] {
        self.dataset.class_names()
    }

    /// Checks that `other` labels the same classes (a k-NN bank and its queries, a probe's train
    /// and test sets). Datasets converted from a list file name their classes by number (`"0"`,
    /// `"1"`, ...): those are taken to match anything.
    ///
    /// # Errors
    /// [`Error::Data`] naming both datasets when their class names differ.
    pub fn check_same_classes(&self, other: &EvalSet) -> Result<()> {
        let (a, b) = (self.class_names(), other.class_names());
        let numbered = |n: &[String]| n.iter().enumerate().all(|(i, s)| *s == i.to_string());
        if !numbered(a) && !numbered(b) && a != b {
            return Err(Error::Data(format!(
                "{} and {} label different classes ({} vs {} names, first difference at {})",
                self.path.display(),
                other.path.display(),
                a.len(),
                b.len(),
                a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
            )));
        }
        Ok(())
    }

    fn order(&self, kind: OrderKind, seed: u64) -> Result<Order> {
        let lens =
            (0..self.dataset.shards().len()).map(|s| self.dataset.shard_range(s).len() as u64);
        Order::new(kind, seed, lens.collect(), 0, 1, Tail::Drop)
            .map_err(|e| loader_err(&self.path, e))
    }

    /// Calls `f` with every record once, in stored order, as the evaluation view: a u8
    /// `[B, crop, crop, 3]` CPU tensor and the labels. Batches of `batch` come from the loader's
    /// pipeline (`threads` workers, 0 = every core), the last one partial
    /// ([`Planner::keep_partial_last`]).
    ///
    /// # Errors
    /// A record (and its substitutes) that fails to decode, or what `f` returns.
    pub fn for_each_center<F>(
        &self,
        view: EvalView,
        batch: usize,
        threads: usize,
        f: F,
    ) -> Result<()>
    where
        F: FnMut(&Tensor, &[u32]) -> Result<()>,
    {
        let recipe = Recipe::center_crop(view.resize, view.crop);
        self.run(recipe, OrderKind::Sequential, 0, 0, batch, threads, true, f)
    }

    /// Calls `f` with the batches of `epoch` of a shuffled order (keyed by `seed`, drop-last) of
    /// random crops: RandomResizedCrop to `crop` with area `scale`, aspect (3/4, 4/3), flip p 0.5,
    /// no colour (the MoCo linear probe's training augmentation).
    ///
    /// # Errors
    /// As [`EvalSet::for_each_center`].
    #[allow(clippy::too_many_arguments)]
    pub fn for_each_random<F>(
        &self,
        crop: u32,
        scale: (f32, f32),
        seed: u64,
        epoch: u64,
        batch: usize,
        threads: usize,
        f: F,
    ) -> Result<()>
    where
        F: FnMut(&Tensor, &[u32]) -> Result<()>,
    {
        let spec = ViewSpec { scale, flip_p: 0.5, ..ViewSpec::geometry_only(crop) };
        let recipe =
            Recipe { views: vec![spec], color_on: ColorOn::Consumer, sampling: Sampling::Random };
        self.run(recipe, OrderKind::Shuffle, seed, epoch, batch, threads, false, f)
    }

    #[allow(clippy::too_many_arguments)]
    fn run<F>(
        &self,
        recipe: Recipe,
        kind: OrderKind,
        seed: u64,
        epoch: u64,
        batch: usize,
        threads: usize,
        keep_last: bool,
        mut f: F,
    ) -> Result<()>
    where
        F: FnMut(&Tensor, &[u32]) -> Result<()>,
    {
        let err = |e| loader_err(&self.path, e);
        let batch = batch.clamp(1, self.len());
        let mut planner = Planner::new(
            seed,
            batch,
            recipe.clone(),
            None,
            self.order(kind, seed)?,
            self.dataset.clone(),
        )
        .map_err(err)?;
        if keep_last {
            planner = planner.keep_partial_last().map_err(err)?;
        }
        let steps = planner.steps_per_epoch();
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let config = PipelineConfig {
            threads,
            start: (epoch, 0),
            end_epoch: Some(epoch + 1),
            ..PipelineConfig::default()
        };
        let (w, h) = (i64::from(recipe.views[0].width), i64::from(recipe.views[0].height));
        let pipeline =
            Pipeline::new(self.dataset.clone(), planner, config, &HeapAllocator).map_err(err)?;
        let mut seen = 0u64;
        for b in pipeline {
            let b = b.map_err(err)?;
            let n = b.len() as i64;
            let px = Tensor::from_slice(b.view(0).bytes).view([n, h, w, 3]); // u8 [B, H, W, 3]
            f(&px, b.labels())?;
            seen += 1;
        }
        if seen != steps {
            return Err(Error::Data(format!(
                "{}: the loader stopped after {seen} of {steps} batches",
                self.path.display()
            )));
        }
        Ok(())
    }
}

/// u8 NHWC pixels to the network's input: float NCHW in `[0, 1]`, ImageNet-normalised.
///
/// # Shapes
/// `px: u8 [B, H, W, 3]` (any device) -> float `[B, 3, H, W]` on `device`.
pub(crate) fn normalize(px: &Tensor, device: Device) -> Tensor {
    let x = px.to_device(device).permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0; // [B, 3, H, W]
    let mean = Tensor::from_slice(&IMAGENET_MEAN).to_device(device).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&IMAGENET_STD).to_device(device).view([1, 3, 1, 1]);
    ((x - mean) / std).contiguous()
}
