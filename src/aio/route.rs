//! Where a request runs: the page cache on the loop thread, kernel AIO, or a helper thread
//! for whatever kernel AIO cannot run without blocking. (When it may start is `order.rs`'s
//! business: a request reaches `route_new` only once the order releases it.)
//!
//! With helpers on (the default), a buffered read is first tried from the page cache on the
//! loop thread (`read_cached`: one `preadv2` with `RWF_NOWAIT`, no kernel AIO), and every
//! other read and write goes to kernel AIO with `RWF_NOWAIT`: what the kernel can do at once
//! (`O_DIRECT` on ext4, xfs, btrfs or a block device) completes asynchronously as before, and
//! what would block comes back:
//!
//! * `EAGAIN` in the completion (a page-cache miss, an `O_DIRECT` write that extends the file):
//!   the request runs again on a helper, with `preadv2`/`pwritev2` and no flag;
//! * `EOPNOTSUPP`, from `io_submit` or in the completion (a file system without `RWF_NOWAIT`):
//!   likewise, and the file sends that direction straight to helpers from then on (files on
//!   FUSE, NFS, CIFS... are known from `statfs` when the `AioFile` is made);
//! * a short count for a buffered read or any write (the kernel stopped where it would have
//!   blocked): the rest runs on a helper, and the callback gets the sum, so a short read still
//!   only ever means the end of the file.
//!
//! `fsync` and `fdatasync` stay on kernel AIO: `io_submit` only queues them for a kernel
//! worker, on every file system. The buffer stays in the request table while a helper uses it;
//! if the base is dropped first, the request is leaked rather than freed (see `Aio`'s `Drop`).

use super::file::{HELPER_READS, HELPER_WRITES};
use super::{AioFile, AioId, OpState, Path};
use crate::base::EventBase;
use crate::pool::{Complete, Job, Output};
use crate::sys::aio::{self as abi, AioEvent, Iocb};

/// `HELPER_READS` or `HELPER_WRITES` for a transfer opcode; `None` for the syncs.
fn direction(opcode: u16) -> Option<u8> {
    match opcode {
        abi::IOCB_CMD_PREAD | abi::IOCB_CMD_PREADV => Some(HELPER_READS),
        abi::IOCB_CMD_PWRITE | abi::IOCB_CMD_PWRITEV => Some(HELPER_WRITES),
        _ => None,
    }
}

/// What the callback gets when `done` bytes went through kernel AIO and the rest gave `res`.
pub(super) fn combined_result(done: u64, res: i64) -> i64 {
    match res {
        r if r >= 0 => done as i64 + r,
        _ if done > 0 => done as i64,
        r => r,
    }
}

/// Where a new request goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Its file system cannot run it without blocking: straight to a helper.
    Helper,
    /// A buffered read: from the page cache on the loop thread, or else a helper.
    Cached,
    /// Kernel AIO, with `RWF_NOWAIT` (a transfer while helpers are on) or without.
    Kernel { nowait: bool },
}

impl<S> EventBase<S> {
    /// Where a request of `opcode` on `file` goes (the one place that decides it).
    fn route(&self, file: &AioFile, opcode: u16) -> Route {
        let helpers = self.pool.enabled();
        match direction(opcode) {
            Some(d) if helpers && file.needs_helper(d) => Route::Helper,
            Some(HELPER_READS) if helpers && !file.is_direct() => Route::Cached,
            // No AIO context can be made: a helper runs what kernel AIO would have.
            _ if helpers && self.aio.no_context => Route::Helper,
            Some(_) => Route::Kernel { nowait: helpers },
            None => Route::Kernel { nowait: false },
        }
    }

    /// Creates the kernel AIO context for a request that may need it. Requests that go to
    /// the page cache or a helper never do, so they keep working when the context cannot be
    /// made (the process at its fd limit, `aio-max-nr` exhausted).
    ///
    /// With helpers on, a context that cannot be made sends the requests that needed it
    /// (`O_DIRECT` reads and writes, syncs) to the helpers instead, for the life of the base:
    /// said once in the log, at warning level.
    pub(super) fn context_for(&mut self, file: &AioFile, opcode: u16) -> std::io::Result<()> {
        match self.route(file, opcode) {
            Route::Kernel { .. } => match self.ensure_aio_context() {
                Err(e) if self.pool.enabled() => {
                    log::warn!("{e}; file requests run on helper threads instead");
                    self.aio.no_context = true;
                    Ok(())
                }
                made => made,
            },
            Route::Helper | Route::Cached => Ok(()),
        }
    }

    /// Routes a new request: straight to a helper if its file needs one for this direction,
    /// a buffered read to the page cache, anything else into the AIO queue, with
    /// `RWF_NOWAIT` while helpers are on.
    pub(super) fn route_new(&mut self, id: AioId) {
        let key = id.key as usize;
        let op = &self.aio.ops[key];
        match self.route(&op.file, op.iocb.aio_lio_opcode) {
            Route::Helper => {
                self.aio.ops[key].path = Path::Helper;
                self.metrics.aio_on_helpers += 1;
                self.send_to_helper(id);
            }
            Route::Cached => self.read_cached(id),
            Route::Kernel { nowait } => {
                let op = &mut self.aio.ops[key];
                op.state = OpState::Queued;
                if nowait {
                    op.iocb.aio_rw_flags |= libc::RWF_NOWAIT;
                }
                self.aio.queue.push_back(key);
                self.aio.needs_flush = true;
            }
        }
    }

    /// The file of request `key` cannot run `direction` without blocking (`EOPNOTSUPP` to
    /// `RWF_NOWAIT`): this request and the file's later ones in that direction go to helpers.
    fn helpers_for_good(&mut self, key: usize, direction: u8) {
        let op = &mut self.aio.ops[key];
        op.file.use_helper(direction);
        op.path = Path::Helper;
        self.metrics.aio_on_helpers += 1;
    }

    /// Serves a buffered read from the page cache on the loop thread: `preadv2` with
    /// `RWF_NOWAIT` copies what is cached and never blocks. That is one syscall where kernel
    /// AIO would take an `io_submit`, an eventfd wake-up and a poll for the same copy. What
    /// is not cached (`EAGAIN`, or a short count that is not the end of the file) goes to a
    /// helper; the callback runs later in this iteration either way, never inside `read_at`.
    fn read_cached(&mut self, id: AioId) {
        let op = &mut self.aio.ops[id.key as usize];
        let res = loop {
            #[allow(unsafe_code)]
            // SAFETY: the request's buffers live in its table entry, borrowed here, for the
            // whole call; RWF_NOWAIT keeps the call from blocking the loop.
            let res = unsafe { abi::run_sync(&op.iocb, libc::RWF_NOWAIT) };
            match res {
                n if n > 0 && (n as u64) < transfer_len(op) => {
                    // Short: the end of the file, or a page not cached; the next try tells.
                    op.done += n as u64;
                    advance(&mut op.iocb, &mut op.iovecs, n as u64);
                }
                n if n == -i64::from(libc::EAGAIN) => {
                    op.path = Path::Retried;
                    self.metrics.aio_nowait_retries += 1;
                    return self.send_to_helper(id);
                }
                n if n == -i64::from(libc::EOPNOTSUPP) => {
                    self.helpers_for_good(id.key as usize, HELPER_READS);
                    return self.send_to_helper(id);
                }
                n => break n, // run_sync retries EINTR itself
            }
        };
        op.path = Path::Cached;
        op.state = OpState::Done;
        self.metrics.aio_cached_reads += 1;
        self.aio.ready.push_back(AioEvent {
            data: id.data(),
            res,
            ..AioEvent::default()
        });
    }

    /// `io_submit` refused the first queued request with `err`: if that was `RWF_NOWAIT`
    /// being unsupported, sends it (and the file's later requests) to helpers and returns
    /// `true`.
    pub(super) fn refused_nowait(&mut self, key: usize, errno: i32) -> bool {
        let op = &self.aio.ops[key];
        let nowait = op.iocb.aio_rw_flags & libc::RWF_NOWAIT != 0;
        let Some(direction) = direction(op.iocb.aio_lio_opcode).filter(|_| nowait) else {
            return false;
        };
        if errno != libc::EOPNOTSUPP {
            return false;
        }
        let id = AioId {
            key: key as u32,
            gen: op.gen,
        };
        self.helpers_for_good(key, direction);
        self.send_to_helper(id);
        true
    }

    /// A kernel completion of a `RWF_NOWAIT` request that the kernel stopped where it would
    /// have blocked: the rest goes to a helper, and this returns `true`.
    pub(super) fn retry_on_helper(&mut self, id: AioId, res: i64) -> bool {
        let op = &mut self.aio.ops[id.key as usize];
        let nowait = op.iocb.aio_rw_flags & libc::RWF_NOWAIT != 0;
        let Some(direction) = direction(op.iocb.aio_lio_opcode).filter(|_| nowait) else {
            return false;
        };
        let requested = transfer_len(op);
        let short = res > 0 && (res as u64) < requested;
        match res {
            r if r == -i64::from(libc::EOPNOTSUPP) => {
                self.helpers_for_good(id.key as usize, direction)
            }
            r if r == -i64::from(libc::EAGAIN) => self.metrics.aio_nowait_retries += 1,
            _ if short && (direction == HELPER_WRITES || !op.file.is_direct()) => {
                self.metrics.aio_nowait_retries += 1
            }
            _ => return false,
        }
        let op = &mut self.aio.ops[id.key as usize];
        let done = res.max(0) as u64;
        op.done += done;
        if op.path == Path::Kernel {
            op.path = Path::Retried;
        }
        advance(&mut op.iocb, &mut op.iovecs, done);
        self.send_to_helper(id);
        true
    }

    /// Runs the rest of request `id` on a helper thread.
    fn send_to_helper(&mut self, id: AioId) {
        let op = &mut self.aio.ops[id.key as usize];
        op.iocb.aio_rw_flags &= !libc::RWF_NOWAIT;
        let iocb = op.iocb;
        #[allow(unsafe_code)]
        // SAFETY: the request's buffers (and iovec array) live in its entry of the request
        // table, which is removed only when this job's result is harvested, or leaked if the
        // base is dropped first: they stay valid for as long as the helper may use them.
        let job: Job = Box::new(move || Box::new(unsafe { abi::run_sync(&iocb, 0) }) as Output);
        let data = id.data();
        let complete: Complete<S> =
            Box::new(move |base, _, outcome| base.aio_done_on_helper(data, outcome));
        let class = op.file.device();
        match self.submit_job(class, job, complete) {
            Ok(job) => self.aio.ops[id.key as usize].state = OpState::OnHelper(job),
            Err(e) => {
                log::error!("cannot run a file request on a helper: {e}");
                let errno = crate::os_error(&e).unwrap_or(libc::EIO);
                self.aio.ops[id.key as usize].state = OpState::Done;
                self.aio.ready.push_back(AioEvent {
                    data: id.data(),
                    res: -i64::from(errno),
                    ..AioEvent::default()
                });
            }
        }
    }
}

/// The bytes a transfer request asks for.
fn transfer_len<S>(op: &super::Op<S>) -> u64 {
    match op.iocb.aio_lio_opcode {
        abi::IOCB_CMD_PREADV | abi::IOCB_CMD_PWRITEV => {
            op.iovecs.iter().map(|v| v.iov_len as u64).sum()
        }
        _ => op.iocb.aio_nbytes,
    }
}

/// Moves a transfer's iocb past its first `n` bytes (buffer, iovecs and file offset).
fn advance(iocb: &mut Iocb, iovecs: &mut Vec<libc::iovec>, n: u64) {
    iocb.aio_offset += n as i64;
    match iocb.aio_lio_opcode {
        abi::IOCB_CMD_PREADV | abi::IOCB_CMD_PWRITEV => {
            let mut left = n as usize;
            while let Some(first) = iovecs.first_mut() {
                if left < first.iov_len {
                    first.iov_base = first.iov_base.wrapping_byte_add(left);
                    first.iov_len -= left;
                    break;
                }
                left -= first.iov_len;
                iovecs.remove(0);
            }
            iocb.aio_buf = iovecs.as_ptr() as u64;
            iocb.aio_nbytes = iovecs.len() as u64;
        }
        _ => {
            iocb.aio_buf += n;
            iocb.aio_nbytes -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iovec(base: usize, len: usize) -> libc::iovec {
        libc::iovec {
            iov_base: base as *mut libc::c_void,
            iov_len: len,
        }
    }

    #[test]
    fn advancing_a_vectored_request_skips_whole_and_partial_buffers() {
        let mut iovecs = vec![iovec(0x1000, 10), iovec(0x2000, 20), iovec(0x3000, 30)];
        let mut iocb = Iocb {
            aio_lio_opcode: abi::IOCB_CMD_PREADV,
            aio_offset: 100,
            ..Iocb::default()
        };
        advance(&mut iocb, &mut iovecs, 15);
        assert_eq!(iocb.aio_offset, 115);
        assert_eq!(iocb.aio_nbytes, 2);
        assert_eq!(iocb.aio_buf, iovecs.as_ptr() as u64);
        assert_eq!(iovecs[0].iov_base as usize, 0x2005);
        assert_eq!(iovecs[0].iov_len, 15);
        assert_eq!(iovecs[1].iov_len, 30);
        advance(&mut iocb, &mut iovecs, 15);
        assert_eq!((iovecs.len(), iovecs[0].iov_base as usize), (1, 0x3000));
    }

    #[test]
    fn advancing_a_single_buffer_moves_address_length_and_offset() {
        let mut iocb = Iocb {
            aio_lio_opcode: abi::IOCB_CMD_PWRITE,
            aio_buf: 0x1000,
            aio_nbytes: 4096,
            aio_offset: 8192,
            ..Iocb::default()
        };
        advance(&mut iocb, &mut Vec::new(), 96);
        assert_eq!(
            (iocb.aio_buf, iocb.aio_nbytes, iocb.aio_offset),
            (0x1060, 4000, 8288)
        );
    }

    #[test]
    fn a_split_request_reports_the_bytes_of_both_parts_and_never_hides_them() {
        assert_eq!(combined_result(0, 4096), 4096);
        assert_eq!(combined_result(1000, 3096), 4096);
        assert_eq!(
            combined_result(1000, 0),
            1000,
            "the rest met the end of the file"
        );
        assert_eq!(combined_result(1000, -i64::from(libc::ENOSPC)), 1000);
        assert_eq!(
            combined_result(0, -i64::from(libc::EIO)),
            -i64::from(libc::EIO)
        );
    }
}
