//! Batch memory: who allocates it, and the bounded ring it circulates in.
//!
//! The pipeline never allocates per batch. At start it asks a [`BufferAllocator`] for
//! `batches_ahead` sets of buffers (one buffer per view); a set travels from the ring to the
//! workers, to the consumer inside a [`Batch`](crate::Batch), and back to the ring when the batch
//! is dropped. The trainer supplies an allocator that hands out pinned (page-locked) host memory,
//! so its host-to-device copies can run asynchronously.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

use crate::pipeline::batch::ViewLayout;

/// Host memory that one view of one batch is written into.
///
/// Implementations must keep the memory at a fixed address for their whole life (the pipeline
/// takes the pointer once and writes through it from worker threads), and align it to at least 4
/// bytes (views may be f32).
pub trait HostBuffer: Send {
    /// The bytes.
    fn as_slice(&self) -> &[u8];
    /// The bytes, writable.
    fn as_mut_slice(&mut self) -> &mut [u8];
}

/// The error type an allocator reports.
pub type AllocError = Box<dyn std::error::Error + Send + Sync>;

/// Hands out [`HostBuffer`]s. Called `batches_ahead * views` times when a pipeline starts.
pub trait BufferAllocator: Send + Sync {
    /// A buffer of exactly `bytes` bytes.
    ///
    /// # Errors
    /// Whatever prevents the allocation (pinned memory is a limited resource).
    fn allocate(&self, bytes: usize) -> Result<Box<dyn HostBuffer>, AllocError>;
}

/// Ordinary heap memory, 64-byte aligned.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapAllocator;

impl BufferAllocator for HeapAllocator {
    fn allocate(&self, bytes: usize) -> Result<Box<dyn HostBuffer>, AllocError> {
        Ok(Box::new(AlignedBuffer::new(bytes)?))
    }
}

/// A zeroed, aligned heap buffer (64 bytes by default, any power of two with
/// [`AlignedBuffer::with_alignment`]).
#[derive(Debug)]
pub struct AlignedBuffer {
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
}

// SAFETY: the buffer owns its allocation exclusively (like a Box<[u8]>); nothing else aliases it.
unsafe impl Send for AlignedBuffer {}

impl AlignedBuffer {
    const ALIGN: usize = 64;

    /// `len` zero bytes.
    ///
    /// # Errors
    /// When the layout is invalid or the allocation fails.
    pub fn new(len: usize) -> Result<Self, AllocError> {
        Self::with_alignment(len, Self::ALIGN)
    }

    /// `len` zero bytes aligned to `align` (a power of two, e.g. 4096 for page-aligned buffers).
    ///
    /// # Errors
    /// When `align` is not a power of two, the layout overflows or the allocation fails.
    pub fn with_alignment(len: usize, align: usize) -> Result<Self, AllocError> {
        let layout = Layout::from_size_align(len.max(1), align)?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr =
            NonNull::new(raw).ok_or_else(|| format!("out of memory allocating {len} bytes"))?;
        Ok(Self { ptr, len, align })
    }
}

impl HostBuffer for AlignedBuffer {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialized (zeroed, then written) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_alignment` with exactly this layout (valid then).
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len.max(1), self.align),
            )
        }
    }
}

/// One buffer per view: the unit the ring circulates.
pub(crate) type BufferSet = Vec<Box<dyn HostBuffer>>;

/// Moves the samples of a `len`-sample buffer set that are not in `gone` (sorted) to the front,
/// keeping their order.
pub(crate) fn compact(
    set: &mut BufferSet,
    layouts: &[(ViewLayout, u32, u32)],
    len: usize,
    gone: &[usize],
) {
    for (buf, &(layout, w, h)) in set.iter_mut().zip(layouts) {
        let sample = layout.sample_bytes(w, h);
        let bytes = buf.as_mut_slice();
        let kept = (0..len).filter(|i| gone.binary_search(i).is_err());
        for (to, from) in kept.enumerate() {
            if from != to {
                bytes.copy_within(from * sample..(from + 1) * sample, to * sample);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_buffers_are_aligned_zeroed_and_writable() {
        let mut b = HeapAllocator.allocate(1000).unwrap();
        assert_eq!(b.as_slice().len(), 1000);
        assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[999] = 7;
        assert_eq!(b.as_slice()[999], 7);
        assert_eq!(HeapAllocator.allocate(0).unwrap().as_slice().len(), 0);
    }
}
