//! The batch buffers of a Python loader: page-aligned heap memory, or pinned host memory that
//! torch allocates (its CUDA runtime, imported at run time, never linked) for non-blocking uploads.
//! Either way the buffers are allocated once, when the pipeline starts, and their addresses are
//! recorded so Python can check that a batch's tensors are the loader's own memory.

use std::ptr::NonNull;
use std::sync::Mutex;

use pyo3::prelude::*;
use regioncl_loader::{AlignedBuffer, AllocError, BufferAllocator, HostBuffer};

/// Page size the heap buffers are aligned to.
const PAGE: usize = 4096;

/// A torch tensor's storage (`torch.empty(n, dtype=torch.uint8, pin_memory=True)`), kept alive by
/// a reference to the tensor.
struct TorchBuffer {
    _tensor: Py<PyAny>,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the tensor is referenced only to keep its storage alive (dropping a `Py` without the
// GIL defers the decref to pyo3's pool); the storage is used by this buffer alone.
unsafe impl Send for TorchBuffer {}

impl HostBuffer for TorchBuffer {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is the data pointer of a contiguous uint8 tensor of `len` elements that
        // `_tensor` keeps alive; its storage never moves.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// Hands out page-aligned [`AlignedBuffer`]s, or tensors from `pinned` (a Python callable `n -> uint8 tensor`),
/// and remembers where they are.
pub(crate) struct Allocator {
    pinned: Option<Py<PyAny>>,
    handed: Mutex<Vec<(usize, usize)>>,
}

impl Allocator {
    pub(crate) fn new(pinned: Option<Py<PyAny>>) -> Self {
        Self { pinned, handed: Mutex::new(Vec::new()) }
    }

    /// `(address, length)` of every buffer handed out.
    pub(crate) fn buffers(&self) -> Vec<(usize, usize)> {
        self.handed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn torch(factory: &Py<PyAny>, bytes: usize) -> PyResult<TorchBuffer> {
        Python::attach(|py| {
            let tensor = factory.call1(py, (bytes,))?;
            let addr: usize = tensor.call_method0(py, "data_ptr")?.extract(py)?;
            let numel: usize = tensor.call_method0(py, "numel")?.extract(py)?;
            let contiguous: bool = tensor.call_method0(py, "is_contiguous")?.extract(py)?;
            if numel != bytes || !contiguous || (bytes > 0 && addr == 0) {
                let msg = format!("pinned allocator: {numel} elements at {addr:#x} for {bytes}");
                return Err(pyo3::exceptions::PyValueError::new_err(msg));
            }
            let ptr = NonNull::new(addr as *mut u8).unwrap_or(NonNull::dangling());
            Ok(TorchBuffer { _tensor: tensor, ptr, len: bytes })
        })
    }
}

impl BufferAllocator for Allocator {
    fn allocate(&self, bytes: usize) -> Result<Box<dyn HostBuffer>, AllocError> {
        let buffer: Box<dyn HostBuffer> = match &self.pinned {
            None => Box::new(AlignedBuffer::with_alignment(bytes, PAGE)?),
            Some(factory) => Box::new(Self::torch(factory, bytes).map_err(|e| e.to_string())?),
        };
        let addr = buffer.as_slice().as_ptr() as usize;
        self.handed.lock().unwrap_or_else(|e| e.into_inner()).push((addr, bytes));
        Ok(buffer)
    }
}
