//! Buffers the kernel reads from or writes into while a request is in flight.
//!
//! The one module besides `sys` allowed `unsafe`: the buffer contract is itself an unsafe
//! trait, and `AlignedBuf` is raw aligned memory.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A buffer whose bytes the kernel may **read** (for writes) while the loop owns it.
///
/// # Safety
///
/// `io_ptr` must point to `io_len` initialised bytes that stay valid, and at the same address,
/// for as long as the value lives, **even if the value itself is moved** (the loop moves the
/// buffer into its request table while the kernel works on it). Heap-backed buffers such as
/// `Vec<u8>`, `Box<[u8]>` and [`AlignedBuf`] qualify; arrays stored inline do not.
pub unsafe trait IoBuf: 'static {
    /// Start of the bytes.
    fn io_ptr(&self) -> *const u8;
    /// Number of bytes.
    fn io_len(&self) -> usize;
}

/// A buffer the kernel may **write** (for reads) while the loop owns it.
///
/// # Safety
///
/// As for [`IoBuf`]; in addition `io_mut_ptr` must allow writes to all `io_len` bytes.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the writable bytes.
    fn io_mut_ptr(&mut self) -> *mut u8;
}

// SAFETY: a Vec's bytes live on the heap and do not move when the Vec does.
unsafe impl IoBuf for Vec<u8> {
    fn io_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn io_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `IoBuf`; `as_mut_ptr` covers the `len` initialised bytes.
unsafe impl IoBufMut for Vec<u8> {
    fn io_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
}

// SAFETY: a boxed slice lives on the heap and does not move when the box does.
unsafe impl IoBuf for Box<[u8]> {
    fn io_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn io_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `IoBuf`.
unsafe impl IoBufMut for Box<[u8]> {
    fn io_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
}

/// A zeroed heap buffer whose start is aligned, for `O_DIRECT` I/O.
///
/// ```
/// use aioloop::AlignedBuf;
///
/// let mut buf = AlignedBuf::new(8192, 4096)?;
/// assert_eq!(buf.as_ptr() as usize % 4096, 0);
/// buf[0] = 7;
/// assert_eq!(buf.len(), 8192);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// The length at allocation: all of it initialised.
    capacity: usize,
    /// The alignment of `ptr`.
    align: usize,
    /// What was allocated, `offset` bytes before `ptr`: at least one byte, so a zero-length
    /// buffer is still a valid one.
    layout: Layout,
    offset: usize,
}

// SAFETY: AlignedBuf uniquely owns its allocation, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads, like &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes starting at a multiple of `align` (a power of two).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `InvalidInput` if `align` is not a power of two or the size overflows; `OutOfMemory`
    /// if the allocation fails.
    pub fn new(len: usize, align: usize) -> io::Result<AlignedBuf> {
        let layout = Layout::from_size_align(len.max(1), align).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot allocate {len} bytes aligned to {align}: the alignment must be a power of two"),
            )
        })?;
        let no_memory = || {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} aligned bytes"),
            )
        };
        // The allocator zeroes memory aligned beyond 16 bytes by writing every byte, touching
        // every page; a large buffer asks for bytes instead (calloc: fresh pages, already zero,
        // untouched until used) and aligns itself within them.
        let layout = if layout.size() >= 1 << 20 {
            Layout::from_size_align(layout.size() + align - 1, 1).map_err(|_| no_memory())?
        } else {
            layout
        };
        // SAFETY: the layout has a non-zero size.
        let base = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }).ok_or_else(no_memory)?;
        let offset = (base.as_ptr() as usize).wrapping_neg() & (align - 1);
        // SAFETY: `offset` < `align`, and `len` bytes from there are within the allocation.
        let ptr = unsafe { NonNull::new_unchecked(base.as_ptr().add(offset)) };
        Ok(AlignedBuf {
            ptr,
            len,
            capacity: len,
            align,
            layout,
            offset,
        })
    }

    /// The alignment of its start.
    pub fn align(&self) -> usize {
        self.align
    }

    /// The most bytes it can hold: its length at allocation.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Makes the buffer `len` bytes long, within its capacity, so that one allocation serves
    /// requests of several sizes (a read is as long as its buffer). The bytes it gains keep
    /// whatever they held.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `InvalidInput` if `len` exceeds [`capacity`](Self::capacity).
    pub fn set_len(&mut self, len: usize) -> io::Result<()> {
        if len > self.capacity() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "set_len({len}) beyond the buffer's capacity of {}",
                    self.capacity()
                ),
            ));
        }
        self.len = len;
        Ok(())
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` owns at least `len` initialised (zeroed at allocation) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout, `offset` bytes before `ptr`.
        unsafe { alloc::dealloc(self.ptr.as_ptr().sub(self.offset), self.layout) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AlignedBuf({} bytes, align {})",
            self.len(),
            self.align()
        )
    }
}

// SAFETY: the allocation is on the heap and never moves while the AlignedBuf lives.
unsafe impl IoBuf for AlignedBuf {
    fn io_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn io_len(&self) -> usize {
        self.len
    }
}

// SAFETY: as for `IoBuf`; the bytes are uniquely owned and writable.
unsafe impl IoBufMut for AlignedBuf {
    fn io_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned_zeroed_and_refuses_bad_alignment() {
        for align in [512, 4096, 65536] {
            let buf = AlignedBuf::new(3 * align, align).unwrap();
            assert_eq!(buf.io_ptr() as usize % align, 0);
            assert!(buf.iter().all(|&b| b == 0));
        }
        assert_eq!(AlignedBuf::new(0, 512).unwrap().len(), 0);
        assert!(AlignedBuf::new(0, 512).unwrap().set_len(1).is_err());
        let mut buf = AlignedBuf::new(8192, 4096).unwrap();
        buf.set_len(100).unwrap();
        assert_eq!((buf.len(), buf.io_len(), buf.capacity()), (100, 100, 8192));
        buf.set_len(8192).unwrap();
        assert!(buf.set_len(8193).is_err());
        let err = AlignedBuf::new(4096, 3000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
