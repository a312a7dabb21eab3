//! Peak memory of a stretch of work, as the device can tell it: on CUDA the caching allocator's
//! peaks (what the tensors took, and what the allocator reserved from the driver); on the CPU the
//! process's peak resident set (libtorch's CPU allocator keeps no statistics, so this counts
//! everything the process holds: libtorch itself, the model, the loader's buffers).
//!
//! ```no_run
//! use regioncl_trainer::PeakMemory;
//! use tch::Device;
//!
//! # fn main() -> regioncl_trainer::Result<()> {
//! PeakMemory::reset(Device::Cpu)?;
//! // ... a few training steps ...
//! println!("peak memory: {}", PeakMemory::since_reset(Device::Cpu)?);
//! # Ok(())
//! # }
//! ```

use std::fmt;

use tch::Device;

use crate::error::{Error, Result};

const STATUS: &str = "/proc/self/status";
const CLEAR_REFS: &str = "/proc/self/clear_refs";

/// The most memory held since the last [`PeakMemory::reset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeakMemory {
    /// A CUDA device's caching allocator.
    Device {
        /// Peak bytes allocated to tensors.
        allocated: u64,
        /// Peak bytes reserved from the driver (allocated plus the allocator's cache; what the
        /// process holds on the card besides the CUDA context).
        reserved: u64,
    },
    /// The CPU: the process's peak resident set size (Linux `VmHWM`).
    Resident {
        /// Peak resident bytes.
        bytes: u64,
    },
}

impl PeakMemory {
    /// Starts a new measurement on `device`: the peak becomes the current value.
    ///
    /// # Errors
    /// No CUDA for a CUDA device; on the CPU, a kernel without `/proc/self/clear_refs` (Linux
    /// before 4.0, or a sandbox that forbids it).
    pub fn reset(device: Device) -> Result<()> {
        match device {
            Device::Cuda(i) => crate::shim::cuda_reset_peak_memory(i),
            // "5" resets the peak RSS (VmHWM) to the current RSS (proc(5)).
            _ => std::fs::write(CLEAR_REFS, "5").map_err(|e| Error::io(CLEAR_REFS, "write", e)),
        }
    }

    /// The peak on `device` since the last [`PeakMemory::reset`] (since the process started
    /// without one).
    ///
    /// # Errors
    /// No CUDA for a CUDA device; on the CPU, an unreadable `/proc/self/status`.
    pub fn since_reset(device: Device) -> Result<Self> {
        match device {
            Device::Cuda(i) => {
                let (allocated, reserved) = crate::shim::cuda_peak_memory(i)?;
                Ok(Self::Device { allocated, reserved })
            }
            _ => {
                let status =
                    std::fs::read_to_string(STATUS).map_err(|e| Error::io(STATUS, "read", e))?;
                let kib = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .ok_or_else(|| Error::Data(format!("{STATUS}: no VmHWM line")))?;
                Ok(Self::Resident { bytes: kib * 1024 })
            }
        }
    }

    /// The headline figure: peak bytes allocated to tensors (CUDA) or resident (CPU).
    pub fn bytes(&self) -> u64 {
        match *self {
            Self::Device { allocated, .. } => allocated,
            Self::Resident { bytes } => bytes,
        }
    }

    /// What [`PeakMemory::bytes`] counts, in a few words.
    pub fn scope(&self) -> &'static str {
        match self {
            Self::Device { .. } => "device, tensors",
            Self::Resident { .. } => "process RSS",
        }
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

impl fmt::Display for PeakMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Device { allocated, reserved } => {
                write!(f, "{:.2} GiB allocated, {:.2} GiB reserved", gib(allocated), gib(reserved))
            }
            Self::Resident { bytes } => write!(f, "{:.2} GiB resident (process peak)", gib(bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_devices;
    use tch::{Kind, Tensor};

    /// A 512 MiB tensor raises the peak by about that much, on every device; a reset forgets it.
    /// (On the CPU the figure is the whole process's, with other tests allocating and freeing at
    /// the same time: the bounds leave them half the tensor.)
    #[test]
    fn peak_follows_a_large_tensor() {
        const SIZE: u64 = 512 << 20;
        for device in test_devices() {
            PeakMemory::reset(device).unwrap();
            let before = PeakMemory::since_reset(device).unwrap().bytes();
            let t = Tensor::ones([(SIZE / 4) as i64], (Kind::Float, device)); // touched: resident
            let peak = PeakMemory::since_reset(device).unwrap();
            assert!(peak.bytes() >= before + SIZE / 2, "{device:?}: {before} -> {peak}");
            drop(t);
            PeakMemory::reset(device).unwrap();
            let after = PeakMemory::since_reset(device).unwrap();
            assert!(after.bytes() < peak.bytes() - SIZE / 2, "{device:?}: {peak} -> {after}");
            assert!(!after.to_string().is_empty() && !after.scope().is_empty());
        }
    }
}
