//! [`LoaderBuilder`]: the one way to make a [`Planner`] or a running [`Pipeline`].

use std::sync::Arc;

use regioncl_augment::{DecodePlanOptions, Normalize};

use crate::error::{Error, Result};
use crate::order::OrderKind;
use crate::pipeline::{BadRecords, BufferAllocator, HeapAllocator, Pipeline, PipelineSettings};
use crate::plan::{PlanSettings, Planner};
use crate::recipe::Recipe;
use crate::source::{RecordSizes, RecordSource};
use crate::swap::SwapPlanConfig;

/// Builds a loader: what to read, how to augment it, in what order, for which rank, and how the
/// pipeline runs.
///
/// ```no_run
/// use std::sync::Arc;
/// use regioncl_loader::{Dataset, LoaderBuilder, Recipe};
///
/// # fn main() -> regioncl_loader::Result<()> {
/// let dataset = Arc::new(Dataset::open("shards/imagenet")?);
/// let loader = LoaderBuilder::new(dataset)
///     .recipe(Recipe::mocov2(224))
///     .batch_size(256) // the global batch: this rank gets 256 / world of each
///     .seed(0)
///     .world(0, 1)
///     .start(0, 0) // or a checkpoint's position, to resume exactly
///     .build()?;
/// for batch in loader.take(10) {
///     let batch = batch?;
///     let query = batch.view(0); // u8 [B, 224, 224, 3]; colour parameters in batch.plan()
///     println!("step {}: {} bytes", batch.step(), query.bytes.len());
/// }
/// # Ok(())
/// # }
/// ```
///
/// Defaults: [`Recipe::mocov2`] at 224 px, batch 256, seed 0, a fresh shuffle per epoch,
/// drop_last, one process, every core, 4 batches ahead, no swap, from `(0, 0)` without end, heap
/// buffers, bad records replaced, ImageNet normalisation for CPU-coloured views.
#[derive(Clone)]
pub struct LoaderBuilder {
    sizes: Arc<dyn RecordSizes>,
    records: Option<Arc<dyn RecordSource>>,
    plan: PlanSettings,
    threads: usize,
    batches_ahead: usize,
    start: (u64, u64),
    end_epoch: Option<u64>,
    allocator: Arc<dyn BufferAllocator>,
    bad_records: BadRecords,
    normalize: Normalize,
    decode: DecodePlanOptions,
}

impl std::fmt::Debug for LoaderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderBuilder")
            .field("records", &self.sizes.num_records())
            .field("plan", &self.plan)
            .field("threads", &self.threads)
            .field("batches_ahead", &self.batches_ahead)
            .field("start", &self.start)
            .field("end_epoch", &self.end_epoch)
            .field("bad_records", &self.bad_records)
            .finish_non_exhaustive()
    }
}

impl LoaderBuilder {
    /// A loader over `source`: a [`Dataset`](crate::Dataset) of shards, an
    /// [`ImageFolder`](crate::ImageFolder), or any other [`RecordSource`].
    pub fn new(source: Arc<dyn RecordSource>) -> Self {
        let mut builder = Self::plan_only(source.clone());
        builder.records = Some(source);
        builder
    }

    /// A builder that only plans: [`LoaderBuilder::planner`] and
    /// [`LoaderBuilder::steps_per_epoch`] work from the record sizes alone (inputs that are not
    /// decoded from records, such as synthetic pixels), [`LoaderBuilder::build`] is an error.
    pub fn plan_only(sizes: Arc<dyn RecordSizes>) -> Self {
        Self {
            sizes,
            records: None,
            plan: PlanSettings {
                seed: 0,
                batch: 256,
                rank: 0,
                world: 1,
                recipe: Recipe::mocov2(224),
                swap: None,
                order: OrderKind::Shuffle,
                drop_last: true,
                max_steps_per_epoch: None,
            },
            threads: 0,
            batches_ahead: 4,
            start: (0, 0),
            end_epoch: None,
            allocator: Arc::new(HeapAllocator),
            bad_records: BadRecords::Replace,
            normalize: Normalize::IMAGENET,
            decode: DecodePlanOptions::default(),
        }
    }

    /// The views made from every sample (a preset such as [`Recipe::mocov2`], or your own).
    pub fn recipe(mut self, recipe: Recipe) -> Self {
        self.plan.recipe = recipe;
        self
    }

    /// The **global** batch: every step, rank `r` of `W` gets the `r`-th `batch / W` samples of
    /// it, so any world size trains on the same global batches.
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.plan.batch = batch;
        self
    }

    /// The seed of every random choice (order, views, swap boxes, substitutes).
    pub fn seed(mut self, seed: u64) -> Self {
        self.plan.seed = seed;
        self
    }

    /// `true`: a fresh permutation per epoch ([`OrderKind::Shuffle`]); `false`: stored order
    /// ([`OrderKind::Sequential`]).
    pub fn shuffle(self, shuffle: bool) -> Self {
        self.order(if shuffle { OrderKind::Shuffle } else { OrderKind::Sequential })
    }

    /// The epoch order, for the shard-local order of data larger than RAM.
    pub fn order(mut self, order: OrderKind) -> Self {
        self.plan.order = order;
        self
    }

    /// `true` (the default): drop an epoch's last partial batch, as MoCo's loader does. `false`:
    /// keep it (evaluation: every record once); with several ranks it is padded to a multiple of
    /// the world with the epoch's first records, as torch's `DistributedSampler` pads.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.plan.drop_last = drop_last;
        self
    }

    /// Cut every epoch to `steps` steps (`None`: whole epochs). For short runs and tests.
    pub fn max_steps_per_epoch(mut self, steps: Option<u64>) -> Self {
        self.plan.max_steps_per_epoch = steps;
        self
    }

    /// This process is rank `rank` of `world` (default `(0, 1)`).
    pub fn world(mut self, rank: usize, world: usize) -> Self {
        self.plan.rank = rank;
        self.plan.world = world;
        self
    }

    /// The RegionCL swap box and pairing, planned per batch (`None`: no swap).
    pub fn region_swap(mut self, swap: Option<SwapPlanConfig>) -> Self {
        self.plan.swap = swap;
        self
    }

    /// Worker threads; 0 (the default) uses every core.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Buffer sets in the ring (at least 2): batches being filled plus batches the consumer holds.
    pub fn batches_ahead(mut self, batches_ahead: usize) -> Self {
        self.batches_ahead = batches_ahead;
        self
    }

    /// The first batch: `(0, 0)` for a new run, the checkpoint's position to resume (the batches
    /// are then exactly those an uninterrupted run gets).
    pub fn start(mut self, epoch: u64, step: u64) -> Self {
        self.start = (epoch, step);
        self
    }

    /// Stop before this epoch (`None`: run until dropped).
    pub fn end_epoch(mut self, end_epoch: Option<u64>) -> Self {
        self.end_epoch = end_epoch;
        self
    }

    /// Where batch buffers come from (pinned memory for CUDA, buffers Python owns, ...).
    pub fn allocator(mut self, allocator: Arc<dyn BufferAllocator>) -> Self {
        self.allocator = allocator;
        self
    }

    /// What to do with a bad record (default: replace it).
    pub fn bad_records(mut self, policy: BadRecords) -> Self {
        self.bad_records = policy;
        self
    }

    /// The normalisation of CPU-coloured (f32) views (default ImageNet's mean and std).
    pub fn normalize(mut self, normalize: Normalize) -> Self {
        self.normalize = normalize;
        self
    }

    /// Which cheaper decodes (DCT scaling, region) the workers may pick; all by default.
    pub fn decode(mut self, decode: DecodePlanOptions) -> Self {
        self.decode = decode;
        self
    }

    /// The planner: this rank's batch plans, without decoding anything.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting: see [`Planner`]'s rules.
    pub fn planner(&self) -> Result<Planner> {
        Planner::new(self.plan.clone(), self.sizes.clone())
    }

    /// Steps per epoch (the same on every rank).
    ///
    /// # Errors
    /// As [`LoaderBuilder::planner`].
    pub fn steps_per_epoch(&self) -> Result<u64> {
        Ok(self.planner()?.steps_per_epoch())
    }

    /// Starts the pipeline's threads.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad setting (naming it) or a builder made by
    /// [`LoaderBuilder::plan_only`]; [`Error::Pipeline`] when the allocator or a thread fails.
    pub fn build(&self) -> Result<Pipeline> {
        let records = self.records.clone().ok_or_else(|| {
            Error::Config("loader: this builder only plans (plan_only): it has no records".into())
        })?;
        let threads = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let settings = PipelineSettings {
            threads,
            batches_ahead: self.batches_ahead,
            start: self.start,
            end_epoch: self.end_epoch,
            decode: self.decode,
            normalize: self.normalize,
            bad_records: self.bad_records,
        };
        Pipeline::start(records, self.planner()?, settings, self.allocator.as_ref())
    }
}
