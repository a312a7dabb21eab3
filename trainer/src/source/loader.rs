//! The adapter from the loader's pipeline to the trainer's [`BatchSource`], for both real sources:
//! a folder of photos (`data.source = "photos"`, read through the loader's
//! [`ImageFolder`](regioncl_loader::ImageFolder)) and a shard dataset (`"shards"`, the output of
//! `regioncl convert`). Both go through the same [`LoaderBuilder`], so the same image and seed give
//! the same views whichever the source. The plan's view parameters, swap box and pairing become a
//! [`StepInput`], the u8 NHWC view buffers are wrapped as tensors without a copy, and the loader's
//! batch is held until the step is done with the memory (its drop returns the buffers to the ring).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use regioncl_loader::{
    Batch, Dataset, ImageFolder, LoaderBuilder, Pipeline, Planner, RecordSource, ViewLayout,
};
use tch::{Device, Kind, Tensor};

use crate::config::{Config, DataSource};
use crate::error::{Error, Result};
use crate::input::{BatchSource, StepInput};
use crate::source::{PinnedAllocator, RankShare, loader_builder, loader_err, swap_of};

/// The data directory: `$REGIONCL_DATA`, else `<workspace>/.cache/data`.
pub fn data_root() -> PathBuf {
    match std::env::var_os("REGIONCL_DATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/data"),
    }
}

/// The config's records: the photo folder (`data.root`, or `data_root()/imagenet-like`) or the
/// shard dataset at `data.root`.
fn open_records(config: &Config) -> Result<Arc<dyn RecordSource>> {
    match config.data.source {
        DataSource::Photos => {
            let root = if config.data.root.is_empty() {
                data_root().join("imagenet-like")
            } else {
                PathBuf::from(&config.data.root)
            };
            if !root.is_dir() {
                return Err(Error::Data(format!(
                    "{}: no such folder: run `make data`",
                    root.display()
                )));
            }
            Ok(Arc::new(ImageFolder::open(&root).map_err(loader_err)?))
        }
        DataSource::Shards => {
            let root = Path::new(&config.data.root);
            if config.data.root.is_empty() || !root.is_dir() {
                return Err(Error::config(
                    "data.root",
                    "set it to a dataset made by `regioncl convert`",
                ));
            }
            let dataset = Dataset::open(root).map_err(loader_err)?;
            if dataset.is_empty() {
                return Err(Error::Data(format!("dataset {} has no records", root.display())));
            }
            Ok(Arc::new(dataset))
        }
        DataSource::Synthetic => Err(Error::config(
            "data.source",
            "synthetic pixels come from SyntheticSource, not from records",
        )),
    }
}

/// A photo folder or a shard dataset, through the loader's multithreaded pipeline.
pub struct LoaderSource {
    builder: LoaderBuilder,
    planner: Planner,
    pipeline: Option<Pipeline>,
    num_records: u64,
    steps_per_epoch: u64,
}

impl std::fmt::Debug for LoaderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderSource")
            .field("records", &self.num_records)
            .field("steps_per_epoch", &self.steps_per_epoch)
            .finish_non_exhaustive()
    }
}

impl LoaderSource {
    /// Opens `config.data.source` (`photos` or `shards`) and plans the config's recipe: two views
    /// of the config's recipe (`augment`; BYOL's asymmetric pair with `augment.asymmetric`) with
    /// colour left to the trainer, the swap box (RegionCL) with the pairing inside the BN groups
    /// ([`Config::batch_split`]), a fresh shuffle per epoch,
    /// drop_last, epochs cut to `data.steps_per_epoch` when it is set.
    ///
    /// # Errors
    /// [`Error::Data`] for a missing or invalid folder or dataset, or a config the loader refuses.
    pub fn new(config: &Config) -> Result<Self> {
        Self::for_rank(config, RankShare::WHOLE)
    }

    /// [`LoaderSource::new`] for one rank of a multi-process run: every step the rank reads its
    /// `share` of the global batch (the samples, with the same view parameters, that one process
    /// reads at those positions of the batch); the swap box of a step is the same on every rank.
    ///
    /// # Errors
    /// As [`LoaderSource::new`]; [`Error::Config`] when the world does not divide the batch or its
    /// BN groups.
    pub fn for_rank(config: &Config, share: RankShare) -> Result<Self> {
        share.split(config)?;
        let records = open_records(config)?;
        let num_records = records.num_records();
        let builder = loader_builder(config, share, LoaderBuilder::new(records))?
            .allocator(Arc::new(PinnedAllocator));
        let planner = builder.planner().map_err(loader_err)?;
        let steps_per_epoch = planner.steps_per_epoch();
        Ok(Self { builder, planner, pipeline: None, num_records, steps_per_epoch })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.num_records as usize
    }

    /// Whether there are no records (never: opening refuses that).
    pub fn is_empty(&self) -> bool {
        self.num_records == 0
    }

    /// The record indices this rank reads at global `step`, in batch order.
    pub fn records(&mut self, step: u64) -> Vec<u64> {
        let spe = self.steps_per_epoch;
        self.planner.plan(step / spe, step % spe).indices
    }

    fn convert(&self, batch: Batch) -> Result<StepInput> {
        let plan = batch.plan();
        let epoch = plan.epoch;
        let step = epoch * self.steps_per_epoch + plan.step;
        let b = plan.batch_size() as i64;
        let mut views = Vec::with_capacity(batch.num_views());
        for v in 0..batch.num_views() {
            let view = batch.view(v);
            if view.layout != ViewLayout::U8Nhwc {
                return Err(Error::Data(format!("loader view {v} is not u8 NHWC")));
            }
            let (h, w) = (i64::from(view.height), i64::from(view.width));
            // SAFETY: the bytes are `b * h * w * 3` u8 owned by the batch's buffer, which stays at
            // a fixed address and alive in `StepInput::hold` until the step has read them (the
            // step reads its loss back, synchronising the device, before dropping its input).
            let t = unsafe {
                Tensor::f_from_blob(
                    view.bytes.as_ptr(),
                    &[b, h, w, 3],
                    &[h * w * 3, w * 3, 3, 1],
                    Kind::Uint8,
                    Device::Cpu,
                )?
            };
            views.push(t);
        }
        let (swap, pairing) = swap_of(plan)?;
        Ok(StepInput {
            epoch,
            step,
            views,
            params: plan.views.clone(),
            flipped: true,
            swap,
            pairing,
            substitutions: batch.substitutions().to_vec(),
            hold: Some(Box::new(batch)),
        })
    }
}

impl BatchSource for LoaderSource {
    fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    fn seek(&mut self, step: u64) -> Result<()> {
        self.pipeline = None;
        let (epoch, step) = (step / self.steps_per_epoch, step % self.steps_per_epoch);
        self.pipeline = Some(self.builder.clone().start(epoch, step).build().map_err(loader_err)?);
        Ok(())
    }

    fn next_batch(&mut self) -> Result<StepInput> {
        let pipeline = self.pipeline.as_mut().ok_or_else(|| Error::Data("seek first".into()))?;
        let batch = pipeline
            .next()
            .ok_or_else(|| Error::Data("loader stopped".into()))?
            .map_err(loader_err)?;
        self.convert(batch)
    }
}
