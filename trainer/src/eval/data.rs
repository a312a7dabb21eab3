//! Labeled evaluation data: a shard dataset read through the loader's pipeline as batches of u8
//! views with their labels, every record exactly once (centre crop), or a shuffled epoch of random
//! crops (the linear probe's training augmentation). A bad record is an error, unless the set
//! skips bad records ([`EvalSet::skip_bad`]) and counts them ([`EvalSet::skipped`]): a record
//! replaced behind the metric's back would silently change it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use regioncl_augment::{IMAGENET_MEAN, IMAGENET_STD, ViewSpec};
use regioncl_loader::{BadRecords, Dataset, HeapAllocator, LoaderBuilder, Recipe};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::source::loader_err;

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
    skip_bad: bool,
    /// Bad records left out so far (shared by clones).
    skipped: Arc<AtomicU64>,
}

impl EvalSet {
    /// Opens the dataset directory `path`; a bad record will be an error.
    ///
    /// # Errors
    /// [`Error::Loader`] for a missing or corrupt dataset; [`Error::Data`] for an empty one.
    pub fn open(path: &Path) -> Result<Self> {
        let dataset = Dataset::open(path).map_err(loader_err)?;
        if dataset.is_empty() {
            return Err(Error::Data(format!("dataset {} has no records", path.display())));
        }
        let (skip_bad, skipped) = (false, Arc::new(AtomicU64::new(0)));
        Ok(Self { dataset: Arc::new(dataset), path: path.to_path_buf(), skip_bad, skipped })
    }

    /// With `true`, bad records (see `regioncl_loader::BadRecord`) are left out of the batches
    /// and counted in [`EvalSet::skipped`] instead of failing the evaluation.
    pub fn skip_bad(mut self, skip: bool) -> Self {
        self.skip_bad = skip;
        self
    }

    /// Bad records left out so far, over every pass (each pass over the set counts its own).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
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

    /// A one-epoch loader over the set: batches of `batch` (at most the set), `threads` workers
    /// (0 = every core), heap buffers, this set's bad-record policy.
    fn loader(&self, batch: usize, threads: usize) -> LoaderBuilder {
        let policy = if self.skip_bad { BadRecords::Skip } else { BadRecords::Fail };
        LoaderBuilder::new(self.dataset.clone())
            .batch_size(batch.clamp(1, self.len()))
            .threads(threads)
            .allocator(Arc::new(HeapAllocator))
            .bad_records(policy)
    }

    /// Calls `f` with every record once, in stored order, as the evaluation view: a u8
    /// `[B, crop, crop, 3]` CPU tensor and the labels. Batches of `batch` come from the loader's
    /// pipeline (`threads` workers, 0 = every core), the last one partial.
    ///
    /// # Errors
    /// A bad record (unless skipped), or what `f` returns.
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
        let loader = self
            .loader(batch, threads)
            .recipe(Recipe::eval_center(view.resize, view.crop))
            .shuffle(false)
            .drop_last(false);
        self.run(loader, 0, f)
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
        let recipe = Recipe { views: vec![spec], ..Recipe::supervised(crop) };
        let loader = self.loader(batch, threads).recipe(recipe).seed(seed);
        self.run(loader, epoch, f)
    }

    /// Runs `loader` over `epoch`, handing each batch's first view and labels to `f`.
    fn run<F>(&self, loader: LoaderBuilder, epoch: u64, mut f: F) -> Result<()>
    where
        F: FnMut(&Tensor, &[u32]) -> Result<()>,
    {
        let pipeline =
            loader.start(epoch, 0).end_epoch(Some(epoch + 1)).build().map_err(loader_err)?;
        for b in pipeline {
            let b = b.map_err(loader_err)?;
            self.skipped.fetch_add(b.skipped().len() as u64, Ordering::Relaxed);
            let v = b.view(0);
            let (n, h, w) = (b.len() as i64, i64::from(v.height), i64::from(v.width));
            let px = Tensor::from_slice(v.bytes).view([n, h, w, 3]); // u8 [B, H, W, 3]
            f(&px, b.labels())?;
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
