//! Pinned host memory for the loader's batch buffers, so host-to-device copies are asynchronous.

use regioncl_loader::{AlignedBuffer, AllocError, BufferAllocator, HostBuffer};
use tch::{Kind, Tensor};

/// A view buffer in pinned host memory (a libtorch tensor from the caching host allocator).
struct PinnedBuffer {
    tensor: Tensor,
    len: usize,
}

impl HostBuffer for PinnedBuffer {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `tensor` is a contiguous u8 CPU tensor of `len` elements owned by this buffer; its
        // storage never moves or shrinks while the buffer lives.
        unsafe { std::slice::from_raw_parts(self.tensor.data_ptr() as *const u8, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only view of the bytes.
        unsafe { std::slice::from_raw_parts_mut(self.tensor.data_ptr() as *mut u8, self.len) }
    }
}

/// Hands the loader pinned host buffers when CUDA is available, 64-byte aligned heap buffers
/// otherwise.
#[derive(Clone, Copy, Debug, Default)]
pub struct PinnedAllocator;

impl BufferAllocator for PinnedAllocator {
    fn allocate(&self, bytes: usize) -> std::result::Result<Box<dyn HostBuffer>, AllocError> {
        if tch::Cuda::is_available() {
            let tensor = crate::shim::empty_pinned(&[bytes as i64], Kind::Uint8)?;
            return Ok(Box::new(PinnedBuffer { tensor, len: bytes }));
        }
        Ok(Box::new(AlignedBuffer::new(bytes)?))
    }
}
