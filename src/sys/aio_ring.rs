//! Reaping completions from the kernel's user-space ring, without a syscall.
//!
//! The context id returned by `io_setup` is the address of a ring the kernel maps into the
//! process: a 32-byte header, then `nr` 32-byte events. The kernel writes an event, then
//! (after a write barrier) advances `tail`; the reader copies `events[head..tail)` and stores
//! the new `head`, which also gives the kernel its slots back. We check the layout once
//! (magic, no incompatible features, header length) and fall back to `io_getevents` if it
//! is not the one we know.

use std::sync::atomic::{AtomicU32, Ordering};

use super::aio::{self as abi, AioEvent, ContextId, RingHeader, AIO_RING_MAGIC};

/// A validated view of a context's completion ring.
pub(crate) struct Ring {
    header: *mut RingHeader,
    nr: u32,
}

impl Ring {
    /// Checks the ring of `ctx`; `None` if its layout is not the known one.
    ///
    /// # Safety
    ///
    /// `ctx` must come from a successful `io_setup` and not be destroyed while the `Ring` is
    /// used.
    pub(crate) unsafe fn new(ctx: ContextId) -> Option<Ring> {
        let header = ctx as *mut RingHeader;
        // SAFETY: the caller guarantees `ctx` is a live ring, whose header is mapped readable.
        let h = unsafe { header.read_volatile() };
        let known = h.magic == AIO_RING_MAGIC
            && h.incompat_features == 0
            && h.header_length as usize == std::mem::size_of::<RingHeader>()
            && h.nr > 0;
        known.then_some(Ring { header, nr: h.nr })
    }

    fn head(&self) -> &AtomicU32 {
        // SAFETY: `head` is a naturally aligned u32 in the live mapping; the kernel reads and
        // writes it too, so it is accessed atomically.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.header).head)) }
    }

    fn tail(&self) -> &AtomicU32 {
        // SAFETY: as for `head`.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.header).tail)) }
    }

    /// Appends every completion in the ring to `out` and hands the slots back to the kernel.
    /// Returns how many were reaped.
    pub(crate) fn reap(&self, out: &mut impl Extend<AioEvent>) -> usize {
        let tail = self.tail().load(Ordering::Acquire);
        let mut head = self.head().load(Ordering::Relaxed);
        if head >= self.nr || tail >= self.nr {
            return 0; // never happens with a sane kernel; io_getevents will cope
        }
        let first = self.header.wrapping_add(1) as *const AioEvent;
        let mut reaped = 0;
        out.extend(std::iter::from_fn(|| {
            if head == tail {
                return None;
            }
            // SAFETY: `head < nr`, so the event lies inside the mapped ring, and the acquire
            // load of `tail` makes the kernel's writes of events before it visible.
            let event = unsafe { first.add(head as usize).read_volatile() };
            head = (head + 1) % self.nr;
            reaped += 1;
            Some(event)
        }));
        self.head().store(head, Ordering::Release);
        reaped
    }
}

/// Reaps with the `io_getevents` syscall instead of the ring; same contract as [`Ring::reap`].
pub(crate) fn reap_with_syscall(ctx: ContextId, out: &mut impl Extend<AioEvent>) -> usize {
    let mut batch = [AioEvent::default(); 64];
    let mut total = 0;
    loop {
        let n = match abi::io_getevents_now(ctx, &mut batch) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("io_getevents failed: {e}");
                0
            }
        };
        out.extend(batch[..n].iter().copied());
        total += n;
        if n < batch.len() {
            return total;
        }
    }
}
