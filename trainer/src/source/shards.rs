//! The adapter from the loader's pipeline (shards, worker threads, planned batches) to the
//! trainer's [`BatchSource`]: the plan's view parameters, swap box and pairing become a
//! [`StepInput`], the u8 NHWC view buffers are wrapped as tensors without a copy, and the loader's
//! batch is held until the step is done with the memory (its drop returns the buffers to the ring).
//! Buffers come from [`PinnedAllocator`]: pinned host memory when CUDA is present, so the trainer's
//! host-to-device copies are asynchronous.

use std::path::Path;
use std::sync::Arc;

use regioncl_loader::{
    AlignedBuffer, AllocError, Batch, BufferAllocator, ColorOn, Dataset, HostBuffer, Order,
    OrderKind, Pipeline, PipelineConfig, Planner, Recipe, Sampling, SwapConfig, SwapPlanConfig,
    Tail, ViewLayout,
};
use tch::{Device, Kind, Tensor};

use crate::config::{Config, SwapSampler};
use crate::error::{Error, Result};
use crate::input::{BatchSource, StepInput};
use crate::source::{RankShare, view_spec};
use crate::swap::{CellBox, Pairing, PixelBox, SwapBox};

fn loader_err(e: regioncl_loader::Error) -> Error {
    Error::Data(format!("loader: {e}"))
}

/// A view buffer in pinned host memory (a libtorch tensor from the caching host allocator).
struct PinnedBuffer {
    tensor: Tensor,
    len: usize,
}

impl HostBuffer for PinnedBuffer {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `tensor` is a contiguous u8 CPU tensor of `len` elements owned by this buffer; its
        // storage never moves or shrinks while the buffer lives.
        unsafe { std::slice::from_raw_parts(self.tensor.data_ptr() as *const u8, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only view of the bytes.
        unsafe { std::slice::from_raw_parts_mut(self.tensor.data_ptr() as *mut u8, self.len) }
    }
}

/// Hands the loader pinned host buffers when CUDA is available, 64-byte aligned heap buffers
/// otherwise.
#[derive(Clone, Copy, Debug, Default)]
pub struct PinnedAllocator;

impl BufferAllocator for PinnedAllocator {
    fn allocate(&self, bytes: usize) -> std::result::Result<Box<dyn HostBuffer>, AllocError> {
        if tch::Cuda::is_available() {
            let tensor = crate::shim::empty_pinned(&[bytes as i64], Kind::Uint8)?;
            return Ok(Box::new(PinnedBuffer { tensor, len: bytes }));
        }
        Ok(Box::new(AlignedBuffer::new(bytes)?))
    }
}

/// The loader pipeline over a shard dataset (`regioncl convert` output) as a batch source.
pub struct ShardSource {
    dataset: Arc<Dataset>,
    planner: Planner,
    pipeline: Option<Pipeline>,
    threads: usize,
    steps_per_epoch: u64,
    stride: i64,
    /// Records the loader replaced so far in this process.
    replaced: u64,
}

impl std::fmt::Debug for ShardSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSource")
            .field("records", &self.dataset.len())
            .field("steps_per_epoch", &self.steps_per_epoch)
            .finish_non_exhaustive()
    }
}

impl ShardSource {
    /// Opens the dataset at `config.data.root` and plans the config's recipe: two MoCo v2 views
    /// with colour left to the trainer, the swap box (RegionCL) with the pairing inside the
    /// BN groups ([`Config::bn_groups`]), a full shuffle per epoch, drop_last.
    ///
    /// # Errors
    /// [`Error::Data`] for a missing or invalid dataset or a config the planner refuses.
    pub fn new(config: &Config) -> Result<Self> {
        Self::for_rank(config, RankShare::WHOLE)
    }

    /// [`ShardSource::new`] for one rank of a multi-process run: the rank reads the `share.rank`-th
    /// disjoint block of every epoch's order ([`regioncl_loader::Order`], drop_last over the
    /// ranks) in batches of `batch_size / world`, its pairing inside its own BN groups; the swap
    /// box of a step is the same on every rank.
    ///
    /// # Errors
    /// As [`ShardSource::new`]; [`Error::Config`] when the world does not divide the batch or its
    /// BN groups.
    pub fn for_rank(config: &Config, share: RankShare) -> Result<Self> {
        let split = share.split(config)?;
        let (batch, bn_groups) = (split.rank_batch as usize, split.groups as usize);
        let root = Path::new(&config.data.root);
        if config.data.root.is_empty() || !root.is_dir() {
            return Err(Error::config(
                "data.root",
                "set it to a dataset made by `regioncl convert`",
            ));
        }
        let dataset = Arc::new(Dataset::open(root).map_err(loader_err)?);
        let lens =
            (0..dataset.shards().len()).map(|s| dataset.shard_range(s).len() as u64).collect();
        let order =
            Order::new(OrderKind::Shuffle, config.seed, lens, share.rank, share.world, Tail::Drop)
                .map_err(loader_err)?;
        let spec = view_spec(config);
        let recipe = Recipe {
            views: vec![spec; 2],
            color_on: ColorOn::Consumer,
            sampling: Sampling::Random,
        };
        let stride = config.model.stem.stride();
        let swap = config.region_terms().any().then(|| {
            let r = &config.region;
            SwapPlanConfig {
                swap: SwapConfig {
                    stride: stride as u32,
                    min_cells: r.c_lower as u32,
                    max_cells: r.c_upper as u32,
                    sampler: match r.sampler {
                        SwapSampler::Aligned => regioncl_loader::SwapSampler::Aligned,
                        _ => regioncl_loader::SwapSampler::Official,
                    },
                    view_width: spec.width,
                    view_height: spec.height,
                },
                bn_groups,
            }
        });
        let planner = Planner::new(config.seed, batch, recipe, swap, order, dataset.clone())
            .map_err(loader_err)?;
        let steps_per_epoch = planner.steps_per_epoch();
        if config.data.steps_per_epoch != 0 && config.data.steps_per_epoch != steps_per_epoch {
            return Err(Error::config(
                "data.steps_per_epoch",
                format!("the shard loader runs whole epochs ({steps_per_epoch} steps here): use 0"),
            ));
        }
        let threads = match config.data.loader_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        Ok(Self { dataset, planner, pipeline: None, threads, steps_per_epoch, stride, replaced: 0 })
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
        let swap = plan.swap.map(|s| SwapBox {
            pixel: PixelBox {
                x: i64::from(s.pixels.x),
                y: i64::from(s.pixels.y),
                w: i64::from(s.pixels.w),
                h: i64::from(s.pixels.h),
            },
            cells: CellBox {
                x0: i64::from(s.grid.x),
                y0: i64::from(s.grid.y),
                w: i64::from(s.grid.w),
                h: i64::from(s.grid.h),
            },
        });
        let pairing = if plan.pairing.is_empty() {
            None
        } else {
            Some(Pairing::new(plan.pairing.iter().map(|&j| i64::from(j)).collect())?)
        };
        debug_assert!(swap.is_none_or(|s| s.pixel.w == s.cells.w * self.stride));
        Ok(StepInput {
            epoch,
            step,
            views,
            params: plan.views.clone(),
            flipped: true,
            swap,
            pairing,
            hold: Some(Box::new(batch)),
        })
    }
}

impl BatchSource for ShardSource {
    fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    fn seek(&mut self, step: u64) -> Result<()> {
        self.pipeline = None;
        let start = (step / self.steps_per_epoch, step % self.steps_per_epoch);
        let config = PipelineConfig { threads: self.threads, start, ..PipelineConfig::default() };
        let pipeline =
            Pipeline::new(self.dataset.clone(), self.planner.clone(), config, &PinnedAllocator)
                .map_err(loader_err)?;
        self.pipeline = Some(pipeline);
        Ok(())
    }

    fn next_batch(&mut self) -> Result<StepInput> {
        let pipeline = self.pipeline.as_mut().ok_or_else(|| Error::Data("seek first".into()))?;
        let batch = pipeline
            .next()
            .ok_or_else(|| Error::Data("loader stopped".into()))?
            .map_err(loader_err)?;
        for s in batch.substitutions() {
            let plan = batch.plan();
            eprintln!(
                "warning: epoch {} step {}: record {} replaced by record {}: {}",
                plan.epoch, plan.step, s.failed, s.replacement, s.reason
            );
        }
        self.replaced += batch.substitutions().len() as u64;
        self.convert(batch)
    }

    fn replaced(&self) -> u64 {
        self.replaced
    }
}
