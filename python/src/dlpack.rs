//! Zero-copy handover to torch through DLPack capsules (the legacy, unversioned `"dltensor"`
//! protocol, which `torch.from_dlpack` and every other array library take).
//!
//! A capsule points at memory Rust owns: a batch's view buffer (the owner is the loader's batch,
//! whose drop sends the buffers back to the ring) or a small vector (labels, parameters). The owner
//! travels inside the `DLManagedTensor`; the consumer calls its deleter when the last tensor on the
//! memory dies, from whatever thread that happens on, which drops the owner. A capsule that is
//! never consumed drops it when the capsule is collected.

use std::ffi::{CStr, c_void};

use pyo3::ffi;
use pyo3::prelude::*;

const CAPSULE_NAME: &CStr = c"dltensor";

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// kDLCPU: host memory, pinned or not (torch finds out itself whether a pointer is pinned).
const DEVICE_CPU: DLDevice = DLDevice { device_type: 1, device_id: 0 };

/// Element types that cross as DLPack.
pub(crate) trait Element: Copy + Send + 'static {
    /// The DLPack type code (0 int, 1 uint, 2 float, 6 bool) and width.
    const DTYPE: (u8, u8);
}

impl Element for u8 {
    const DTYPE: (u8, u8) = (1, 8);
}
impl Element for f32 {
    const DTYPE: (u8, u8) = (2, 32);
}
impl Element for i32 {
    const DTYPE: (u8, u8) = (0, 32);
}
impl Element for i64 {
    const DTYPE: (u8, u8) = (0, 64);
}

/// The most dimensions an exported tensor has.
const MAX_DIMS: usize = 4;

/// What a capsule hands out: the managed tensor first (the consumer holds a pointer to it), then
/// the arrays it points to and the owner of the memory.
#[repr(C)]
struct Exported {
    managed: DLManagedTensor,
    shape: [i64; MAX_DIMS],
    strides: [i64; MAX_DIMS],
    _owner: Box<dyn Send>,
}

unsafe extern "C" fn delete_exported(managed: *mut DLManagedTensor) {
    // SAFETY: `managed` is the first field of an `Exported` leaked by `export` (repr(C), so the
    // pointers coincide); DLPack calls the deleter exactly once.
    drop(unsafe { Box::from_raw(managed.cast::<Exported>()) });
}

unsafe extern "C" fn capsule_destructor(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with a live capsule. A consumer renames the capsule it takes
    // ("used_dltensor") and becomes responsible for the deleter; only an unconsumed capsule still
    // has our name, and then its pointer is the `DLManagedTensor` that `export` stored.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, CAPSULE_NAME.as_ptr()) == 1 {
            let managed = ffi::PyCapsule_GetPointer(capsule, CAPSULE_NAME.as_ptr());
            delete_exported(managed.cast::<DLManagedTensor>());
        }
    }
}

/// A DLPack capsule over `ptr` (elements of type `T`, C-contiguous `shape`, on the host), kept
/// alive by `owner` until the consumer lets go.
///
/// # Safety
/// `ptr` must point to `shape.iter().product()` valid elements of `T` that stay valid, and are not
/// written, while `owner` lives.
pub(crate) unsafe fn export<'py, T: Element>(
    py: Python<'py>,
    ptr: *const T,
    shape: &[usize],
    owner: Box<dyn Send>,
) -> PyResult<Bound<'py, PyAny>> {
    assert!(shape.len() <= MAX_DIMS, "dlpack: {} dimensions", shape.len());
    let mut dims = [0i64; MAX_DIMS];
    let mut strides = [0i64; MAX_DIMS];
    let mut stride = 1i64;
    for (d, &n) in shape.iter().enumerate().rev() {
        dims[d] = n as i64;
        strides[d] = stride;
        stride *= n as i64;
    }
    let (code, bits) = T::DTYPE;
    let exported = Box::into_raw(Box::new(Exported {
        managed: DLManagedTensor {
            dl_tensor: DLTensor {
                data: ptr.cast_mut().cast::<c_void>(),
                device: DEVICE_CPU,
                ndim: shape.len() as i32,
                dtype: DLDataType { code, bits, lanes: 1 },
                shape: std::ptr::null_mut(),
                strides: std::ptr::null_mut(),
                byte_offset: 0,
            },
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(delete_exported),
        },
        shape: dims,
        strides,
        _owner: owner,
    }));
    // SAFETY: `exported` is a fresh, leaked box: point its tensor at its own arrays (their
    // addresses are stable until the deleter frees the box), then hand the managed tensor (the
    // first field) to a capsule whose destructor frees it unless a consumer took it.
    unsafe {
        (*exported).managed.dl_tensor.shape = (*exported).shape.as_mut_ptr();
        (*exported).managed.dl_tensor.strides = (*exported).strides.as_mut_ptr();
        (*exported).managed.manager_ctx = exported.cast::<c_void>();
        let capsule = ffi::PyCapsule_New(
            exported.cast::<c_void>(),
            CAPSULE_NAME.as_ptr(),
            Some(capsule_destructor),
        );
        if capsule.is_null() {
            delete_exported(exported.cast::<DLManagedTensor>());
        }
        Bound::from_owned_ptr_or_err(py, capsule)
    }
}

/// A capsule that owns `values` (labels, indices, parameters: small per-batch arrays).
pub(crate) fn export_vec<'py, T: Element>(
    py: Python<'py>,
    values: Vec<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    assert_eq!(shape.iter().product::<usize>(), values.len(), "dlpack: shape {shape:?}");
    let ptr = values.as_ptr();
    // SAFETY: the vector's heap buffer does not move when the vector moves into the box, and
    // nothing writes it afterwards.
    unsafe { export(py, ptr, shape, Box::new(values)) }
}
