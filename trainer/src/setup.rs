//! The resolved setup of a run: what its config and the process it runs in decide — the device
//! (the one place that asks whether CUDA is there), the precision and memory format, the
//! multi-process run, this rank's share of the batch and its BN groups, the peak learning rate —
//! computed once before anything is built, as ripgrep turns its low-level arguments into
//! high-level ones, then handed to the batch sources, the method and the train loop.
//!
//! ```no_run
//! use regioncl_trainer::{Config, Setup};
//!
//! # fn main() -> regioncl_trainer::Result<()> {
//! let config = Config::load("configs/tiny_cpu.toml".as_ref(), &[])?;
//! // One process, or one rank of a `torchrun` / `srun` launch.
//! let setup = Setup::join(&config)?;
//! println!("{} on {}: {} samples per step", setup.runtime.describe(), setup.dist.describe(),
//!          setup.batch.rank_batch);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use tch::Device;

use crate::config::{BatchSplit, Config, DeviceChoice, DistBackend, RunConfig};
use crate::dist::{Dist, DistOptions};
use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// Everything a run resolves once from its config and its process.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Device, autocast dtype and memory format of the step.
    pub runtime: Runtime,
    /// This process's share of every global batch, and its BN groups.
    pub batch: BatchSplit,
    /// The learning rate at epoch 0, after the batch-size scaling rule.
    pub peak_lr: f64,
    /// The run this process is a rank of (a world of one for a single process).
    pub dist: Dist,
}

/// The device `run.device` asks for on this machine: CUDA when `auto` finds it.
///
/// # Errors
/// [`Error::Config`] naming `run.device` for `cuda` without CUDA.
fn device(run: &RunConfig) -> Result<Device> {
    let cuda = tch::Cuda::is_available();
    match run.device {
        DeviceChoice::Auto if cuda => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda if cuda => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => {
            Err(Error::config("run.device", "cuda requested but CUDA is not available"))
        }
        _ => Ok(Device::Cpu),
    }
}

impl Setup {
    /// Joins the run this process belongs to — a `torchrun` or `srun` launch from the environment
    /// ([`Dist::from_env`]: `run.dist_backend`, `run.dist_timeout_s`), or a world of one — on the
    /// device `run.device` asks for, and resolves the rest.
    ///
    /// # Errors
    /// As [`Setup::for_dist`]; [`Error::Dist`] when the rendezvous fails.
    pub fn join(config: &Config) -> Result<Self> {
        let opts = DistOptions {
            backend: config.run.dist_backend,
            cuda: device(&config.run)?.is_cuda(),
            timeout: Duration::from_secs(config.run.dist_timeout_s),
        };
        Self::for_dist(config, &Dist::from_env(&opts)?)
    }

    /// One process on the device `run.device` asks for.
    ///
    /// # Errors
    /// As [`Setup::for_dist`].
    pub fn single(config: &Config) -> Result<Self> {
        Self::for_dist(config, &Dist::single(device(&config.run)?))
    }

    /// One process on the CPU in fp32, without touching process-wide settings (what tests use).
    ///
    /// # Errors
    /// A config that does not validate.
    pub fn cpu(config: &Config) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            runtime: Runtime::cpu(),
            batch: BatchSplit::whole(config)?,
            peak_lr: config.optim.peak_lr(),
            dist: Dist::single(Device::Cpu),
        })
    }

    /// The setup of a rank of `dist`, on its device ([`Dist::device`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming the key: an invalid config, a batch or BN groups that the world
    /// does not divide ([`Config::batch_split`]), or SyncBN on CUDA over Gloo.
    pub fn for_dist(config: &Config, dist: &Dist) -> Result<Self> {
        config.validate()?;
        let batch = config.batch_split(dist.rank(), dist.world())?;
        let runtime = Runtime::new(&config.run, dist)?;
        if runtime.device.is_cuda() && batch.sync && dist.backend() == Some(DistBackend::Gloo) {
            return Err(Error::config(
                "run.dist_backend",
                "SyncBN (SimSiam, or moco.bn_splits = 1) on CUDA needs nccl (Gloo cannot gather \
                 inside autograd on the GPU)",
            ));
        }
        Ok(Self { runtime, batch, peak_lr: config.optim.peak_lr(), dist: dist.clone() })
    }
}
