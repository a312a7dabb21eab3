//! Where and how the step runs: the device, the autocast dtype and the memory format, resolved
//! once by [`crate::Setup`].

use tch::{Device, Kind};

use crate::config::{Precision, RunConfig};
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
    /// The runtime of a rank of `dist` on its device (`cuda:LOCAL_RANK` or the CPU): the autocast
    /// dtype and memory format `run` asks for on that device; applies the process-wide settings
    /// (cuDNN benchmark, intra-op threads).
    ///
    /// # Errors
    /// [`Error::Config`] naming `run.precision` for bf16 off CUDA.
    pub fn new(run: &RunConfig, dist: &Dist) -> Result<Self> {
        let device = dist.device();
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
            dist: dist.handle(),
        })
    }

    /// The run this process belongs to: a world of one unless [`Runtime::new`] attached a
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
