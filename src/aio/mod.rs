//! File I/O on the loop: Linux kernel AIO whose completions signal an eventfd.
//!
//! A request travels like this (`docs/aio.md` has the long version):
//!
//! 1. `read_at` & co. check it (O_DIRECT alignment), move the buffer and the callback into a
//!    slab entry, and queue it. The kernel context is created on first use.
//! 2. Before each poll, the loop submits everything queued, up to its in-flight limit: a
//!    sequential run in one `io_submit` call, scattered requests two per call (more would
//!    plug the block layer and delay them). A partial submission advances by the count
//!    returned; an error for the first iocb fails just that request; `EAGAIN` reaps and
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

mod buf;
mod complete;
mod context;
mod file;
mod order;
mod requests;
mod route;
mod submit;

use std::collections::VecDeque;
use std::fmt;
use std::io;

use slab::Slab;

use crate::base::EventBase;
use crate::pool::JobId;
use crate::sys::aio::{AioEvent, Iocb};
use context::Context;
use order::{Order, Start};

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
    helper_threads: usize,
    helper_queue: usize,
    helpers_per_device: Option<usize>,
}

impl Default for AioOptions {
    fn default() -> Self {
        AioOptions {
            max_in_flight: 128,
            ring_size: None,
            force_io_getevents: false,
            helper_threads: 4,
            helper_queue: 256,
            helpers_per_device: None,
        }
    }
}

impl AioOptions {
    /// The defaults: 128 requests in flight, a context of the same size, ring reaping on.
    #[must_use]
    pub fn new() -> AioOptions {
        AioOptions::default()
    }

    /// At most `n` requests (at least 1) are handed to the kernel at once; more wait in a queue
    /// in user space and are submitted as completions free slots.
    #[must_use]
    pub fn max_in_flight(mut self, n: u32) -> AioOptions {
        self.max_in_flight = n.max(1);
        self
    }

    /// The `nr_events` given to `io_setup` (default: the in-flight limit). It counts against
    /// the system-wide `/proc/sys/fs/aio-max-nr`.
    #[must_use]
    pub fn ring_size(mut self, n: u32) -> AioOptions {
        self.ring_size = Some(n.max(1));
        self
    }

    /// Reap completions with the `io_getevents` syscall instead of reading the kernel's
    /// user-space ring (for debugging, or tools such as valgrind that cannot see the ring).
    /// Setting the environment variable `AIOLOOP_FORCE_IO_GETEVENTS=1` does the same for every
    /// base of the process, without a rebuild.
    #[must_use]
    pub fn force_io_getevents(mut self, force: bool) -> AioOptions {
        self.force_io_getevents = force;
        self
    }

    /// At most `n` helper threads (default 4), started as file operations need them, for the
    /// reads and writes kernel AIO cannot run without blocking and for the operations it does
    /// not have (open, stat, directory listings...).
    ///
    /// **0 turns the helper path off**: every read and write then goes to kernel AIO without
    /// `RWF_NOWAIT` (blocking the loop inside `io_submit` when the file system makes it), and
    /// the other operations run on the loop thread. Only useful to measure what the helpers
    /// save, or in a program that must not start threads.
    #[must_use]
    pub fn helper_threads(mut self, n: usize) -> AioOptions {
        self.helper_threads = n;
        self
    }

    /// Formerly the bound of the helpers' queue. Jobs now wait on the loop side until a helper
    /// is free to start them (so that a queued job can always be cancelled, and a hung file
    /// system cannot fill the queue ahead of the others): this setting has no effect.
    #[deprecated(note = "jobs wait on the loop side; see `helpers_per_device`")]
    #[must_use]
    pub fn helper_queue(mut self, n: usize) -> AioOptions {
        self.helper_queue = n.max(1);
        self
    }

    /// At most `n` helpers (at least 1) may work at once for the requests of one file
    /// system (one device, `st_dev`); default: all helpers but one (with a single helper,
    /// that one: a hung mount then holds it). Requests beyond
    /// it wait on the loop side, where other file systems' requests go past them: a FUSE or
    /// NFS mount that hangs holds `n` helpers, and the others keep serving the healthy disks,
    /// [`run_blocking`](EventBase::run_blocking) jobs (one class of their own) and the
    /// path operations (`open`, `stat`, ...: one class together, since their file system is
    /// only known once the path is resolved). See "Fairness" in [the AIO guide](crate::guide::aio).
    #[must_use]
    pub fn helpers_per_device(mut self, n: usize) -> AioOptions {
        self.helpers_per_device = Some(n.max(1));
        self
    }

    /// The helpers one class of jobs may hold.
    fn per_class(&self) -> usize {
        (self.helpers_per_device).unwrap_or(self.helper_threads.saturating_sub(1).max(1))
    }
}

/// Identifies an AIO request, for [`EventBase::cancel_aio`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AioId {
    key: u32,
    gen: u32,
}

impl AioId {
    pub(crate) fn data(self) -> u64 {
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

/// Why a whole-span transfer ([`read_exact_at`](EventBase::read_exact_at),
/// [`write_all_at`](EventBase::write_all_at)) stopped before the end of its span, and how far
/// it got.
///
/// A write that fails part-way has still changed the file: `transferred` bytes from the start
/// of the span reached it. A read that hits the end of the file fails with `UnexpectedEof`,
/// with the bytes before it in the buffer.
///
/// ```
/// # use aioloop::{AioFile, EventBase, TransferError};
/// # fn demo(base: &mut EventBase<()>, file: &AioFile) -> std::io::Result<()> {
/// base.write_all_at(file, 0, vec![7u8; 1 << 20], |_, _, _buf, result| {
///     if let Err(e) = result {
///         eprintln!("{} bytes written, then: {}", e.transferred(), e.error());
///     }
/// })?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TransferError {
    transferred: usize,
    error: io::Error,
}

impl TransferError {
    /// Bytes transferred from the start of the span before the error: in the buffer for a
    /// read, in the file for a write.
    pub fn transferred(&self) -> usize {
        self.transferred
    }

    /// What stopped the transfer (`UnexpectedEof` and `WriteZero` for a span cut short).
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// The kind of [`error`](Self::error).
    pub fn kind(&self) -> io::ErrorKind {
        self.error.kind()
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} after {} bytes", self.error, self.transferred)
    }
}

impl std::error::Error for TransferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<TransferError> for io::Error {
    /// Keeps the kind and the errno (see [`os_error`](crate::os_error)); the message gains the
    /// byte count.
    fn from(err: TransferError) -> io::Error {
        let what = format!("transfer stopped after {} bytes", err.transferred);
        crate::error::context(err.error, what)
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

/// Runs the user's callback with the kernel's result (bytes, or a negative errno).
type Complete<S> = Box<dyn FnOnce(&mut EventBase<S>, &mut S, i64)>;

struct Op<S> {
    gen: u32,
    iocb: Iocb,
    /// The iovec array a vectored request's iocb points at (empty otherwise); kept alive with
    /// the request, though the kernel only reads it during `io_submit`.
    iovecs: Vec<libc::iovec>,
    /// Keeps the fd open, and its number ours, until the completion.
    file: AioFile,
    state: OpState,
    /// Its place in the file's request order.
    ticket: u64,
    /// A part of a whole-span transfer: the next part takes its place in the order.
    span: bool,
    cancelled: bool,
    /// Bytes a `RWF_NOWAIT` try transferred before the rest went to a helper.
    done: u64,
    /// Which way it went, for the debug log.
    path: Path,
    /// Loop time when it was made, for the debug log's wait time.
    made_at: crate::timer::Tick,
    complete: Complete<S>,
}

/// The name of a request's operation, for the log.
fn opcode_name(opcode: u16) -> &'static str {
    match opcode {
        crate::sys::aio::IOCB_CMD_PREAD => "read",
        crate::sys::aio::IOCB_CMD_PWRITE => "write",
        crate::sys::aio::IOCB_CMD_PREADV => "vectored read",
        crate::sys::aio::IOCB_CMD_PWRITEV => "vectored write",
        crate::sys::aio::IOCB_CMD_FSYNC => "fsync",
        crate::sys::aio::IOCB_CMD_FDSYNC => "fdatasync",
        _ => "request",
    }
}

/// The way a request ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Kernel AIO alone.
    Kernel,
    /// Kernel AIO with `RWF_NOWAIT`, which stopped where it would block; a helper ran the rest.
    Retried,
    /// A buffered read served from the page cache on the loop thread, by `preadv2` with
    /// `RWF_NOWAIT`.
    Cached,
    /// Straight to a helper: its file system cannot run it without blocking.
    Helper,
}

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpState {
    /// Held back until earlier requests of its file that it depends on have finished.
    Held,
    /// In the submission queue.
    Queued,
    /// Handed to the kernel.
    InKernel,
    /// Handed to a helper thread (queued there, running, or finished and not harvested).
    OnHelper(JobId),
    /// Finished without the kernel's AIO (served from the page cache, or refused); its result
    /// waits in the completion queue.
    Done,
}

/// The AIO state of one base.
pub(crate) struct Aio<S> {
    context: Option<Context>,
    options: AioOptions,
    ops: Slab<Op<S>>,
    /// Keys of requests not submitted yet, in submission order.
    queue: VecDeque<usize>,
    /// Completions reaped (or decided without the kernel) whose callbacks have not run.
    ready: VecDeque<AioEvent>,
    in_flight: usize,
    /// Set when queued requests may now be submittable.
    needs_flush: bool,
    next_gen: u32,
    /// Reused pointer array for `io_submit`.
    batch: Vec<*mut Iocb>,
    /// The per-file order of the requests of every file.
    order: Order,
    /// Reused list of requests the order released.
    released: Vec<Start>,
    /// The context could not be made: helpers run what needed it.
    no_context: bool,
    /// While a part of a whole-span transfer is called back: its file and ticket, the place
    /// the next part of the span takes in the order.
    carry: Option<(usize, u64)>,
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
            order: Order::default(),
            released: Vec::new(),
            no_context: false,
            carry: None,
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

    pub(super) fn reap(&mut self) -> usize {
        self.context
            .as_ref()
            .map_or(0, |ctx| ctx.reap(&mut self.ready))
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
        // A helper may still be writing into (or reading from) these requests' buffers, and
        // dropping the base must not wait for it (a hung FUSE read may never return): the
        // requests are leaked instead, buffer, file and callback, which is memory-safe.
        let on_helpers: Vec<usize> = (self.ops.iter())
            .filter(|(_, op)| matches!(op.state, OpState::OnHelper(_)))
            .map(|(key, _)| key)
            .collect();
        if !on_helpers.is_empty() {
            log::warn!(
                "event base dropped with {} file requests on helper threads: their buffers are \
                 leaked, not freed under the helpers",
                on_helpers.len()
            );
        }
        for key in on_helpers {
            std::mem::forget(self.ops.remove(key));
        }
    }
}
