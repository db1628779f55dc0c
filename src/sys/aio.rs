//! The kernel AIO ABI (`include/uapi/linux/aio_abi.h`, `fs/aio.c`) and its five syscalls.
//!
//! Nothing here is in `libc`: the structs are declared `#[repr(C)]` to match the kernel's
//! layout exactly (pinned by the size and offset tests below), and the syscalls are made
//! through `libc::syscall`.

use std::io;

use super::check;

/// `aio_context_t`: the user address of the context's completion ring.
pub(crate) type ContextId = libc::c_ulong;

pub(crate) const IOCB_CMD_PREAD: u16 = 0;
pub(crate) const IOCB_CMD_PWRITE: u16 = 1;
pub(crate) const IOCB_CMD_FSYNC: u16 = 2;
pub(crate) const IOCB_CMD_FDSYNC: u16 = 3;
pub(crate) const IOCB_CMD_PREADV: u16 = 7;
pub(crate) const IOCB_CMD_PWRITEV: u16 = 8;

/// Signal `aio_resfd` (an eventfd) when the request completes.
pub(crate) const IOCB_FLAG_RESFD: u32 = 1;

/// `struct iocb`, 64 bytes. `aio_key` and `aio_rw_flags` share a 64-bit slot whose halves
/// swap with endianness.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Iocb {
    pub(crate) aio_data: u64,
    #[cfg(target_endian = "little")]
    pub(crate) aio_key: u32,
    pub(crate) aio_rw_flags: i32,
    #[cfg(target_endian = "big")]
    pub(crate) aio_key: u32,
    pub(crate) aio_lio_opcode: u16,
    pub(crate) aio_reqprio: i16,
    pub(crate) aio_fildes: u32,
    pub(crate) aio_buf: u64,
    pub(crate) aio_nbytes: u64,
    pub(crate) aio_offset: i64,
    pub(crate) aio_reserved2: u64,
    pub(crate) aio_flags: u32,
    pub(crate) aio_resfd: u32,
}

/// `struct io_event`, 32 bytes: one completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AioEvent {
    /// The submitted iocb's `aio_data`.
    pub(crate) data: u64,
    /// The user address of the iocb (not used: addresses are not identities).
    pub(crate) obj: u64,
    /// Bytes transferred, or a negative errno.
    pub(crate) res: i64,
    pub(crate) res2: i64,
}

/// `struct aio_ring` (private to `fs/aio.c`, stable since 2.6): the header of the completion
/// ring mapped at the context's address, followed by `nr` `AioEvent`s.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RingHeader {
    pub(crate) id: u32,
    pub(crate) nr: u32,
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) magic: u32,
    pub(crate) compat_features: u32,
    pub(crate) incompat_features: u32,
    pub(crate) header_length: u32,
}

pub(crate) const AIO_RING_MAGIC: u32 = 0xa10a_10a1;

/// `io_setup(2)`: a context able to hold `nr_events` requests.
pub(crate) fn io_setup(nr_events: u32) -> io::Result<ContextId> {
    let mut ctx: ContextId = 0;
    // SAFETY: `ctx` is a zeroed aio_context_t that outlives the call, as io_setup requires.
    check(unsafe { libc::syscall(libc::SYS_io_setup, nr_events, &mut ctx) })?;
    Ok(ctx)
}

/// `io_destroy(2)`: cancels what it can and **waits for every request in flight**; the ring
/// is unmapped afterwards.
pub(crate) fn io_destroy(ctx: ContextId) -> io::Result<()> {
    // SAFETY: `ctx` came from io_setup and is destroyed once by its owner.
    check(unsafe { libc::syscall(libc::SYS_io_destroy, ctx) })?;
    Ok(())
}

/// `io_submit(2)`: queues the iocbs in order; returns how many were queued, or the error of the
/// first one if none was.
///
/// # Safety
///
/// Every pointer must point to a valid `Iocb` for the duration of the call, and each iocb's
/// buffers (and iovec arrays) must stay valid until its completion is reaped or the context is
/// destroyed.
pub(crate) unsafe fn io_submit(ctx: ContextId, iocbs: &mut [*mut Iocb]) -> io::Result<usize> {
    let nr = iocbs.len() as libc::c_long;
    // SAFETY: the caller upholds the pointer and buffer contracts above.
    let n = check(unsafe { libc::syscall(libc::SYS_io_submit, ctx, nr, iocbs.as_mut_ptr()) })?;
    Ok(n as usize)
}

/// Runs a read, write or sync iocb synchronously, with `preadv2`/`pwritev2` and `flags`
/// (`RWF_*`), or `fsync`/`fdatasync`, on the calling thread (a helper's, or the loop's with
/// `RWF_NOWAIT`); returns what its completion's `res` would have been: bytes transferred (0
/// for a sync), or a negative errno.
///
/// # Safety
///
/// The iocb's buffer (or iovec array and the buffers it names) must be valid for the whole
/// call, writable for a read.
pub(crate) unsafe fn run_sync(iocb: &Iocb, flags: libc::c_int) -> i64 {
    let single = libc::iovec {
        iov_base: iocb.aio_buf as *mut libc::c_void,
        iov_len: iocb.aio_nbytes as usize,
    };
    let (iov, count) = match iocb.aio_lio_opcode {
        IOCB_CMD_PREADV | IOCB_CMD_PWRITEV => (
            iocb.aio_buf as *const libc::iovec,
            iocb.aio_nbytes as libc::c_int,
        ),
        _ => (&single as *const libc::iovec, 1),
    };
    let fd = iocb.aio_fildes as libc::c_int;
    loop {
        // SAFETY: the caller guarantees the buffers; `single` lives across the call.
        let n = unsafe {
            match iocb.aio_lio_opcode {
                IOCB_CMD_PREAD | IOCB_CMD_PREADV => {
                    libc::preadv2(fd, iov, count, iocb.aio_offset, flags)
                }
                IOCB_CMD_FSYNC => libc::fsync(fd) as isize,
                IOCB_CMD_FDSYNC => libc::fdatasync(fd) as isize,
                _ => libc::pwritev2(fd, iov, count, iocb.aio_offset, flags),
            }
        };
        if n >= 0 {
            return n as i64;
        }
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return -i64::from(errno);
        }
    }
}

/// `io_getevents(2)` with a zero timeout: the completions ready now, at most `out.len()`.
pub(crate) fn io_getevents_now(ctx: ContextId, out: &mut [AioEvent]) -> io::Result<usize> {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `out` is writable for `out.len()` events and `zero` outlives the call.
    let n = check(unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            0 as libc::c_long,
            out.len() as libc::c_long,
            out.as_mut_ptr(),
            &zero,
        )
    })?;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn iocb_matches_the_kernel_layout() {
        assert_eq!(size_of::<Iocb>(), 64);
        assert_eq!(offset_of!(Iocb, aio_data), 0);
        #[cfg(target_endian = "little")]
        {
            assert_eq!(offset_of!(Iocb, aio_key), 8);
            assert_eq!(offset_of!(Iocb, aio_rw_flags), 12);
        }
        assert_eq!(offset_of!(Iocb, aio_lio_opcode), 16);
        assert_eq!(offset_of!(Iocb, aio_reqprio), 18);
        assert_eq!(offset_of!(Iocb, aio_fildes), 20);
        assert_eq!(offset_of!(Iocb, aio_buf), 24);
        assert_eq!(offset_of!(Iocb, aio_nbytes), 32);
        assert_eq!(offset_of!(Iocb, aio_offset), 40);
        assert_eq!(offset_of!(Iocb, aio_reserved2), 48);
        assert_eq!(offset_of!(Iocb, aio_flags), 56);
        assert_eq!(offset_of!(Iocb, aio_resfd), 60);
    }

    #[test]
    fn io_event_matches_the_kernel_layout() {
        assert_eq!(size_of::<AioEvent>(), 32);
        assert_eq!(offset_of!(AioEvent, data), 0);
        assert_eq!(offset_of!(AioEvent, obj), 8);
        assert_eq!(offset_of!(AioEvent, res), 16);
        assert_eq!(offset_of!(AioEvent, res2), 24);
    }

    #[test]
    fn ring_header_and_context_id_match_the_kernel_layout() {
        assert_eq!(size_of::<RingHeader>(), 32);
        assert_eq!(offset_of!(RingHeader, head), 8);
        assert_eq!(offset_of!(RingHeader, tail), 12);
        assert_eq!(offset_of!(RingHeader, magic), 16);
        assert_eq!(offset_of!(RingHeader, incompat_features), 24);
        assert_eq!(offset_of!(RingHeader, header_length), 28);
        assert_eq!(
            size_of::<ContextId>(),
            size_of::<usize>(),
            "aio_context_t is pointer-sized"
        );
    }
}
