//! Where and how the step runs: the device, the autocast dtype and the memory format, resolved
//! once by [`crate::Setup`].

use tch::{Device, Kind};

use crate::config::{Precision, RunConfig};
use crate::dist::{Dist, DistHandle};
use crate::error::Result;

/// Where and how the step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// The device of the encoders and of the batch after its host-to-device copy.
    pub device: Device,
    /// The autocast dtype (`BFloat16`: `run.precision = "bf16"`, or `auto` on CUDA), or `None` for
    /// fp32.
    pub autocast: Option<Kind>,
    /// channels_last activations and conv weights (on the CPU as on CUDA).
    pub channels_last: bool,
    /// The multi-process run this process is a rank of (None: one process); see [`Runtime::dist`].
    pub dist: Option<DistHandle>,
}

impl Runtime {
    /// The runtime of a rank of `dist` on its device (`cuda:LOCAL_RANK` or the CPU): the autocast
    /// dtype and memory format `run` asks for on that device; applies the process-wide settings
    /// (cuDNN benchmark, intra-op threads). `precision = "auto"` is bf16 on CUDA and fp32 on the
    /// CPU; `"bf16"` is bf16 autocast on either (libtorch's CPU autocast: convolutions and matmuls
    /// in bf16, BN and reductions as their inputs), so the reduced-precision path runs in tests
    /// without a GPU. `channels_last` applies on either too.
    ///
    /// # Errors
    /// None today; kept fallible for settings that a device may refuse.
    pub fn new(run: &RunConfig, dist: &Dist) -> Result<Self> {
        let device = dist.device();
        let autocast = match (run.precision, device.is_cuda()) {
            (Precision::Auto, true) | (Precision::Bf16, _) => Some(Kind::BFloat16),
            _ => None,
        };
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(run.cudnn_benchmark);
        }
        if run.threads > 0 {
            tch::set_num_threads(run.threads as i32);
        }
        Ok(Self { device, autocast, channels_last: run.channels_last, dist: dist.handle() })
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

    /// bf16 autocast with channels_last tensors on `device`: the reduced-precision runtime.
    pub fn bf16_channels_last(device: Device) -> Self {
        Self { device, autocast: Some(Kind::BFloat16), channels_last: true, dist: None }
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

/// The devices a device-parametrised test runs on: the CPU, and `cuda:0` when CUDA is available
/// (so the same `cargo test` covers the CUDA path on a GPU machine).
#[cfg(test)]
pub(crate) fn test_devices() -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(Device::Cuda(0));
    }
    devices
}

/// The runtimes of a device-parametrised test: fp32 NCHW and bf16 channels_last on each of
/// [`test_devices`].
#[cfg(test)]
pub(crate) fn test_runtimes() -> Vec<Runtime> {
    test_devices()
        .into_iter()
        .flat_map(|device| {
            [Runtime { device, ..Runtime::cpu() }, Runtime::bf16_channels_last(device)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bf16 and channels_last apply on the CPU as on CUDA; `auto` precision is fp32 on the CPU.
    #[test]
    fn bf16_and_channels_last_resolve_on_the_cpu() {
        let mut run = RunConfig {
            precision: Precision::Bf16,
            channels_last: true,
            threads: 0, // no process-wide change from a test
            ..RunConfig::default()
        };
        let cpu = Dist::single(Device::Cpu);
        let rt = Runtime::new(&run, &cpu).unwrap();
        assert_eq!(rt, Runtime::bf16_channels_last(Device::Cpu));
        assert_eq!(rt.describe(), "cpu bf16 channels_last");
        run.precision = Precision::Auto;
        run.channels_last = false;
        assert_eq!(Runtime::new(&run, &cpu).unwrap(), Runtime::cpu());
    }
}
