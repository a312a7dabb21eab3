//! Safe wrappers over the C++ shim (`csrc/torch_shim.cpp`): bf16 autocast (CPU and CUDA),
//! channels_last, pinned host memory, multi-tensor SGD and EMA updates.

use std::ffi::{CStr, c_char, c_int};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

// `tch::Tensor::as_ptr` gives torch-sys's `*const C_tensor`, which is `at::Tensor*` on the C++ side.
type CTensor = torch_sys::C_tensor;

unsafe extern "C" {
    fn rcl_last_error() -> *const c_char;
    fn rcl_autocast_enter(
        device_type: c_int,
        enabled: c_int,
        dtype: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
    ) -> c_int;
    fn rcl_autocast_exit(device_type: c_int, prev_enabled: c_int, prev_dtype: c_int) -> c_int;
    fn rcl_autocast_is_enabled(device_type: c_int, out: *mut c_int) -> c_int;
    fn rcl_contiguous(t: *const CTensor, channels_last: c_int, out: *mut *mut CTensor) -> c_int;
    fn rcl_is_channels_last(t: *const CTensor, out: *mut c_int) -> c_int;
    fn rcl_empty_pinned(
        sizes: *const i64,
        ndim: c_int,
        dtype: c_int,
        out: *mut *mut CTensor,
    ) -> c_int;
    fn rcl_is_pinned(t: *const CTensor, out: *mut c_int) -> c_int;
    fn rcl_sgd_step(
        params: *const *const CTensor,
        grads: *const *const CTensor,
        bufs: *const *const CTensor,
        n: usize,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        fused: c_int,
    ) -> c_int;
    fn rcl_ema_update(
        k: *const *const CTensor,
        q: *const *const CTensor,
        n: usize,
        m: f64,
    ) -> c_int;
    fn rcl_cuda_peak_memory(index: c_int, allocated: *mut u64, reserved: *mut u64) -> c_int;
    fn rcl_cuda_reset_peak_memory(index: c_int) -> c_int;
}

fn check(op: &'static str, rc: c_int) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated std::string buffer that
    // stays valid until the next failing call on this thread; it is copied out immediately.
    let message = unsafe { CStr::from_ptr(rcl_last_error()) }.to_string_lossy().into_owned();
    Err(Error::Shim { op, message })
}

/// c10::ScalarType codes for the kinds the shim is asked about.
fn scalar_type(kind: Kind) -> Result<c_int> {
    Ok(match kind {
        Kind::Uint8 => 0,
        Kind::Int => 3,
        Kind::Int64 => 4,
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::BFloat16 => 15,
        other => return Err(Error::Unsupported(format!("scalar type {other:?} in the shim"))),
    })
}

/// The c10::DeviceType code of the devices autocast runs on.
fn autocast_device_type(device: Device) -> Result<c_int> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(Error::Unsupported(format!("autocast on {other:?}"))),
    }
}

/// An autocast region (`torch.autocast(device_type, dtype, enabled)`) on the CPU or on CUDA:
/// entered on creation, left on drop, which restores the previous state. Regions nest; the cast
/// cache is cleared when the outermost one ends. The state is per thread and per device type: a
/// CPU region does not touch CUDA's, and the other way round.
#[derive(Debug)]
pub struct AutocastGuard {
    device_type: c_int,
    prev_enabled: c_int,
    prev_dtype: c_int,
}

impl AutocastGuard {
    /// Enters autocast with `kind` (bf16 or fp16) on `device`'s type when `enabled`; with
    /// `enabled = false` it is a region with autocast switched off (for an fp32 loss head inside a
    /// bf16 step, or fp32 colour ops whatever the caller's region).
    ///
    /// # Errors
    /// A kind other than BFloat16/Half, a device other than the CPU or CUDA, or a libtorch
    /// failure.
    pub fn new(device: Device, kind: Kind, enabled: bool) -> Result<Self> {
        if !matches!(kind, Kind::BFloat16 | Kind::Half) {
            return Err(Error::Unsupported(format!("autocast to {kind:?}")));
        }
        let device_type = autocast_device_type(device)?;
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        // SAFETY: both out-pointers are live, writable locals.
        let rc = unsafe {
            rcl_autocast_enter(
                device_type,
                c_int::from(enabled),
                scalar_type(kind)?,
                &mut prev_enabled,
                &mut prev_dtype,
            )
        };
        check("autocast_enter", rc)?;
        Ok(Self { device_type, prev_enabled, prev_dtype })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: plain values; restores the state recorded on entry.
        let rc = unsafe { rcl_autocast_exit(self.device_type, self.prev_enabled, self.prev_dtype) };
        debug_assert_eq!(rc, 0, "autocast exit failed");
    }
}

/// Whether autocast is enabled for `device`'s type on this thread (false for devices autocast does
/// not run on).
pub fn autocast_enabled(device: Device) -> bool {
    let Ok(device_type) = autocast_device_type(device) else { return false };
    let mut out = 0;
    // SAFETY: `out` is a live, writable local.
    let rc = unsafe { rcl_autocast_is_enabled(device_type, &mut out) };
    rc == 0 && out != 0
}

fn wrap_new(op: &'static str, rc: c_int, out: *mut CTensor) -> Result<Tensor> {
    check(op, rc)?;
    // SAFETY: on success the shim stored a fresh `new at::Tensor`, owned from now on by the Rust
    // `Tensor`, whose Drop deletes it (tch's at_free).
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// `t.contiguous(memory_format = channels_last)` for a 4-d tensor (a no-op when it already is).
///
/// # Errors
/// A libtorch failure (e.g. a tensor that is not 4-d).
pub fn to_channels_last(t: &Tensor) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `t` outlives the call; `out` is a live, writable local.
    let rc = unsafe { rcl_contiguous(t.as_ptr(), 1, &mut out) };
    wrap_new("contiguous(channels_last)", rc, out)
}

/// Whether `t` is laid out channels_last (NHWC strides).
pub fn is_channels_last(t: &Tensor) -> bool {
    let mut out = 0;
    // SAFETY: `t` outlives the call; `out` is a live, writable local.
    let rc = unsafe { rcl_is_channels_last(t.as_ptr(), &mut out) };
    rc == 0 && out != 0
}

/// An uninitialised tensor in pinned (page-locked) host memory from libtorch's caching host
/// allocator, for buffers that are copied to the GPU asynchronously. The loader can fill it through
/// `data_ptr()` (contiguous, `numel * elt_size` bytes).
///
/// # Errors
/// No CUDA in this process (pinning needs the CUDA runtime), or an unsupported kind.
pub fn empty_pinned(sizes: &[i64], kind: Kind) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    let ndim = c_int::try_from(sizes.len()).map_err(|_| Error::Input("too many dims".into()))?;
    // SAFETY: `sizes` is readable for `ndim` values; `out` is a live, writable local.
    let rc = unsafe { rcl_empty_pinned(sizes.as_ptr(), ndim, scalar_type(kind)?, &mut out) };
    wrap_new("empty_pinned", rc, out)
}

/// Whether `t` lives in pinned host memory.
pub fn is_pinned(t: &Tensor) -> bool {
    let mut out = 0;
    // SAFETY: `t` outlives the call; `out` is a live, writable local.
    let rc = unsafe { rcl_is_pinned(t.as_ptr(), &mut out) };
    rc == 0 && out != 0
}

fn ptrs(ts: &[&Tensor]) -> Vec<*const CTensor> {
    ts.iter().map(|t| t.as_ptr()).collect()
}

/// One SGD step over all `params` at once: `v = momentum * v + (g + wd * w)`, `w -= lr * v`.
/// `fused` uses libtorch's fused multi-tensor kernel (`_fused_sgd_`, CUDA); otherwise `_foreach`
/// ops (any device). Buffers must start at zero.
///
/// # Errors
/// Mismatched list lengths, or a libtorch failure (shapes, devices).
pub fn sgd_step(
    params: &[&Tensor],
    grads: &[&Tensor],
    bufs: &[&Tensor],
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    fused: bool,
) -> Result<()> {
    if params.len() != grads.len() || params.len() != bufs.len() {
        return Err(Error::Input("sgd_step: list lengths differ".into()));
    }
    let (p, g, v) = (ptrs(params), ptrs(grads), ptrs(bufs));
    // SAFETY: the three arrays hold `len` pointers to live tensors borrowed for the call; the shim
    // only reads the pointers (it mutates the tensors' storage, which tch allows through `&Tensor`).
    let rc = unsafe {
        rcl_sgd_step(
            p.as_ptr(),
            g.as_ptr(),
            v.as_ptr(),
            p.len(),
            lr,
            momentum,
            weight_decay,
            c_int::from(fused),
        )
    };
    check("sgd_step", rc)
}

/// Momentum update over all pairs at once: `k = k * m + q * (1 - m)`.
///
/// # Errors
/// Mismatched lengths, or a libtorch failure.
pub fn ema_update(k: &[&Tensor], q: &[&Tensor], m: f64) -> Result<()> {
    if k.len() != q.len() {
        return Err(Error::Input("ema_update: list lengths differ".into()));
    }
    let (kp, qp) = (ptrs(k), ptrs(q));
    // SAFETY: both arrays hold `len` pointers to live tensors borrowed for the call.
    let rc = unsafe { rcl_ema_update(kp.as_ptr(), qp.as_ptr(), kp.len(), m) };
    check("ema_update", rc)
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

fn cuda_index(index: usize) -> Result<c_int> {
    c_int::try_from(index).map_err(|_| Error::Input(format!("CUDA device {index}")))
}

/// The CUDA caching allocator's peaks on device `index` since the last
/// [`cuda_reset_peak_memory`]: `(bytes allocated to tensors, bytes reserved from the driver)`.
///
/// # Errors
/// No CUDA in this process, or a bad index.
pub(crate) fn cuda_peak_memory(index: usize) -> Result<(u64, u64)> {
    let (mut allocated, mut reserved) = (0, 0);
    // SAFETY: both out-pointers are live, writable locals.
    let rc = unsafe { rcl_cuda_peak_memory(cuda_index(index)?, &mut allocated, &mut reserved) };
    check("cuda_peak_memory", rc)?;
    Ok((allocated, reserved))
}

/// Resets the peaks of [`cuda_peak_memory`] to the current values.
///
/// # Errors
/// As [`cuda_peak_memory`].
pub(crate) fn cuda_reset_peak_memory(index: usize) -> Result<()> {
    // SAFETY: a plain value; the allocator checks the index.
    check("cuda_reset_peak_memory", unsafe { rcl_cuda_reset_peak_memory(cuda_index(index)?) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_devices;

    #[test]
    fn channels_last_round_trip() {
        for device in test_devices() {
            let x = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, device)).reshape([2, 3, 4, 5]);
            assert!(!is_channels_last(&x));
            let y = to_channels_last(&x).unwrap();
            assert!(is_channels_last(&y));
            assert_eq!(y.stride(), vec![60, 1, 15, 3]);
            assert!(y.equal(&x));
        }
    }

    /// On the CPU as on CUDA: a region casts matmuls to bf16, a disabled region inside it
    /// restores fp32, and the regions of one device type leave the other's alone.
    #[test]
    fn autocast_guard_nests_and_restores() {
        for device in test_devices() {
            assert!(!autocast_enabled(device));
            {
                let _on = AutocastGuard::new(device, Kind::BFloat16, true).unwrap();
                assert!(autocast_enabled(device));
                let other = if device.is_cuda() { Device::Cpu } else { Device::Cuda(0) };
                assert!(!autocast_enabled(other), "{device:?} region leaks into {other:?}");
                let a = Tensor::ones([4, 4], (Kind::Float, device));
                assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
                {
                    let _off = AutocastGuard::new(device, Kind::BFloat16, false).unwrap();
                    assert!(!autocast_enabled(device));
                    assert_eq!(a.matmul(&a).kind(), Kind::Float);
                }
                assert!(autocast_enabled(device));
            }
            assert!(!autocast_enabled(device));
        }
        assert!(AutocastGuard::new(Device::Mps, Kind::BFloat16, true).is_err());
        assert!(AutocastGuard::new(Device::Cpu, Kind::Float, true).is_err());
    }

    /// `_foreach` on every device, and `_fused_sgd_` on CUDA.
    #[test]
    fn sgd_matches_formula() {
        for (device, fused) in
            test_devices().into_iter().flat_map(|d| [(d, false), (d, d.is_cuda())])
        {
            tch::manual_seed(3);
            let w = Tensor::randn([5, 3], (Kind::Float, device));
            let g = Tensor::randn([5, 3], (Kind::Float, device));
            let v = Tensor::randn([5, 3], (Kind::Float, device));
            let (lr, mu, wd) = (0.1, 0.9, 1e-2);
            let v_ref = &v * mu + (&g + &w * wd);
            let w_ref = &w - &v_ref * lr;
            sgd_step(&[&w], &[&g], &[&v], lr, mu, wd, fused).unwrap();
            assert!(v.allclose(&v_ref, 1e-6, 1e-7, false), "{device:?} fused {fused}");
            assert!(w.allclose(&w_ref, 1e-6, 1e-7, false), "{device:?} fused {fused}");
        }
    }

    #[test]
    fn ema_matches_formula() {
        for device in test_devices() {
            tch::manual_seed(4);
            let k = Tensor::randn([6], (Kind::Float, device));
            let q = Tensor::randn([6], (Kind::Float, device));
            let expect = &k * 0.99 + &q * 0.01;
            ema_update(&[&k], &[&q], 0.99).unwrap();
            assert!(k.allclose(&expect, 1e-6, 1e-7, false), "{device:?}");
        }
    }

    #[test]
    fn pinned_memory_needs_cuda() {
        let r = empty_pinned(&[2, 4, 4, 3], Kind::Uint8);
        if tch::Cuda::is_available() {
            assert!(is_pinned(&r.unwrap()));
        } else {
            assert!(r.is_err());
        }
    }
}
