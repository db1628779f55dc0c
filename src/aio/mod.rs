//! File I/O on the loop: Linux kernel AIO whose completions signal an eventfd.
//!
//! A request travels like this (`docs/aio.md` has the long version):
//!
//! 1. `read_at` & co. check it (O_DIRECT alignment), move the buffer and the callback into a
//!    slab entry, and queue it. The kernel context is created on first use.
//! 2. Before each poll, the loop submits everything queued, up to its in-flight limit, with as
//!    few `io_submit` calls as possible (one when it fits). A partial submission advances by the
//!    count returned; an error for the first iocb fails just that request; `EAGAIN` reaps and
//!    retries.
//! 3. The kernel completes the request, writes an event into the context's ring and signals
//!    the eventfd (`IOCB_FLAG_RESFD`), which is registered on the loop.
//! 4. On the eventfd's edge, the loop reads the eventfd first, then drains the ring (from user
//!    space, without a syscall), then runs the callbacks; each gets its buffer back with the
//!    exact result.
//!
//! A request is identified by `aio_data` = slab key and generation, never by fd. Its buffer is
//! freed only after its completion has been reaped, or after `io_destroy` (which waits for
//! every request in flight) when the base is dropped.

mod abi;
mod buf;
mod file;
mod ring;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::Interest;
use slab::Slab;

use crate::base::EventBase;
use crate::source::Source;
use abi::{ContextId, IoEvent, Iocb};
use ring::Ring;

pub use buf::{AlignedBuf, IoBuf, IoBufMut};
pub use file::AioFile;

/// Largest iovec array the kernel takes (`UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// Settings of a base's kernel AIO context; see [`EventBase::set_aio_options`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AioOptions {
    max_in_flight: u32,
    ring_size: Option<u32>,
    force_io_getevents: bool,
}

impl Default for AioOptions {
    fn default() -> Self {
        AioOptions {
            max_in_flight: 128,
            ring_size: None,
            force_io_getevents: false,
        }
    }
}

impl AioOptions {
    /// The defaults: 128 requests in flight, a context of the same size, ring reaping on.
    pub fn new() -> AioOptions {
        AioOptions::default()
    }

    /// At most `n` requests (at least 1) are handed to the kernel at once; more wait in a queue
    /// in user space and are submitted as completions free slots.
    pub fn max_in_flight(mut self, n: u32) -> AioOptions {
        self.max_in_flight = n.max(1);
        self
    }

    /// The `nr_events` given to `io_setup` (default: the in-flight limit). It counts against
    /// the system-wide `/proc/sys/fs/aio-max-nr`.
    pub fn ring_size(mut self, n: u32) -> AioOptions {
        self.ring_size = Some(n.max(1));
        self
    }

    /// Reap completions with the `io_getevents` syscall instead of reading the kernel's
    /// user-space ring (for debugging, or tools such as valgrind that cannot see the ring).
    /// Setting the environment variable `AIOLOOP_FORCE_IO_GETEVENTS=1` does the same for every
    /// base of the process, without a rebuild.
    pub fn force_io_getevents(mut self, force: bool) -> AioOptions {
        self.force_io_getevents = force;
        self
    }
}

/// Identifies an AIO request, for [`EventBase::cancel_aio`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AioId {
    key: u32,
    gen: u32,
}

impl AioId {
    fn data(self) -> u64 {
        u64::from(self.key) | (u64::from(self.gen) << 32)
    }

    fn from_data(data: u64) -> AioId {
        AioId {
            key: data as u32,
            gen: (data >> 32) as u32,
        }
    }
}

/// A request refused before it was queued: the error, and the buffer it carried.
pub struct AioError<B> {
    error: io::Error,
    buf: B,
}

impl<B> AioError<B> {
    /// Why the request was refused.
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// The error and the buffer, handed back untouched.
    pub fn into_parts(self) -> (io::Error, B) {
        (self.error, self.buf)
    }
}

impl<B> From<AioError<B>> for io::Error {
    fn from(err: AioError<B>) -> io::Error {
        err.error
    }
}

impl<B> fmt::Debug for AioError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AioError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<B> fmt::Display for AioError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<B> std::error::Error for AioError<B> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Runs the user's callback with the kernel's result (bytes, or a negative errno).
type Complete<S> = Box<dyn FnOnce(&mut EventBase<S>, &mut S, i64)>;

struct Op<S> {
    gen: u32,
    iocb: Iocb,
    /// The iovec array a vectored request's iocb points at (empty otherwise); kept alive with
    /// the request, though the kernel only reads it during `io_submit`.
    _iovecs: Vec<libc::iovec>,
    /// Keeps the fd open, and its number ours, until the completion.
    _file: AioFile,
    submitted: bool,
    cancelled: bool,
    complete: Complete<S>,
}

/// An AIO context: destroyed (waiting for everything in flight) when dropped.
struct Context {
    id: ContextId,
    ring: Option<Ring>,
    eventfd: OwnedFd,
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Err(e) = abi::io_destroy(self.id) {
            log::error!("io_destroy failed: {e}");
        }
    }
}

/// The AIO state of one base.
pub(crate) struct Aio<S> {
    context: Option<Context>,
    options: AioOptions,
    ops: Slab<Op<S>>,
    /// Keys of requests not submitted yet, in submission order.
    queue: VecDeque<usize>,
    /// Completions reaped (or decided without the kernel) whose callbacks have not run.
    ready: VecDeque<IoEvent>,
    in_flight: usize,
    /// Set when queued requests may now be submittable.
    needs_flush: bool,
    next_gen: u32,
    /// Reused pointer array for `io_submit`.
    batch: Vec<*mut Iocb>,
}

impl<S> Aio<S> {
    pub(crate) fn new() -> Self {
        Aio {
            context: None,
            options: AioOptions::default(),
            ops: Slab::new(),
            queue: VecDeque::new(),
            ready: VecDeque::new(),
            in_flight: 0,
            needs_flush: false,
            next_gen: 0,
            batch: Vec::new(),
        }
    }

    /// Requests queued or in flight (they keep the loop alive).
    pub(crate) fn pending(&self) -> usize {
        self.ops.len()
    }

    /// Requests handed to the kernel and not reaped yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether work is owed before the next blocking poll: callbacks to run or a queue to flush.
    pub(crate) fn owes_work(&self) -> bool {
        !self.ready.is_empty() || self.needs_flush
    }

    fn reap(&mut self) -> usize {
        let Some(ctx) = &self.context else {
            return 0;
        };
        match &ctx.ring {
            Some(ring) => ring.reap(&mut self.ready),
            None => ring::reap_with_syscall(ctx.id, &mut self.ready),
        }
    }
}

impl<S> Drop for Aio<S> {
    fn drop(&mut self) {
        if let Some(context) = self.context.take() {
            if self.in_flight > 0 {
                log::warn!(
                    "event base dropped with {} AIO requests in flight: waiting for them",
                    self.in_flight
                );
            }
            // io_destroy returns only once the kernel is done with every buffer; the buffers
            // (in `ops`) are freed after this, when the fields drop.
            drop(context);
        }
    }
}

/// The result of a transfer, from the kernel's `res`.
fn transfer_result(res: i64) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res as i32))
    } else {
        Ok(res as usize)
    }
}

fn setup_error(err: io::Error, nr: u32) -> io::Error {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_or_else(|_| "?".to_string(), |s| s.trim().to_string())
    };
    let what = match err.raw_os_error() {
        Some(libc::EAGAIN) => format!(
            "cannot create the kernel AIO context: /proc/sys/fs/aio-max-nr is {} and aio-nr is \
             already {}, so the {nr} events requested do not fit; raise the limit (sysctl -w \
             fs.aio-max-nr=N) or ask for fewer with AioOptions::ring_size",
            read("/proc/sys/fs/aio-max-nr"),
            read("/proc/sys/fs/aio-nr"),
        ),
        Some(libc::ENOSYS) | Some(libc::EPERM) => {
            "kernel AIO unavailable (kernel built without CONFIG_AIO, or io_setup blocked by \
             seccomp)"
                .to_string()
        }
        _ => format!("io_setup({nr}) failed"),
    };
    crate::error::context(err, what)
}

impl<S> EventBase<S> {
    /// Sets the AIO options. Only before the first AIO request, which creates the context.
    pub fn set_aio_options(&mut self, options: AioOptions) -> io::Result<()> {
        if self.aio.context.is_some() {
            return Err(io::Error::other(
                "AIO options must be set before the first AIO request creates the context",
            ));
        }
        self.aio.options = options;
        Ok(())
    }

    /// Reads into `buf` from `file` at `offset`; `callback` gets the buffer back with the byte
    /// count, which is short at end of file and 0 at or past it.
    ///
    /// The buffer belongs to the loop until the callback: it is never freed or handed back while
    /// the kernel may write into it. Refused (with the buffer handed back) when an `O_DIRECT`
    /// request is misaligned, or when the AIO context cannot be created.
    ///
    /// ```
    /// use aioloop::{AioFile, EventBase};
    ///
    /// let file = AioFile::open("Cargo.toml", false)?;
    /// let mut base = EventBase::<Option<Vec<u8>>>::new()?;
    /// base.read_at(&file, 0, vec![0; 9], |_, out, buf, n| {
    ///     assert_eq!(n.unwrap(), 9);
    ///     *out = Some(buf);
    /// })?;
    /// base.set_exit_when_empty(true);
    /// let mut out = None;
    /// base.run(&mut out)?;
    /// assert_eq!(out.unwrap(), b"[package]");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        mut buf: B,
        callback: F,
    ) -> Result<AioId, AioError<B>>
    where
        B: IoBufMut,
        F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<usize>) + 'static,
    {
        let span = (buf.io_mut_ptr() as usize, buf.io_len());
        self.submit_transfer(file, abi::IOCB_CMD_PREAD, offset, span, buf, callback)
            .map_err(|(error, buf, _)| AioError { error, buf })
    }

    /// Writes `buf` to `file` at `offset`; `callback` gets the buffer back with the byte count.
    ///
    /// Writes that extend the file run synchronously inside `io_submit` on ext4 even with
    /// `O_DIRECT`; preallocate (`File::set_len`, `fallocate`) to keep them asynchronous.
    pub fn write_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        buf: B,
        callback: F,
    ) -> Result<AioId, AioError<B>>
    where
        B: IoBuf,
        F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<usize>) + 'static,
    {
        let span = (buf.io_ptr() as usize, buf.io_len());
        self.submit_transfer(file, abi::IOCB_CMD_PWRITE, offset, span, buf, callback)
            .map_err(|(error, buf, _)| AioError { error, buf })
    }

    /// Reads into several buffers in order (`preadv`); `callback` gets them back with the
    /// total byte count.
    pub fn readv_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        mut bufs: Vec<B>,
        callback: F,
    ) -> Result<AioId, AioError<Vec<B>>>
    where
        B: IoBufMut,
        F: FnOnce(&mut EventBase<S>, &mut S, Vec<B>, io::Result<usize>) + 'static,
    {
        let iovecs = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.io_mut_ptr().cast(),
                iov_len: b.io_len(),
            })
            .collect();
        self.submit_vectored(file, abi::IOCB_CMD_PREADV, offset, iovecs, bufs, callback)
    }

    /// Writes several buffers in order (`pwritev`); `callback` gets them back with the total
    /// byte count.
    pub fn writev_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        bufs: Vec<B>,
        callback: F,
    ) -> Result<AioId, AioError<Vec<B>>>
    where
        B: IoBuf,
        F: FnOnce(&mut EventBase<S>, &mut S, Vec<B>, io::Result<usize>) + 'static,
    {
        let iovecs = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.io_ptr() as *mut libc::c_void,
                iov_len: b.io_len(),
            })
            .collect();
        self.submit_vectored(file, abi::IOCB_CMD_PWRITEV, offset, iovecs, bufs, callback)
    }

    /// Flushes `file`'s data and metadata to stable storage (`IOCB_CMD_FSYNC`, run by a
    /// kernel worker: the loop does not block).
    pub fn fsync<F>(&mut self, file: &AioFile, callback: F) -> io::Result<AioId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        self.submit_sync(file, abi::IOCB_CMD_FSYNC, callback)
    }

    /// Like [`fsync`](Self::fsync) but without metadata not needed to read the data back
    /// (`IOCB_CMD_FDSYNC`).
    pub fn fdatasync<F>(&mut self, file: &AioFile, callback: F) -> io::Result<AioId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        self.submit_sync(file, abi::IOCB_CMD_FDSYNC, callback)
    }

    /// Reads exactly `buf.io_len()` bytes at `offset`, resubmitting the rest after short reads;
    /// end of file first gives `UnexpectedEof`. Returns the id of the first request.
    pub fn read_exact_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        mut buf: B,
        callback: F,
    ) -> Result<AioId, AioError<B>>
    where
        B: IoBufMut,
        F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<()>) + 'static,
    {
        let span = (buf.io_mut_ptr() as usize, buf.io_len());
        let rest = Rest {
            file: file.clone(),
            opcode: abi::IOCB_CMD_PREAD,
            offset,
            span,
            done: 0,
            callback,
        };
        rest.submit(self, buf)
            .map_err(|(error, buf, _)| AioError { error, buf })
    }

    /// Writes all of `buf` at `offset`, resubmitting the rest after short writes; a write of 0
    /// bytes gives `WriteZero`. Returns the id of the first request.
    pub fn write_all_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        buf: B,
        callback: F,
    ) -> Result<AioId, AioError<B>>
    where
        B: IoBuf,
        F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<()>) + 'static,
    {
        let span = (buf.io_ptr() as usize, buf.io_len());
        let rest = Rest {
            file: file.clone(),
            opcode: abi::IOCB_CMD_PWRITE,
            offset,
            span,
            done: 0,
            callback,
        };
        rest.submit(self, buf)
            .map_err(|(error, buf, _)| AioError { error, buf })
    }

    /// Cancels a request, logically: the kernel cannot cancel file I/O (`io_cancel` gives
    /// `EINVAL`), so a request already submitted still runs to completion — a cancelled write
    /// may still happen. Its callback is then called with `ECANCELED` (`ErrorKind::Other`,
    /// [`os_error`](crate::os_error) = `libc::ECANCELED`) and the buffer, once the kernel is
    /// done with it; a request not yet submitted is never submitted. Returns `false` if the
    /// request is unknown, finished or already cancelled.
    pub fn cancel_aio(&mut self, id: AioId) -> bool {
        match self.aio.ops.get_mut(id.key as usize) {
            Some(op) if op.gen == id.gen && !op.cancelled => {
                op.cancelled = true;
                self.aio.needs_flush |= !op.submitted;
                true
            }
            _ => false,
        }
    }

    /// Hands queued requests to the kernel now, in one batch, instead of right before the next
    /// poll. Useful to start I/O before a long computation in a callback; completions are
    /// still delivered by the loop. Refusals are reported through the requests' callbacks.
    pub fn submit_aio(&mut self) {
        self.flush_aio();
    }

    fn ensure_aio_context(&mut self) -> io::Result<()> {
        if self.aio.context.is_some() {
            return Ok(());
        }
        let options = self.aio.options;
        let forced = std::env::var_os("AIOLOOP_FORCE_IO_GETEVENTS").is_some_and(|v| v == "1");
        let nr = options.ring_size.unwrap_or(options.max_in_flight);
        let eventfd = crate::sys::eventfd()
            .map_err(|e| crate::error::context(e, "cannot create the AIO completion eventfd"))?;
        let id = abi::io_setup(nr).map_err(|e| setup_error(e, nr))?;
        // SAFETY: `id` comes from io_setup and the Ring is dropped with the Context, before
        // io_destroy unmaps it (`Context::drop` runs before its fields drop).
        let use_ring = !(options.force_io_getevents || forced);
        let ring = use_ring.then(|| unsafe { Ring::new(id) }).flatten();
        let context = Context { id, ring, eventfd };
        let raw = context.eventfd.as_raw_fd();
        self.poll.registry().register(
            &mut SourceFd(&raw),
            Source::Aio.token(),
            Interest::READABLE,
        )?;
        log::debug!(
            "AIO context created: {nr} events, reaping {}",
            if context.ring.is_some() {
                "from the user-space ring"
            } else {
                "with io_getevents"
            }
        );
        self.aio.context = Some(context);
        Ok(())
    }

    /// Queues one request; on refusal hands back the error, the buffer and the callback.
    fn submit_transfer<B, C>(
        &mut self,
        file: &AioFile,
        opcode: u16,
        offset: u64,
        (addr, len): (usize, usize),
        buf: B,
        callback: C,
    ) -> Result<AioId, (io::Error, B, C)>
    where
        B: 'static,
        C: OnTransfer<S, B>,
    {
        let checked = file
            .check_transfer(addr, len, offset)
            .and_then(|()| file_offset(offset))
            .and_then(|offset| self.ensure_aio_context().map(|()| offset));
        let offset = match checked {
            Ok(offset) => offset,
            Err(e) => return Err((e, buf, callback)),
        };
        let iocb = Iocb {
            aio_lio_opcode: opcode,
            aio_buf: addr as u64,
            aio_nbytes: len as u64,
            aio_offset: offset,
            ..Iocb::default()
        };
        let complete = move |base: &mut EventBase<S>, state: &mut S, res| {
            callback.done(base, state, buf, transfer_result(res))
        };
        Ok(self.enqueue(file, iocb, Vec::new(), Box::new(complete)))
    }

    fn submit_vectored<B, F>(
        &mut self,
        file: &AioFile,
        opcode: u16,
        offset: u64,
        iovecs: Vec<libc::iovec>,
        bufs: Vec<B>,
        callback: F,
    ) -> Result<AioId, AioError<Vec<B>>>
    where
        B: 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, Vec<B>, io::Result<usize>) + 'static,
    {
        let checked = check_iovecs(file, &iovecs, offset)
            .and_then(|()| file_offset(offset))
            .and_then(|offset| self.ensure_aio_context().map(|()| offset));
        let offset = match checked {
            Ok(offset) => offset,
            Err(error) => return Err(AioError { error, buf: bufs }),
        };
        let iocb = Iocb {
            aio_lio_opcode: opcode,
            aio_buf: iovecs.as_ptr() as u64,
            aio_nbytes: iovecs.len() as u64,
            aio_offset: offset,
            ..Iocb::default()
        };
        let complete = move |base: &mut EventBase<S>, state: &mut S, res| {
            callback(base, state, bufs, transfer_result(res))
        };
        Ok(self.enqueue(file, iocb, iovecs, Box::new(complete)))
    }

    fn submit_sync<F>(&mut self, file: &AioFile, opcode: u16, callback: F) -> io::Result<AioId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        self.ensure_aio_context()?;
        let iocb = Iocb {
            aio_lio_opcode: opcode,
            ..Iocb::default()
        };
        let complete = move |base: &mut EventBase<S>, state: &mut S, res| {
            callback(base, state, transfer_result(res).map(drop))
        };
        Ok(self.enqueue(file, iocb, Vec::new(), Box::new(complete)))
    }

    /// Puts a checked request in the table and the submission queue.
    fn enqueue(
        &mut self,
        file: &AioFile,
        mut iocb: Iocb,
        iovecs: Vec<libc::iovec>,
        complete: Complete<S>,
    ) -> AioId {
        let aio = &mut self.aio;
        let gen = aio.next_gen;
        aio.next_gen = aio.next_gen.wrapping_add(1);
        let entry = aio.ops.vacant_entry();
        let id = AioId {
            key: entry.key() as u32,
            gen,
        };
        let ctx = aio.context.as_ref().expect("created by the caller");
        iocb.aio_data = id.data();
        iocb.aio_fildes = file.as_raw_fd() as u32;
        iocb.aio_flags = abi::IOCB_FLAG_RESFD;
        iocb.aio_resfd = ctx.eventfd.as_raw_fd() as u32;
        entry.insert(Op {
            gen,
            iocb,
            _iovecs: iovecs,
            _file: file.clone(),
            submitted: false,
            cancelled: false,
            complete,
        });
        aio.queue.push_back(id.key as usize);
        aio.needs_flush = true;
        id
    }

    /// Submits what is queued, up to the in-flight limit, in as few `io_submit` calls as it
    /// takes. Called before each poll.
    pub(crate) fn flush_aio(&mut self) {
        if !self.aio.needs_flush {
            return;
        }
        self.aio.needs_flush = false;
        let max = self.aio.options.max_in_flight as usize;
        while self.aio.in_flight < max && !self.aio.queue.is_empty() {
            let batch = self.gather_batch(max - self.aio.in_flight);
            if batch == 0 {
                continue; // only cancelled requests were at the front
            }
            let ctx = self
                .aio
                .context
                .as_ref()
                .expect("requests imply a context")
                .id;
            let started = Instant::now();
            // SAFETY: the batch points at iocbs inside `self.aio.ops`, which is not touched
            // during the call; their buffers and iovec arrays are owned by the same entries
            // and live until the completion is reaped or the context is destroyed.
            let result = unsafe { abi::io_submit(ctx, &mut self.aio.batch) };
            self.metrics.aio_submit_time += started.elapsed();
            self.metrics.aio_submit_calls += 1;
            match result {
                Ok(n) => self.mark_submitted(n),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    // Reaped-but-unread completions hold kernel slots: free them, retry.
                    if self.aio.reap() == 0 {
                        log::debug!(
                            "io_submit: EAGAIN with nothing to reap; retrying on completion"
                        );
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail_first_queued(e),
            }
        }
    }

    /// Fills `self.aio.batch` with up to `room` queued requests, completing cancelled ones.
    fn gather_batch(&mut self, room: usize) -> usize {
        let Aio {
            ops,
            queue,
            ready,
            batch,
            ..
        } = &mut self.aio;
        batch.clear();
        let mut i = 0;
        while batch.len() < room && i < queue.len() {
            let op = &mut ops[queue[i]];
            if op.cancelled {
                ready.push_back(IoEvent {
                    data: op.iocb.aio_data,
                    res: -i64::from(libc::ECANCELED),
                    ..IoEvent::default()
                });
                queue.remove(i);
                continue;
            }
            batch.push(&mut op.iocb);
            i += 1;
        }
        batch.len()
    }

    fn mark_submitted(&mut self, n: usize) {
        for key in self.aio.queue.drain(..n) {
            self.aio.ops[key].submitted = true;
        }
        self.aio.in_flight += n;
    }

    /// `io_submit` refused the first iocb: complete that request with the error, keep the rest.
    fn fail_first_queued(&mut self, err: io::Error) {
        let Some(key) = self.aio.queue.pop_front() else {
            return;
        };
        log::debug!("io_submit refused a request: {err}");
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        self.aio.ready.push_back(IoEvent {
            data: self.aio.ops[key].iocb.aio_data,
            res: -i64::from(errno),
            ..IoEvent::default()
        });
    }

    /// The eventfd fired: reset it, then drain the ring — in that order, so a completion
    /// landing meanwhile re-arms the eventfd instead of being missed. The callbacks run later
    /// in the iteration, as owed work.
    pub(crate) fn harvest_aio(&mut self) {
        if let Some(ctx) = &self.aio.context {
            crate::sys::eventfd_take(ctx.eventfd.as_fd());
        }
        self.aio.reap();
    }

    /// Runs the callbacks of reaped completions; stops early (keeping the rest) on `exit`.
    pub(crate) fn run_aio_completions(&mut self, state: &mut S) {
        while let Some(event) = self.aio.ready.pop_front() {
            self.complete_aio(event, state);
            if self.exit_requested {
                return;
            }
        }
    }

    fn complete_aio(&mut self, event: IoEvent, state: &mut S) {
        let id = AioId::from_data(event.data);
        let known = self
            .aio
            .ops
            .get(id.key as usize)
            .is_some_and(|op| op.gen == id.gen);
        if !known {
            log::error!(
                "AIO completion for an unknown request {id:?} (res {})",
                event.res
            );
            return;
        }
        let op = self.aio.ops.remove(id.key as usize);
        if op.submitted {
            self.aio.in_flight -= 1;
        }
        if !self.aio.queue.is_empty() {
            self.aio.needs_flush = true;
        }
        self.metrics.aio_completions += 1;
        let res = if op.cancelled {
            -i64::from(libc::ECANCELED)
        } else {
            event.res
        };
        let complete = op.complete;
        self.guarded(|base| complete(base, state, res), |_| {});
    }
}

/// What to do when a transfer completes. Closures qualify; so does [`Rest`], which the
/// `*_exact`/`*_all` helpers use and can take apart again when a submission is refused.
trait OnTransfer<S, B>: 'static {
    fn done(self, base: &mut EventBase<S>, state: &mut S, buf: B, res: io::Result<usize>);
}

impl<S, B, F> OnTransfer<S, B> for F
where
    F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<usize>) + 'static,
{
    fn done(self, base: &mut EventBase<S>, state: &mut S, buf: B, res: io::Result<usize>) {
        self(base, state, buf, res)
    }
}

/// The rest of a whole-span transfer: resubmits after short counts until the span is done.
struct Rest<F> {
    file: AioFile,
    opcode: u16,
    offset: u64,
    /// Address and length of the whole span in the buffer.
    span: (usize, usize),
    done: usize,
    callback: F,
}

impl<F> Rest<F> {
    /// Queues the part of the span not done yet; on refusal hands everything back.
    fn submit<S, B>(self, base: &mut EventBase<S>, buf: B) -> Result<AioId, (io::Error, B, F)>
    where
        B: 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<()>) + 'static,
    {
        let (addr, len) = self.span;
        let rest = (addr + self.done, len - self.done);
        let at = self.offset + self.done as u64;
        let (file, opcode) = (self.file.clone(), self.opcode);
        base.submit_transfer(&file, opcode, at, rest, buf, self)
            .map_err(|(e, buf, rest)| (e, buf, rest.callback))
    }
}

impl<S, B, F> OnTransfer<S, B> for Rest<F>
where
    B: 'static,
    F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<()>) + 'static,
{
    fn done(mut self, base: &mut EventBase<S>, state: &mut S, buf: B, res: io::Result<usize>) {
        let len = self.span.1;
        match res {
            Ok(0) if self.done < len => {
                let kind = match self.opcode {
                    abi::IOCB_CMD_PREAD => io::ErrorKind::UnexpectedEof,
                    _ => io::ErrorKind::WriteZero,
                };
                return (self.callback)(base, state, buf, Err(kind.into()));
            }
            Ok(n) => self.done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (self.callback)(base, state, buf, Err(e)),
        }
        if self.done >= len {
            return (self.callback)(base, state, buf, Ok(()));
        }
        if let Err((e, buf, callback)) = self.submit(base, buf) {
            callback(base, state, buf, Err(e));
        }
    }
}

fn file_offset(offset: u64) -> io::Result<i64> {
    i64::try_from(offset).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("file offset {offset} is beyond i64::MAX"),
        )
    })
}

fn check_iovecs(file: &AioFile, iovecs: &[libc::iovec], offset: u64) -> io::Result<()> {
    if iovecs.len() > MAX_IOVECS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} buffers in one vectored request; the kernel takes at most {MAX_IOVECS}",
                iovecs.len()
            ),
        ));
    }
    iovecs
        .iter()
        .try_for_each(|v| file.check_transfer(v.iov_base as usize, v.iov_len, offset))
}
