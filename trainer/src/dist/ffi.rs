//! The C entry points of `csrc/dist_shim.cpp` and [`Group`], the owning handle of one c10d process
//! group. Every call returns the C++ exception's message as the error string.

use std::ffi::{CStr, CString, c_char, c_int};

use tch::Tensor;

use super::BnParams;

// `tch::Tensor::as_ptr` gives torch-sys's `*const C_tensor`, which is `at::Tensor*` in C++.
type CTensor = torch_sys::C_tensor;

/// `RclGroupHandle` of the shim: never dereferenced on this side.
#[repr(C)]
pub(crate) struct RawGroup {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn rcl_dist_last_error() -> *const c_char;
    fn rcl_dist_nccl_built() -> c_int;
    fn rcl_cuda_set_device(index: c_int) -> c_int;
    fn rcl_dist_init(
        host: *const c_char,
        port: c_int,
        host_store: c_int,
        rank: c_int,
        world: c_int,
        backend: c_int,
        device: c_int,
        timeout_ms: i64,
        prefix: *const c_char,
        out: *mut *mut RawGroup,
    ) -> c_int;
    fn rcl_dist_all_reduce_sum(g: *mut RawGroup, t: *const CTensor) -> c_int;
    fn rcl_dist_broadcast(g: *mut RawGroup, t: *const CTensor, root: c_int) -> c_int;
    fn rcl_dist_all_gather(g: *mut RawGroup, x: *const CTensor, out: *mut *mut CTensor) -> c_int;
    fn rcl_dist_all_gather_autograd(
        g: *mut RawGroup,
        x: *const CTensor,
        out: *mut *mut CTensor,
    ) -> c_int;
    fn rcl_dist_sync_batch_norm(
        g: *mut RawGroup,
        x: *const CTensor,
        weight: *const CTensor,
        bias: *const CTensor,
        running_mean: *const CTensor,
        running_var: *const CTensor,
        momentum: f64,
        eps: f64,
        out: *mut *mut CTensor,
    ) -> c_int;
    fn rcl_dist_collectives(g: *mut RawGroup, out: *mut u64) -> c_int;
    fn rcl_dist_publish(g: *mut RawGroup, tag: *const c_char, ok: c_int) -> c_int;
    fn rcl_dist_await(
        g: *mut RawGroup,
        tag: *const c_char,
        poll_ms: c_int,
        ok: *mut c_int,
    ) -> c_int;
    fn rcl_dist_barrier(g: *mut RawGroup) -> c_int;
    fn rcl_dist_shutdown(g: *mut RawGroup) -> c_int;
    fn rcl_dist_abort(g: *mut RawGroup) -> c_int;
    fn rcl_dist_free(g: *mut RawGroup);
}

type FfiResult<T> = std::result::Result<T, String>;

fn check(rc: c_int) -> FfiResult<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated std::string, valid
    // until the next failing call on this thread; it is copied out at once.
    Err(unsafe { CStr::from_ptr(rcl_dist_last_error()) }.to_string_lossy().into_owned())
}

fn wrap_new(rc: c_int, out: *mut CTensor) -> FfiResult<Tensor> {
    check(rc)?;
    // SAFETY: on success the shim stored a fresh `new at::Tensor`, owned from now on by the Rust
    // `Tensor`, whose Drop deletes it (tch's at_free).
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Whether the shim was compiled with ProcessGroupNCCL (CUDA and NCCL headers were found).
pub(crate) fn nccl_built() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { rcl_dist_nccl_built() != 0 }
}

/// Makes CUDA device `index` current for this process.
pub(crate) fn cuda_set_device(index: usize) -> FfiResult<()> {
    let index = c_int::try_from(index).map_err(|_| format!("device {index} out of range"))?;
    // SAFETY: a plain value; the shim checks the index against the devices present.
    check(unsafe { rcl_cuda_set_device(index) })
}

/// What [`Group::init`] needs.
#[derive(Debug)]
pub(crate) struct GroupSpec<'a> {
    pub host: &'a str,
    pub port: u16,
    pub host_store: bool,
    pub rank: usize,
    pub world: usize,
    pub nccl: bool,
    pub device: usize,
    pub timeout_ms: i64,
    pub prefix: &'a str,
}

/// One process group, freed on drop. After an error the group is aborted first (NCCL cancels
/// pending collectives), unless [`Group::shutdown`] ended it in order.
#[derive(Debug)]
pub(crate) struct Group {
    raw: *mut RawGroup,
    ended: bool,
}

// SAFETY: the handle is only a pointer to the shim's shared_ptr<RclGroup>; c10d backends accept
// calls from any thread (Gloo queues work under its own mutex, NCCL works on CUDA streams). The
// contract that every rank issues the same collectives in the same order is the caller's, as in
// PyTorch.
unsafe impl Send for Group {}
// SAFETY: as above; no method mutates Rust-side state through `&self`.
unsafe impl Sync for Group {}

fn int(v: usize, what: &str) -> FfiResult<c_int> {
    c_int::try_from(v).map_err(|_| format!("{what} {v} out of range"))
}

impl Group {
    /// Rendezvous and backend construction (blocks until every rank has joined or the timeout).
    pub(crate) fn init(spec: &GroupSpec<'_>) -> FfiResult<Self> {
        let host = CString::new(spec.host).map_err(|_| "host name contains NUL".to_string())?;
        let prefix = CString::new(spec.prefix).map_err(|_| "prefix contains NUL".to_string())?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: both strings are NUL-terminated and outlive the call; `raw` is a live, writable
        // local; the other arguments are plain values checked by the shim.
        let rc = unsafe {
            rcl_dist_init(
                host.as_ptr(),
                c_int::from(spec.port),
                c_int::from(spec.host_store),
                int(spec.rank, "rank")?,
                int(spec.world, "world")?,
                c_int::from(spec.nccl),
                int(spec.device, "device")?,
                spec.timeout_ms,
                prefix.as_ptr(),
                &mut raw,
            )
        };
        check(rc)?;
        Ok(Self { raw, ended: false })
    }

    /// In place: `t = sum over ranks of t` (contiguous, on the group's device).
    pub(crate) fn all_reduce_sum(&self, t: &Tensor) -> FfiResult<()> {
        // SAFETY: `raw` is live until drop; `t` outlives the call (the shim mutates its storage,
        // which tch allows through `&Tensor`).
        check(unsafe { rcl_dist_all_reduce_sum(self.raw, t.as_ptr()) })
    }

    /// In place: `t = t of rank root`.
    pub(crate) fn broadcast(&self, t: &Tensor, root: usize) -> FfiResult<()> {
        let root = int(root, "root")?;
        // SAFETY: as in `all_reduce_sum`.
        check(unsafe { rcl_dist_broadcast(self.raw, t.as_ptr(), root) })
    }

    /// `[n, ...]` -> `[world * n, ...]` in rank order, without autograd history.
    pub(crate) fn all_gather(&self, x: &Tensor) -> FfiResult<Tensor> {
        let mut out = std::ptr::null_mut();
        // SAFETY: `raw` is live; `x` outlives the call; `out` is a live, writable local.
        let rc = unsafe { rcl_dist_all_gather(self.raw, x.as_ptr(), &mut out) };
        wrap_new(rc, out)
    }

    /// As [`Group::all_gather`], recorded for autograd when `x` requires grad.
    pub(crate) fn all_gather_autograd(&self, x: &Tensor) -> FfiResult<Tensor> {
        let mut out = std::ptr::null_mut();
        // SAFETY: as in `all_gather`; the autograd node holds its own reference to the group.
        let rc = unsafe { rcl_dist_all_gather_autograd(self.raw, x.as_ptr(), &mut out) };
        wrap_new(rc, out)
    }

    /// SyncBN (`csrc/sync_bn.cpp`): batch norm with every rank's statistics, one all-gather now
    /// and one all-reduce in the backward; the running statistics are updated in place.
    pub(crate) fn sync_batch_norm(&self, x: &Tensor, bn: &BnParams<'_>) -> FfiResult<Tensor> {
        let opt = |t: Option<&Tensor>| t.map_or(std::ptr::null(), Tensor::as_ptr);
        let mut out = std::ptr::null_mut();
        // SAFETY: `raw` is live; every tensor pointer is null or borrowed for the call (the shim
        // updates the running statistics' storage, which tch allows through `&Tensor`); `out` is a
        // live, writable local; the autograd node holds its own reference to the group.
        let rc = unsafe {
            rcl_dist_sync_batch_norm(
                self.raw,
                x.as_ptr(),
                opt(bn.weight),
                opt(bn.bias),
                bn.running_mean.as_ptr(),
                bn.running_var.as_ptr(),
                bn.momentum,
                bn.eps,
                &mut out,
            )
        };
        wrap_new(rc, out)
    }

    /// Collectives issued on the group since it was built.
    pub(crate) fn collectives(&self) -> FfiResult<u64> {
        let mut out = 0;
        // SAFETY: `raw` is live; `out` is a live, writable local.
        check(unsafe { rcl_dist_collectives(self.raw, &mut out) })?;
        Ok(out)
    }

    /// Sets flag `tag` in the store: done (`ok`) or failed.
    pub(crate) fn publish(&self, tag: &str, ok: bool) -> FfiResult<()> {
        let tag = CString::new(tag).map_err(|_| "tag contains NUL".to_string())?;
        // SAFETY: `raw` is live; `tag` is NUL-terminated and outlives the call.
        check(unsafe { rcl_dist_publish(self.raw, tag.as_ptr(), c_int::from(ok)) })
    }

    /// Waits without a timeout until flag `tag` is set (asking the store every `poll_ms`);
    /// returns it. Fails when the store goes away.
    pub(crate) fn await_flag(&self, tag: &str, poll_ms: u32) -> FfiResult<bool> {
        let tag = CString::new(tag).map_err(|_| "tag contains NUL".to_string())?;
        let poll = c_int::try_from(poll_ms).map_err(|_| format!("poll {poll_ms} ms"))?;
        let mut ok = 0;
        // SAFETY: `raw` is live; `tag` is NUL-terminated and outlives the call; `ok` is a live,
        // writable local.
        check(unsafe { rcl_dist_await(self.raw, tag.as_ptr(), poll, &mut ok) })?;
        Ok(ok != 0)
    }

    /// Returns once every rank has called it.
    pub(crate) fn barrier(&self) -> FfiResult<()> {
        // SAFETY: `raw` is live until drop.
        check(unsafe { rcl_dist_barrier(self.raw) })
    }

    /// Orderly end of the backend; the handle stays valid until drop.
    pub(crate) fn shutdown(&mut self) -> FfiResult<()> {
        self.ended = true;
        // SAFETY: `raw` is live until drop.
        check(unsafe { rcl_dist_shutdown(self.raw) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.ended {
            // SAFETY: `raw` is live; abort only cancels the backend's pending work. Its error (a
            // backend without abort) changes nothing here.
            let _ = unsafe { rcl_dist_abort(self.raw) };
        }
        // SAFETY: `raw` came from `rcl_dist_init` and is freed exactly once.
        unsafe { rcl_dist_free(self.raw) };
    }
}
