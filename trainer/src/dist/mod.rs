//! Multi-process training on libtorch's own c10d: NCCL between GPUs, Gloo on CPUs, one process
//! per device, launched by `torchrun` or SLURM `srun` (see [`Launch`] for the environment read).
//!
//! [`Dist`] is this process's view of the run: its rank, the world size, the device it computes on
//! and, when the world has more than one process, a c10d process group (`csrc/dist_shim.cpp`):
//! rendezvous through a TCPStore, then ProcessGroupGloo or ProcessGroupNCCL. A world of one has
//! no group and every collective is the identity, so single-process code paths run the same
//! functions.
//!
//! What the methods need across ranks, and where it is done:
//! - gradients averaged over ranks after the backward, in flat buckets ([`Dist::all_reduce_mean_`],
//!   called by [`crate::Optimizer::step`]);
//! - parameters, buffers and queues broadcast from rank 0 at the start ([`Dist::broadcast_`]);
//! - MoCo's shuffle-BN across ranks ([`Dist::shuffled_forward`]) and the keys of every rank for the
//!   queue ([`Dist::all_gather`]);
//! - SyncBN ([`sync_batch_norm`]): batch statistics over every rank's samples, one all-gather in
//!   the forward and one all-reduce in the backward of each layer;
//! - rank 0 alone running something long (the k-NN monitor) while the others wait for it through
//!   the store, without a collective timeout ([`Dist::on_main`]).
//!
//! [`crate::Trainer::setup`] wires them into training (`regioncl train` under `torchrun` or
//! `srun`): each rank reads its [`crate::RankShare`] of every global batch, rank 0 alone writes.
//!
//! On NCCL a collective does not block the host: it is ordered on the current CUDA stream, as in
//! PyTorch, and the host only waits where it reads a result (a loss, a barrier). On Gloo the host
//! waits for each collective.
//!
//! Failure is an error, not a hang: the rendezvous gives up after the timeout naming the address
//! and the rank, and a collective whose peer died or stalled fails (Gloo: at once when the peer's
//! connection closes, else after the timeout; NCCL: its watchdog ends the process after the
//! timeout).
//!
//! A launched world of one (`torchrun --nproc-per-node 1`) runs without a group, every collective
//! the identity, unless the backend is named ([`DistOptions::backend`] `Nccl` or `Gloo`): then it
//! builds a real group of one and runs every collective through it, which is how one GPU checks
//! the NCCL path (`scripts/gpu_check.sh`).
//!
//! ```no_run
//! use regioncl_trainer::{Dist, DistOptions};
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> regioncl_trainer::Result<()> {
//! // Under `torchrun --nproc-per-node 2 ...`: rank 0 and rank 1; alone: a world of one.
//! let dist = Dist::from_env(&DistOptions::default())?;
//! let t = Tensor::from_slice(&[dist.rank() as f32]);
//! dist.all_reduce_mean_(&[&t])?;
//! let everyone = dist.all_gather(&t)?; // [world]
//! dist.barrier()?;
//! dist.shutdown()?;
//! # Ok(())
//! # }
//! ```

mod ffi;
mod launch;
mod sync_bn;

pub use launch::{Launch, Launcher};
pub use sync_bn::{BnParams, sync_batch_norm};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::config::DistBackend;
use crate::error::{Error, Result};
use crate::rng::KeyedRng;
use ffi::{Group, GroupSpec};

/// Largest flat buffer of one all-reduce or broadcast (bytes). ResNet-50's gradients (~100 MB in
/// fp32) go in one bucket.
const BUCKET_BYTES: i64 = 256 << 20;

/// How often a rank waiting in [`Dist::on_main`] asks the store whether rank 0 is done.
const POLL_MS: u32 = 100;

/// How to set a run up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DistOptions {
    /// The collective library. Named (`Nccl`, `Gloo`), a launched world of one builds a group of
    /// one too; `Auto` runs it as a single process.
    pub backend: DistBackend,
    /// Compute on CUDA (`cuda:LOCAL_RANK`) rather than the CPU.
    pub cuda: bool,
    /// How long a rendezvous or a collective may wait for a peer.
    pub timeout: Duration,
}

impl Default for DistOptions {
    /// Auto backend, CUDA when available, 30 minutes (PyTorch's default).
    fn default() -> Self {
        Self {
            backend: DistBackend::Auto,
            cuda: tch::Cuda::is_available(),
            timeout: Duration::from_secs(1800),
        }
    }
}

struct Inner {
    launch: Launch,
    device: Device,
    backend: Option<DistBackend>,
    group: Mutex<Option<Group>>,
    /// The group's device: `device`, or the CPU for Gloo under CUDA (collectives stage through it).
    group_device: Device,
    timeout: Duration,
    /// [`Dist::on_main`] calls so far (every rank makes them in the same order).
    on_main_calls: AtomicU64,
}

/// This process's place in a (possibly one-process) run, and the collectives over it. Cheap to
/// clone (shared).
#[derive(Clone)]
pub struct Dist {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dist")
            .field("rank", &self.rank())
            .field("world", &self.world())
            .field("device", &self.inner.device)
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

/// A `Copy` reference to a [`Dist`], for values that must stay `Copy` ([`crate::Runtime`], the BN
/// mode of a forward): it resolves while the `Dist` lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DistHandle(usize);

/// Live runs by [`DistHandle`].
static REGISTRY: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

impl DistHandle {
    /// The run it refers to, if it still lives.
    pub fn dist(self) -> Option<Dist> {
        let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.get(self.0).and_then(Weak::upgrade).map(|inner| Dist { inner })
    }
}

impl Dist {
    /// A world of one on `device`: no process group, every collective the identity.
    pub fn single(device: Device) -> Self {
        Self::from_parts(Launch::single(), device, None, None, Duration::from_secs(1800))
    }

    fn from_parts(
        launch: Launch,
        device: Device,
        backend: Option<DistBackend>,
        group: Option<Group>,
        timeout: Duration,
    ) -> Self {
        let group_device = match backend {
            Some(DistBackend::Gloo) => Device::Cpu,
            _ => device,
        };
        let inner = Inner {
            launch,
            device,
            backend,
            group: Mutex::new(group),
            group_device,
            timeout,
            on_main_calls: AtomicU64::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Reads the launcher's environment ([`Launch::from_env`]) and joins the run.
    ///
    /// # Errors
    /// As [`Launch::from_env`] and [`Dist::init`].
    pub fn from_env(opts: &DistOptions) -> Result<Self> {
        Self::init(&Launch::from_env()?, opts)
    }

    /// Joins the run `launch` describes: picks the device (`cuda:local_rank` when `opts.cuda`) and
    /// makes it current, then, for a world of more than one (or a launched world of one with a
    /// named backend), meets the other ranks and builds the process group. Blocks until every rank
    /// has arrived or `opts.timeout` has passed.
    ///
    /// # Errors
    /// [`Error::Config`] for a local rank without its GPU or a backend that does not fit the
    /// device; [`Error::Dist`] when the rendezvous fails or times out (the message names the
    /// address, the rank and the world).
    pub fn init(launch: &Launch, opts: &DistOptions) -> Result<Self> {
        let device = if opts.cuda {
            let n = tch::Cuda::device_count().max(0) as usize;
            if launch.local_rank >= n {
                return Err(Error::config(
                    "LOCAL_RANK",
                    format!(
                        "local rank {} needs GPU {}, but {n} CUDA devices are visible",
                        launch.local_rank, launch.local_rank
                    ),
                ));
            }
            ffi::cuda_set_device(launch.local_rank).map_err(|m| Error::Dist {
                rank: launch.rank,
                world: launch.world,
                op: format!("select cuda:{}", launch.local_rank),
                message: m,
            })?;
            Device::Cuda(launch.local_rank)
        } else {
            Device::Cpu
        };
        let group_of_one = launch.launcher != Launcher::Single && opts.backend != DistBackend::Auto;
        if !launch.is_distributed() && !group_of_one {
            return Ok(Self::from_parts(launch.clone(), device, None, None, opts.timeout));
        }
        let backend = match (opts.backend, device.is_cuda()) {
            (DistBackend::Auto, true) | (DistBackend::Nccl, true) => DistBackend::Nccl,
            (DistBackend::Nccl, false) => {
                return Err(Error::config("run.dist_backend", "nccl needs CUDA; use gloo or auto"));
            }
            _ => DistBackend::Gloo,
        };
        if backend == DistBackend::Nccl && !ffi::nccl_built() {
            return Err(Error::config(
                "run.dist_backend",
                "this build has no NCCL (no CUDA/NCCL headers at build time); use gloo",
            ));
        }
        let host_store = launch.rank == 0 && !launch.agent_store;
        let prefix = format!("regioncl/{}/", launch.restart);
        let spec = GroupSpec {
            host: &launch.master_addr,
            port: launch.master_port,
            host_store,
            rank: launch.rank,
            world: launch.world,
            nccl: backend == DistBackend::Nccl,
            device: launch.local_rank,
            timeout_ms: opts.timeout.as_millis().min(i64::MAX as u128) as i64,
            prefix: &prefix,
        };
        let group = Group::init(&spec).map_err(|m| Error::Dist {
            rank: launch.rank,
            world: launch.world,
            op: format!(
                "rendezvous at {}:{} ({}, {}, {:?}, timeout {}s)",
                launch.master_addr,
                launch.master_port,
                launch.launcher,
                if host_store { "store hosted here" } else { "store client" },
                backend,
                opts.timeout.as_secs_f64()
            ),
            message: m,
        })?;
        Ok(Self::from_parts(launch.clone(), device, Some(backend), Some(group), opts.timeout))
    }

    /// Global rank.
    pub fn rank(&self) -> usize {
        self.inner.launch.rank
    }

    /// Number of processes.
    pub fn world(&self) -> usize {
        self.inner.launch.world
    }

    /// Rank on this node (its GPU).
    pub fn local_rank(&self) -> usize {
        self.inner.launch.local_rank
    }

    /// Whether this is rank 0: the one that logs, writes metrics and checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Whether this process is in a process group (more than one process, or a launched group of
    /// one): its collectives are real, not the identity.
    pub fn is_distributed(&self) -> bool {
        self.inner.backend.is_some()
    }

    /// The device this rank computes on.
    pub fn device(&self) -> Device {
        self.inner.device
    }

    /// The backend of the group (None for a world of one).
    pub fn backend(&self) -> Option<DistBackend> {
        self.inner.backend
    }

    /// How it was launched.
    pub fn launch(&self) -> &Launch {
        &self.inner.launch
    }

    /// A `Copy` handle to this run (None for a world of one, which needs no collective).
    pub fn handle(&self) -> Option<DistHandle> {
        if !self.is_distributed() {
            return None;
        }
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = reg.iter().position(|w| w.as_ptr() == Arc::as_ptr(&self.inner)) {
            return Some(DistHandle(i));
        }
        reg.push(Arc::downgrade(&self.inner));
        Some(DistHandle(reg.len() - 1))
    }

    /// A short description (`rank 1/8 (torchrun/env) cuda:1 Nccl`).
    pub fn describe(&self) -> String {
        let dev = match self.device() {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        };
        match self.backend() {
            None => format!("single process, {dev}"),
            Some(b) => format!(
                "rank {}/{} ({}) {dev} {b:?}",
                self.rank(),
                self.world(),
                self.inner.launch.launcher
            ),
        }
    }

    fn err(&self, op: &str, message: String) -> Error {
        Error::Dist { rank: self.rank(), world: self.world(), op: op.to_string(), message }
    }

    /// Runs `f` on the group, or returns None for a world of one.
    fn with_group<T>(
        &self,
        op: &str,
        f: impl FnOnce(&Group) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        if !self.is_distributed() {
            return Ok(None);
        }
        let guard = self.inner.group.lock().unwrap_or_else(|e| e.into_inner());
        let group =
            guard.as_ref().ok_or_else(|| self.err(op, "the process group was shut down".into()))?;
        f(group).map(Some).map_err(|m| self.err(op, m))
    }

    /// `t` on the group's device, contiguous: `t` itself when it already is, else a copy.
    fn staged(&self, t: &Tensor) -> Tensor {
        let d = self.inner.group_device;
        if t.device() == d && t.is_contiguous() {
            t.shallow_clone()
        } else {
            t.to_device(d).contiguous()
        }
    }

    fn write_back(t: &Tensor, staged: &Tensor) {
        if staged.data_ptr() != t.data_ptr() {
            tch::no_grad(|| t.shallow_clone().copy_(staged));
        }
    }

    /// In place: `t = sum over ranks of t`.
    ///
    /// # Errors
    /// [`Error::Dist`]: a peer died, timed out, or the group was shut down.
    pub fn all_reduce_sum_(&self, t: &Tensor) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        let s = self.staged(t);
        self.with_group("all_reduce", |g| g.all_reduce_sum(&s))?;
        Self::write_back(t, &s);
        Ok(())
    }

    /// In place, for every tensor: the mean over ranks, through flat buckets of one kind and
    /// device (one all-reduce per bucket, at most 256 MiB each).
    ///
    /// # Errors
    /// As [`Dist::all_reduce_sum_`].
    pub fn all_reduce_mean_(&self, ts: &[&Tensor]) -> Result<()> {
        let world = self.world() as f64;
        self.flat("all_reduce", ts, |flat| {
            self.all_reduce_sum_(flat)?;
            tch::no_grad(|| {
                let _ = flat.shallow_clone().g_div_scalar_(world);
            });
            Ok(())
        })
    }

    /// In place: every tensor becomes rank `root`'s, through flat buckets.
    ///
    /// # Errors
    /// As [`Dist::all_reduce_sum_`].
    pub fn broadcast_(&self, ts: &[&Tensor], root: usize) -> Result<()> {
        self.flat("broadcast", ts, |flat| {
            let s = self.staged(flat);
            self.with_group("broadcast", |g| g.broadcast(&s, root))?;
            Self::write_back(flat, &s);
            Ok(())
        })
    }

    /// Packs `ts` into flat buffers (by kind and device, at most [`BUCKET_BYTES`]), runs `op` on
    /// each, and copies the results back.
    fn flat(
        &self,
        what: &str,
        ts: &[&Tensor],
        mut op: impl FnMut(&Tensor) -> Result<()>,
    ) -> Result<()> {
        if !self.is_distributed() || ts.is_empty() {
            return Ok(());
        }
        let mut order: Vec<usize> = (0..ts.len()).collect();
        // Same order on every rank: by (kind, device), then by position.
        let key = |t: &Tensor| (format!("{:?}", t.kind()), format!("{:?}", t.device()));
        order.sort_by_key(|&i| (key(ts[i]), i));
        let mut start = 0;
        while start < order.len() {
            let k = key(ts[order[start]]);
            let elt = ts[order[start]].kind().elt_size_in_bytes() as i64;
            let mut end = start;
            let mut bytes = 0;
            while end < order.len()
                && key(ts[order[end]]) == k
                && (end == start || bytes + ts[order[end]].numel() as i64 * elt <= BUCKET_BYTES)
            {
                bytes += ts[order[end]].numel() as i64 * elt;
                end += 1;
            }
            let bucket: Vec<&Tensor> = order[start..end].iter().map(|&i| ts[i]).collect();
            tch::no_grad(|| -> Result<()> {
                let flat =
                    Tensor::cat(&bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
                op(&flat)?;
                let mut offset = 0;
                for t in &bucket {
                    let n = t.numel() as i64;
                    t.shallow_clone().copy_(&flat.narrow(0, offset, n).view_as(t));
                    offset += n;
                }
                Ok(())
            })
            .map_err(|e| match e {
                Error::Dist { .. } => e,
                other => self.err(what, other.to_string()),
            })?;
            start = end;
        }
        Ok(())
    }

    /// Every rank's `x` concatenated along dim 0 in rank order, without autograd history.
    ///
    /// # Shapes
    /// `x: [n, ...]` (the same on every rank) -> `[world * n, ...]`, on `x`'s device.
    ///
    /// # Errors
    /// As [`Dist::all_reduce_sum_`].
    pub fn all_gather(&self, x: &Tensor) -> Result<Tensor> {
        if !self.is_distributed() {
            return Ok(x.detach());
        }
        let s = self.staged(x);
        let out = self.with_group("all_gather", |g| g.all_gather(&s))?.expect("distributed");
        Ok(if out.device() == x.device() { out } else { out.to_device(x.device()) })
    }

    /// As [`Dist::all_gather`], differentiable: the backward all-reduces the gradient of the
    /// gathered tensor and keeps this rank's rows, so `d(sum of every rank's loss)/dx` reaches `x`.
    /// Every rank must then run its backward (a collective).
    ///
    /// # Shapes
    /// As [`Dist::all_gather`].
    ///
    /// # Errors
    /// As [`Dist::all_reduce_sum_`]; [`Error::Unsupported`] for Gloo under CUDA (no staging
    /// through the host inside autograd).
    pub fn all_gather_autograd(&self, x: &Tensor) -> Result<Tensor> {
        if !self.is_distributed() {
            return Ok(x.shallow_clone());
        }
        if x.device() != self.inner.group_device {
            return Err(Error::Unsupported(format!(
                "differentiable all_gather of a tensor on {:?} with a group on {:?}",
                x.device(),
                self.inner.group_device
            )));
        }
        let x = x.contiguous();
        Ok(self.with_group("all_gather", |g| g.all_gather_autograd(&x))?.expect("distributed"))
    }

    /// MoCo's shuffle-BN across ranks (`_batch_shuffle_ddp` / `_batch_unshuffle_ddp`): gathers
    /// every rank's `x`, forwards this rank's slice of the global batch permuted by `perm`, gathers
    /// the outputs and restores the global order. Every output comes back for the **whole** batch
    /// (`[world * n, ...]`, rank r's samples at rows `[r n, (r + 1) n)`): this rank's rows are its
    /// own keys, all of them go into the queue. For a world of one it is the single-device
    /// shuffle (`f(x[perm])[argsort(perm)]`). No gradient flows.
    ///
    /// # Shapes
    /// `x: [n, ...]` on every rank, `perm`: a permutation of `0..world * n`, the same on every
    /// rank; `f` maps `[n, ...]` to outputs `[n, ...]`.
    ///
    /// # Errors
    /// A `perm` of the wrong length, and as [`Dist::all_gather`].
    pub fn shuffled_forward(
        &self,
        x: &Tensor,
        perm: &[i64],
        f: impl FnOnce(&Tensor) -> Vec<Tensor>,
    ) -> Result<Vec<Tensor>> {
        tch::no_grad(|| {
            let n = x.size()[0];
            let total = n * self.world() as i64;
            if perm.len() as i64 != total {
                return Err(Error::Input(format!(
                    "shuffle: permutation of {} for a global batch of {total}",
                    perm.len()
                )));
            }
            let all = self.all_gather(x)?; // [W n, ...]
            let idx = crate::shim::upload(&Tensor::from_slice(perm), x.device()); // [W n]
            let mine = idx.narrow(0, self.rank() as i64 * n, n);
            let outs = f(&all.index_select(0, &mine)); // each [n, ...]
            let inv = idx.argsort(0, false);
            outs.iter().map(|o| Ok(self.all_gather(o)?.index_select(0, &inv))).collect()
        })
    }

    /// The permutation of a global batch of `total` that every rank draws alike, keyed by
    /// `(seed, step, stream)` (no broadcast needed, and a resumed run draws the same one).
    pub fn shared_permutation(total: usize, seed: u64, step: u64, stream: u64) -> Vec<i64> {
        KeyedRng::new(&[seed, step, stream]).permutation(total)
    }

    /// Returns once every rank has called it.
    ///
    /// # Errors
    /// As [`Dist::all_reduce_sum_`].
    pub fn barrier(&self) -> Result<()> {
        self.with_group("barrier", Group::barrier).map(|_| ())
    }

    /// Mean over ranks of a few host numbers (losses to log, a stop decision every rank must
    /// share).
    ///
    /// # Errors
    /// As [`Dist::all_reduce_sum_`].
    pub fn mean_f64(&self, values: &[f64]) -> Result<Vec<f64>> {
        if !self.is_distributed() {
            return Ok(values.to_vec());
        }
        let t = Tensor::from_slice(values).to_device(self.inner.group_device);
        self.all_reduce_mean_(&[&t])?;
        Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double))
            .map_err(|e| self.err("mean", e.to_string()))
    }

    /// Ends the run in order: a barrier (no rank leaves while another still needs it), then the
    /// backend's shutdown. Later collectives are errors. A no-op for a world of one.
    ///
    /// # Errors
    /// As [`Dist::barrier`].
    pub fn shutdown(&self) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        self.barrier()?;
        let mut guard = self.inner.group.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut g) = guard.take() {
            g.shutdown().map_err(|m| self.err("shutdown", m))?;
        }
        Ok(())
    }

    /// The timeout of the rendezvous and of each collective.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Runs `f` on rank 0 alone while the other ranks wait for it **without a collective
    /// timeout**: rank 0 sets a flag in the rendezvous store when `f` is done (or failed), and the
    /// others ask the store for it every 100 ms, so `f` may take longer than
    /// [`Dist::timeout`] (the k-NN monitor on ImageNet). A waiting rank still notices a dead
    /// rank 0: the store goes away with it (or, under torchrun's agent store, the agent ends the
    /// run). Every rank calls it at the same point of the run; a world of one runs `f`.
    ///
    /// Returns `f`'s value on rank 0 and `None` on the others.
    ///
    /// # Errors
    /// `f`'s error on rank 0; on the others [`Error::Dist`] naming `what` when `f` failed on rank 0
    /// or the store could not be reached.
    pub fn on_main<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        if !self.is_distributed() {
            return f().map(Some);
        }
        let tag = format!("{}/{what}", self.inner.on_main_calls.fetch_add(1, Ordering::SeqCst));
        if self.is_main() {
            let out = f();
            self.with_group(what, |g| g.publish(&tag, out.is_ok()))?;
            return out.map(Some);
        }
        let ok = self.with_group(what, |g| g.await_flag(&tag, POLL_MS))?.expect("distributed");
        if !ok {
            return Err(self.err(what, "rank 0 failed (its log has the reason)".into()));
        }
        Ok(None)
    }

    /// Collectives this process has issued on its group (0 without one): per step, the number of
    /// points where the ranks meet.
    ///
    /// # Errors
    /// As [`Dist::all_reduce_sum_`].
    pub fn num_collectives(&self) -> Result<u64> {
        Ok(self.with_group("collectives", ffi::Group::collectives)?.unwrap_or(0))
    }

    /// [`sync_batch_norm`] on the group.
    fn sync_batch_norm(&self, x: &Tensor, bn: &BnParams<'_>) -> Result<Option<Tensor>> {
        self.with_group("sync_batch_norm", |g| g.sync_batch_norm(x, bn))
    }
}
