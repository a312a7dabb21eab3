//! Device, precision and memory-format choices, resolved once from the config.

use tch::{Device, Kind, Tensor};

use crate::config::{DeviceChoice, Precision, RunConfig};
use crate::dist::{Dist, DistHandle};
use crate::error::{Error, Result};

/// Where and how the step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// The device of the encoders and of the batch after its host-to-device copy.
    pub device: Device,
    /// The autocast dtype (`BFloat16` on CUDA), or `None` for fp32.
    pub autocast: Option<Kind>,
    /// channels_last activations and conv weights.
    pub channels_last: bool,
    /// The multi-process run this process is a rank of (None: one process); see [`Runtime::dist`].
    pub dist: Option<DistHandle>,
}

impl Runtime {
    /// Resolves `auto` choices and applies process-wide settings (cuDNN benchmark, CPU threads).
    ///
    /// # Errors
    /// [`Error::Config`] for `cuda` without CUDA, or bf16 off CUDA.
    pub fn resolve(run: &RunConfig) -> Result<Self> {
        let cuda = tch::Cuda::is_available();
        let device = match run.device {
            DeviceChoice::Auto if cuda => Device::Cuda(0),
            DeviceChoice::Auto | DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Cuda if cuda => Device::Cuda(0),
            DeviceChoice::Cuda => {
                return Err(Error::config(
                    "run.device",
                    "cuda requested but CUDA is not available",
                ));
            }
        };
        let autocast = match (run.precision, device.is_cuda()) {
            (Precision::Auto, true) | (Precision::Bf16, true) => Some(Kind::BFloat16),
            (Precision::Bf16, false) => {
                return Err(Error::config(
                    "run.precision",
                    "bf16 runs on CUDA only; use fp32 or auto",
                ));
            }
            _ => None,
        };
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(run.cudnn_benchmark);
        }
        if run.threads > 0 {
            tch::set_num_threads(run.threads as i32);
        }
        Ok(Self {
            device,
            autocast,
            channels_last: run.channels_last && device.is_cuda(),
            dist: None,
        })
    }

    /// [`Runtime::resolve`] for a rank of `dist`: on its GPU (`cuda:LOCAL_RANK`) when the run is on
    /// CUDA, with the run attached for the methods' collectives.
    ///
    /// # Errors
    /// As [`Runtime::resolve`].
    pub fn resolve_for(run: &RunConfig, dist: &Dist) -> Result<Self> {
        let mut rt = Self::resolve(run)?;
        if rt.device.is_cuda() {
            rt.device = Device::Cuda(dist.local_rank());
        }
        rt.dist = dist.handle();
        Ok(rt)
    }

    /// The run this process belongs to: a world of one unless [`Runtime::resolve_for`] attached a
    /// multi-process run.
    pub fn dist(&self) -> Dist {
        self.dist.and_then(DistHandle::dist).unwrap_or_else(|| Dist::single(self.device))
    }

    /// fp32 on the CPU, NCHW: what tests use.
    pub fn cpu() -> Self {
        Self { device: Device::Cpu, autocast: None, channels_last: false, dist: None }
    }

    /// A short description (`cuda:0 bf16 channels_last`).
    pub fn describe(&self) -> String {
        let dev = match self.device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".to_string(),
        };
        let prec = if self.autocast.is_some() { "bf16" } else { "fp32" };
        let fmt = if self.channels_last { " channels_last" } else { "" };
        format!("{dev} {prec}{fmt}")
    }
}

/// Copies a small host tensor (indices, factors, kernels) to `device` without a stream sync:
/// a non-blocking copy from pageable memory is staged by the driver before the call returns, so the
/// host data may go away at once, and the CPU does not wait for queued GPU work (a blocking copy
/// would synchronise the stream at every upload). A no-op on the CPU.
pub(crate) fn upload(t: &Tensor, device: Device) -> Tensor {
    if device == Device::Cpu {
        return t.shallow_clone();
    }
    t.to_device_(device, t.kind(), true, false)
}
