//! Buffered writes to stream sockets (and pipes): queue bytes, let the loop flush them as the
//! peer reads, and hear when to stop producing and when to go on.
//!
//! Every server writes this by hand otherwise: try the write, keep what the socket did not
//! take, install a write handler, flush on writability, remove the handler once empty, and
//! stop reading requests while too much is queued. A writer does it once. Its first write of
//! an empty queue goes straight to the socket (one `write`, no epoll change), so the common
//! case costs what a bare `write` does; only a socket whose buffer fills gets a write handler,
//! for as long as data waits.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use slab::Slab;

use crate::base::EventBase;
use crate::error;
use crate::io::{Direction, HandlerKind, Handlers, IoOptions, Trigger};
use crate::sys;
use crate::timer::Tick;

/// Queued bytes above which [`EventBase::write`] reports back-pressure, by default.
const DEFAULT_HIGH_WATER: usize = 1 << 20;
/// Pieces written by one `sendmsg` or `writev`.
const IOVECS: usize = 16;

/// How much a writer may hold before it asks its producer to pause.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    high_water: usize,
    low_water: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_HIGH_WATER / 4,
        }
    }
}

impl WriterOptions {
    /// High water 1 MiB, low water 256 KiB.
    pub fn new() -> WriterOptions {
        WriterOptions::default()
    }

    /// Above `bytes` queued, [`EventBase::write`] answers [`WriteStatus::Full`]; once the
    /// queue falls to the low-water mark again the writer's callback gets
    /// [`WriterEvent::Drained`]. The low-water mark becomes a quarter of it, unless set after.
    pub fn high_water(mut self, bytes: usize) -> WriterOptions {
        self.high_water = bytes;
        self.low_water = bytes / 4;
        self
    }

    /// The queue size at or below which a writer that was over its high-water mark reports
    /// [`WriterEvent::Drained`] (at most the high-water mark).
    pub fn low_water(mut self, bytes: usize) -> WriterOptions {
        self.low_water = bytes;
        self
    }
}

/// Identifies a writer of a base ([`EventBase::add_writer`]). A stale id (of a removed
/// writer, even if its slot was reused) is refused, never confused with a new writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WriterId {
    key: u32,
    gen: u32,
}

/// What a writer tells its callback.
#[derive(Debug)]
#[non_exhaustive]
pub enum WriterEvent {
    /// The queue went over the high-water mark and has now fallen to the low-water mark:
    /// resume producing (reading requests, reading the file...).
    Drained,
    /// Everything queued before [`EventBase::finish_writer`] has been written, and the writer
    /// is removed: close (or shut down) the socket now.
    Finished,
    /// A write failed (`EPIPE`, `ECONNRESET`: the peer is gone), or the fd's handlers were
    /// removed (`NotConnected`). The writer is removed with what was still queued.
    Failed(io::Error),
}

/// Whether a [`EventBase::write`] left the writer below its high-water mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a full writer asks its producer to pause until WriterEvent::Drained"]
pub enum WriteStatus {
    /// At or below the high-water mark: go on.
    Open,
    /// Over the high-water mark: stop producing until [`WriterEvent::Drained`].
    Full,
}

type OnEvent<S> = Box<dyn FnMut(&mut EventBase<S>, &mut S, WriterEvent)>;

struct Writer<S> {
    gen: u32,
    fd: RawFd,
    options: WriterOptions,
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk already written.
    written: usize,
    queued: usize,
    /// Went over the high-water mark; `Drained` is owed at the low-water mark.
    full: bool,
    finishing: bool,
    /// The write handler is installed.
    watching: bool,
    /// `fd` is a socket (until `sendmsg` says otherwise).
    socket: bool,
    /// Loop time when bytes last went to the socket (progress, for idle timeouts).
    sent_at: Tick,
    /// Taken out while it runs.
    on_event: Option<OnEvent<S>>,
}

/// The writers of a base.
pub(crate) struct Writers<S> {
    slab: Slab<Writer<S>>,
    next_gen: u32,
    /// The writer of each fd, by fd number: its slab key plus one (0: none; one writer per fd).
    by_fd: Vec<u32>,
    /// A writer is installing its own write handler (which `set_io_handler` must accept).
    pub(crate) installing: bool,
    /// Callbacks of writers ended by a failure, with the failure, until a timer tells them.
    ended: Slab<(OnEvent<S>, io::Error)>,
}

impl<S> Writers<S> {
    pub(crate) fn new() -> Self {
        Writers {
            slab: Slab::new(),
            next_gen: 0,
            by_fd: Vec::new(),
            ended: Slab::new(),
            installing: false,
        }
    }

    /// Records `key` (`None`: no writer) as the writer of `fd`.
    fn set_fd_writer(&mut self, fd: RawFd, key: Option<usize>) {
        let Ok(index) = usize::try_from(fd) else {
            return;
        };
        if index >= self.by_fd.len() {
            self.by_fd.resize(index + 1, 0);
        }
        self.by_fd[index] = key.map_or(0, |k| k as u32 + 1);
    }

    /// Whether `writer` went over its high-water mark and has not drained to its low-water
    /// mark since (`false` for a removed writer).
    #[inline]
    pub(crate) fn is_full(&self, writer: WriterId) -> bool {
        self.slab
            .get(writer.key as usize)
            .is_some_and(|w| w.gen == writer.gen && w.full)
    }

    /// The writer of `fd`, if it has one.
    pub(crate) fn of_fd(&self, fd: RawFd) -> Option<WriterId> {
        let key = *self.by_fd.get(usize::try_from(fd).ok()?)?;
        let key = key.checked_sub(1)?;
        let gen = self.slab.get(key as usize)?.gen;
        Some(WriterId { key, gen })
    }

    fn get_mut(&mut self, id: WriterId) -> io::Result<&mut Writer<S>> {
        match self.slab.get_mut(id.key as usize) {
            Some(w) if w.gen == id.gen => Ok(w),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{id:?} was removed (finished, failed or removed by hand)"),
            )),
        }
    }
}

impl<S> EventBase<S> {
    /// Makes a writer for the stream socket (or pipe) `fd`, which must be non-blocking.
    /// `on_event` hears when the queue has drained after being full, when a
    /// [`finish_writer`](Self::finish_writer) is done, and of errors found while flushing.
    ///
    /// If `on_event` panics, the writer is removed (as a panicking handler is) and the panic
    /// continues out of the run.
    ///
    /// On a socket the writer sends with `MSG_NOSIGNAL`: a peer that went away gives `EPIPE`
    /// (`Failed`), never a `SIGPIPE`. On a pipe it uses `writev`, which raises `SIGPIPE` when
    /// the reader is gone unless the program ignores it (Rust's `main` does; see
    /// [`ignore_sigpipe`](crate::ignore_sigpipe)).
    ///
    /// The writer installs a write handler on `fd` while it holds data, so `fd` must have no
    /// write handler of the caller's (one installed later is refused); it uses the trigger of
    /// `fd`'s read handler (edge if none), and follows a read handler installed later with
    /// another trigger. The writer does not own `fd`: remove it
    /// ([`remove_writer`](Self::remove_writer)) before closing `fd`, or let it finish;
    /// removing `fd`'s write handlers ([`remove_fd_handlers`](Self::remove_fd_handlers)) ends
    /// it too. A connection ([`add_conn`](Self::add_conn)) owns its socket and its queue, and
    /// spares all of this.
    ///
    /// Failures reach the callback, always: a failed flush, a failed direct write (which also
    /// returns the error to the writer's caller), and the end of a writer whose fd's handlers
    /// were removed all arrive as [`WriterEvent::Failed`].
    ///
    /// ```
    /// use std::io::Read;
    /// use aioloop::{EventBase, WriterEvent, WriterOptions};
    ///
    /// let (ours, mut theirs) = std::os::unix::net::UnixStream::pair()?;
    /// ours.set_nonblocking(true)?;
    /// let mut base = EventBase::<bool>::new()?;
    /// let writer = base.add_writer(&ours, WriterOptions::new(), |_, finished, event| {
    ///     *finished = matches!(event, WriterEvent::Finished);
    /// })?;
    /// let _ = base.write(writer, b"hello, ")?;
    /// let _ = base.write_owned(writer, b"world".to_vec())?;
    /// base.finish_writer(writer)?;
    /// base.set_exit_when_empty(true);
    /// let mut finished = false;
    /// base.run(&mut finished)?;
    /// assert!(finished);
    /// drop(ours);
    /// let mut got = String::new();
    /// theirs.read_to_string(&mut got)?;
    /// assert_eq!(got, "hello, world");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `AlreadyExists` if `fd` has a writer or a write handler of the caller's; `InvalidInput`
    /// for a negative fd, or a blocking one (a write larger than its buffer would stall the
    /// loop: make it non-blocking first); EBADF for an fd that is not open.
    pub fn add_writer<F>(
        &mut self,
        fd: &impl AsRawFd,
        options: WriterOptions,
        on_event: F,
    ) -> io::Result<WriterId>
    where
        F: FnMut(&mut EventBase<S>, &mut S, WriterEvent) + 'static,
    {
        let fd = fd.as_raw_fd();
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} is negative"),
            ));
        }
        let nonblocking = sys::net::is_nonblocking(fd)
            .map_err(|e| error::context(e, format!("fd {fd} cannot have a writer")))?;
        if !nonblocking {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fd {fd} is blocking: a write larger than its buffer would stall the loop; \
                     make it non-blocking first (set_nonblocking(true))"
                ),
            ));
        }
        if self.has_fd_handler(&fd, HandlerKind::Write) || self.writers.of_fd(fd).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "fd {fd} already has a writer or a write handler; a writer needs the write \
                     side to itself"
                ),
            ));
        }
        let writers = &mut self.writers;
        let gen = writers.next_gen;
        writers.next_gen = writers.next_gen.wrapping_add(1);
        writers.set_fd_writer(fd, Some(writers.slab.vacant_key()));
        let key = writers.slab.insert(Writer {
            gen,
            fd,
            options: WriterOptions {
                low_water: options.low_water.min(options.high_water),
                ..options
            },
            chunks: VecDeque::new(),
            written: 0,
            queued: 0,
            full: false,
            finishing: false,
            watching: false,
            socket: true,
            sent_at: self.now,
            on_event: Some(Box::new(on_event)),
        });
        Ok(WriterId {
            key: key as u32,
            gen,
        })
    }

    /// Queues a copy of `bytes` (or writes them at once, if nothing is queued and the socket
    /// takes them), and says whether the writer is now over its high-water mark.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `NotFound` for a removed writer; `InvalidInput` after
    /// [`finish_writer`](Self::finish_writer); the error of a direct write (`EPIPE`,
    /// `ECONNRESET`...), which removes the writer with its queue; its callback hears it too,
    /// as [`WriterEvent::Failed`], from a zero-delay timer.
    pub fn write(&mut self, writer: WriterId, bytes: &[u8]) -> io::Result<WriteStatus> {
        // The common case, kept short (it runs once per answer a server sends): nothing
        // queued, one send. What the socket leaves is queued without a second try; a
        // refused writer and an interrupted send take the general path.
        let now = self.now;
        if let Ok(w) = self.writers.get_mut(writer) {
            if w.queued == 0 && !w.finishing {
                let fd = w.fd;
                let total = bytes.len();
                w.sent_at = now;
                match put_one(fd, bytes, &mut w.socket) {
                    Ok(n) if n == total => return Ok(WriteStatus::Open),
                    Ok(n) => return self.queue_rest(writer, Bytes::Parts(&[bytes]), n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return self.queue_rest(writer, Bytes::Parts(&[bytes]), 0)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.write_failed(writer, fd, e)),
                }
            }
        }
        self.queue_write(writer, Bytes::Parts(&[bytes]))
    }

    /// Like [`write`](Self::write), for bytes in several pieces (a response head and its
    /// body): they go out in one `sendmsg` (or `writev`) when the queue is empty, and what the socket does
    /// not take is queued in order.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`write`](Self::write).
    pub fn write_vectored(&mut self, writer: WriterId, parts: &[&[u8]]) -> io::Result<WriteStatus> {
        self.queue_write(writer, Bytes::Parts(parts))
    }

    /// Like [`write`](Self::write), for a buffer the writer keeps instead of copying (a file
    /// chunk, a response body).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`write`](Self::write).
    pub fn write_owned(&mut self, writer: WriterId, bytes: Vec<u8>) -> io::Result<WriteStatus> {
        self.queue_write(writer, Bytes::Owned(bytes))
    }

    /// Loop time when `writer` last sent bytes (its progress), `None` for a removed writer.
    pub(crate) fn writer_sent_at(&self, writer: WriterId) -> Option<Tick> {
        match self.writers.slab.get(writer.key as usize) {
            Some(w) if w.gen == writer.gen => Some(w.sent_at),
            _ => None,
        }
    }

    /// Bytes queued and not yet written (0 for a removed writer).
    pub fn writer_queued(&self, writer: WriterId) -> usize {
        match self.writers.slab.get(writer.key as usize) {
            Some(w) if w.gen == writer.gen => w.queued,
            _ => 0,
        }
    }

    /// Asks the writer to write what is queued, then tell its callback
    /// [`WriterEvent::Finished`] and go away: the way to close a connection after its last
    /// response. Later writes are refused.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `NotFound` for a removed writer.
    pub fn finish_writer(&mut self, writer: WriterId) -> io::Result<()> {
        let w = self.writers.get_mut(writer)?;
        w.finishing = true;
        if w.queued == 0 {
            self.owe_finished(writer);
        }
        Ok(())
    }

    /// Removes `writer` now, with what it still holds; returns the number of bytes dropped,
    /// or `None` if it was already gone. Its callback is not called.
    pub fn remove_writer(&mut self, writer: WriterId) -> Option<usize> {
        self.writers.get_mut(writer).ok()?;
        let w = self.writers.slab.remove(writer.key as usize);
        self.writers.set_fd_writer(w.fd, None);
        if w.watching {
            self.remove_handlers(w.fd, Handlers::WRITE);
        }
        Some(w.queued)
    }

    fn queue_write(&mut self, writer: WriterId, bytes: Bytes<'_>) -> io::Result<WriteStatus> {
        let now = self.now;
        let w = self.writers.get_mut(writer)?;
        if w.finishing {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write after finish_writer: the writer only flushes what it holds",
            ));
        }
        let total = bytes.len();
        let mut skip = 0;
        if w.queued == 0 {
            let fd = w.fd;
            w.sent_at = now;
            skip = match write_now(fd, &bytes, total, &mut w.socket) {
                // The common case: the socket took it all, and nothing changes.
                Ok(n) if n == total => return Ok(WriteStatus::Open),
                Ok(n) => n,
                Err(e) => return Err(self.write_failed(writer, fd, e)),
            };
        }
        self.queue_rest(writer, bytes, skip)
    }

    /// A direct write to `fd` failed: the writer goes, with its queue, its callback hears
    /// `Failed` (as for a failed flush: one failure path), and the caller gets the error too.
    fn write_failed(&mut self, writer: WriterId, fd: RawFd, e: io::Error) -> io::Error {
        let copy = match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        };
        self.end_writer(
            writer,
            error::context(copy, format!("cannot write to fd {fd}")),
        );
        error::context(e, format!("cannot write to fd {fd}"))
    }

    /// Removes `writer` with its queue and tells its callback `Failed(e)` from a zero-delay
    /// timer (never from inside the call that failed, which may be the owner's callback).
    pub(crate) fn end_writer(&mut self, writer: WriterId, e: io::Error) {
        let Ok(w) = self.writers.get_mut(writer) else {
            return;
        };
        let on_event = w.on_event.take();
        self.remove_writer(writer);
        if let Some(on_event) = on_event {
            let key = self.writers.ended.insert((on_event, e));
            self.add_timer(std::time::Duration::ZERO, move |base, state, _| {
                let (mut on_event, e) = base.writers.ended.remove(key);
                base.guarded(|base| on_event(base, state, WriterEvent::Failed(e)), |_| {});
            });
        }
    }

    /// The write handler of `fd`, if it is a writer's: the writer, and whether it watches.
    pub(crate) fn writer_watching(&self, fd: RawFd) -> Option<WriterId> {
        let writer = self.writers.of_fd(fd)?;
        let w = self.writers.slab.get(writer.key as usize)?;
        w.watching.then_some(writer)
    }

    /// Takes the write handler of `writer` off its fd, for the fd's read handler to change
    /// the trigger; [`rewatch`](Self::rewatch) puts it back.
    pub(crate) fn unwatch(&mut self, writer: WriterId) {
        if let Ok(w) = self.writers.get_mut(writer) {
            w.watching = false;
            let fd = w.fd;
            self.remove_handlers(fd, Handlers::WRITE);
        }
    }

    /// Watches again for room to flush `writer`, with the trigger of its fd's read handler.
    pub(crate) fn rewatch(&mut self, writer: WriterId) {
        if self.writer_queued(writer) > 0 {
            if let Err(e) = self.watch_writability(writer) {
                self.end_writer(writer, e);
            }
        }
    }

    /// Queues `bytes` but their first `skip`, which went out already, and watches for room.
    fn queue_rest(
        &mut self,
        writer: WriterId,
        bytes: Bytes<'_>,
        mut skip: usize,
    ) -> io::Result<WriteStatus> {
        let total = bytes.len();
        let w = self.writers.get_mut(writer)?;
        w.queued += total - skip;
        match bytes {
            Bytes::Owned(mut vec) => {
                vec.drain(..skip);
                w.chunks.push_back(vec);
            }
            Bytes::Parts(parts) => {
                for part in parts {
                    let taken = skip.min(part.len());
                    skip -= taken;
                    if taken < part.len() {
                        append(&mut w.chunks, &part[taken..]);
                    }
                }
            }
        }
        let full = w.queued > w.options.high_water;
        w.full |= full;
        if !w.watching {
            self.watch_writability(writer)?;
        }
        match full {
            true => Ok(WriteStatus::Full),
            false => Ok(WriteStatus::Open),
        }
    }

    /// Installs the write handler that flushes `writer` while it holds data.
    fn watch_writability(&mut self, writer: WriterId) -> io::Result<()> {
        let w = self.writers.get_mut(writer)?;
        let fd = w.fd;
        w.watching = true;
        let trigger = self.fd_trigger(fd).unwrap_or(Trigger::Edge);
        let options = match trigger {
            Trigger::Edge => IoOptions::new().edge(),
            Trigger::Level => IoOptions::new().level(),
        };
        self.writers.installing = true;
        let installed =
            self.set_io_handler(&fd, Direction::Write, options, move |base, state, _| {
                base.flush_writer(writer, state);
            });
        self.writers.installing = false;
        if installed.is_err() {
            self.writers.get_mut(writer)?.watching = false;
        }
        installed
    }

    /// The socket is writable: write what is queued, then tell the callback what it owes.
    fn flush_writer(&mut self, writer: WriterId, state: &mut S) {
        let now = self.now;
        let Ok(w) = self.writers.get_mut(writer) else {
            return;
        };
        let before = w.queued;
        let result = flush(w);
        if w.queued < before {
            w.sent_at = now;
        }
        let (empty, drained) = (w.queued == 0, w.full && w.queued <= w.options.low_water);
        let (fd, finishing) = (w.fd, w.finishing);
        if drained {
            w.full = false;
        }
        if empty && result.is_ok() {
            w.watching = false;
        }
        match result {
            Err(e) => {
                let on_event = w.on_event.take();
                self.remove_writer(writer);
                if let Some(mut on_event) = on_event {
                    let e = error::context(e, format!("cannot write to fd {fd}"));
                    self.guarded(|base| on_event(base, state, WriterEvent::Failed(e)), |_| {});
                }
                return;
            }
            Ok(()) if empty => drop(self.remove_handlers(fd, Handlers::WRITE)),
            Ok(()) => {}
        }
        if drained {
            self.tell_writer_owner(writer, state, WriterEvent::Drained);
        }
        if empty && finishing {
            self.owe_finished(writer);
        }
    }

    /// `Finished` is told from a zero-delay timer, never from inside the call that finished
    /// (which may be the owner's own callback).
    fn owe_finished(&mut self, writer: WriterId) {
        self.add_timer(std::time::Duration::ZERO, move |base, state, _| {
            let Ok(w) = base.writers.get_mut(writer) else {
                return;
            };
            let on_event = w.on_event.take();
            base.remove_writer(writer);
            if let Some(mut on_event) = on_event {
                base.guarded(|base| on_event(base, state, WriterEvent::Finished), |_| {});
            }
        });
    }

    fn tell_writer_owner(&mut self, writer: WriterId, state: &mut S, event: WriterEvent) {
        let Some(mut on_event) = self
            .writers
            .get_mut(writer)
            .ok()
            .and_then(|w| w.on_event.take())
        else {
            return;
        };
        // A panic removes the writer, as it removes a panicking handler.
        let cleanup = |base: &mut Self| {
            base.remove_writer(writer);
        };
        self.guarded(|base| on_event(base, state, event), cleanup);
        if let Ok(w) = self.writers.get_mut(writer) {
            w.on_event = Some(on_event);
        }
    }
}

/// Bytes handed to a writer: borrowed pieces (copied if they must wait), or a buffer it keeps.
enum Bytes<'a> {
    Parts(&'a [&'a [u8]]),
    Owned(Vec<u8>),
}

impl Bytes<'_> {
    fn len(&self) -> usize {
        match self {
            Bytes::Parts(parts) => parts.iter().map(|p| p.len()).sum(),
            Bytes::Owned(v) => v.len(),
        }
    }
}

/// Writes as much of `bytes` as `fd` takes now (one `sendmsg` or `writev` when it takes it
/// all); stops at `WouldBlock`.
fn write_now(fd: RawFd, bytes: &Bytes<'_>, total: usize, socket: &mut bool) -> io::Result<usize> {
    let owned;
    let parts: &[&[u8]] = match bytes {
        Bytes::Parts(parts) => parts,
        Bytes::Owned(vec) => {
            owned = [vec.as_slice()];
            &owned
        }
    };
    let mut done = 0;
    while done < total {
        let written = match parts {
            // The common case, without building an iovec array.
            [one] => put_one(fd, &one[done..], socket),
            _ => {
                let mut slices = [io::IoSlice::new(&[]); IOVECS];
                let count = gather(parts.iter().copied(), done, &mut slices);
                put(fd, &slices[..count], socket)
            }
        };
        match written {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes queued chunks, up to [`IOVECS`] at a time, until the queue is empty or `fd` is
/// full.
fn flush<S>(w: &mut Writer<S>) -> io::Result<()> {
    while w.queued > 0 {
        let mut slices = [io::IoSlice::new(&[]); IOVECS];
        let pieces = w.chunks.iter().map(Vec::as_slice);
        let count = gather(pieces, w.written, &mut slices);
        let mut n = match put(w.fd, &slices[..count], &mut w.socket) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.queued -= n;
        while n > 0 {
            let left = w.chunks[0].len() - w.written;
            if n < left {
                w.written += n;
                break;
            }
            n -= left;
            w.written = 0;
            w.chunks.pop_front();
        }
    }
    Ok(())
}

/// Fills `slices` with `pieces` from byte `skip` on, up to [`IOVECS`] of them; returns how
/// many it filled.
fn gather<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
    mut skip: usize,
    slices: &mut [io::IoSlice<'a>; IOVECS],
) -> usize {
    let mut count = 0;
    for piece in pieces {
        if count == IOVECS {
            break;
        }
        let taken = skip.min(piece.len());
        skip -= taken;
        if taken < piece.len() {
            slices[count] = io::IoSlice::new(&piece[taken..]);
            count += 1;
        }
    }
    count
}

/// Writes `slices` to `fd`: `sendmsg` with `MSG_NOSIGNAL` on a socket, so that a peer that
/// left gives `EPIPE` instead of a `SIGPIPE`; `writev` on anything else (a pipe), once
/// `sendmsg` has said `ENOTSOCK`.
fn put(fd: RawFd, slices: &[io::IoSlice<'_>], socket: &mut bool) -> io::Result<usize> {
    if *socket {
        match sys::sendmsg(fd, slices) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => *socket = false,
            sent => return sent,
        }
    }
    sys::writev(fd, slices)
}

/// [`put`] for one piece: `send` or `write`.
fn put_one(fd: RawFd, bytes: &[u8], socket: &mut bool) -> io::Result<usize> {
    if *socket {
        match sys::send(fd, bytes) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => *socket = false,
            sent => return sent,
        }
    }
    sys::write(fd, bytes)
}

/// Appends a copy of `bytes`, into the last chunk's spare capacity when it fits, so that many
/// small writes do not make many small allocations.
fn append(chunks: &mut VecDeque<Vec<u8>>, bytes: &[u8]) {
    const CHUNK: usize = 16 << 10;
    match chunks.back_mut() {
        Some(last) if last.capacity() - last.len() >= bytes.len() => last.extend_from_slice(bytes),
        _ => {
            let mut chunk = Vec::with_capacity(bytes.len().max(CHUNK));
            chunk.extend_from_slice(bytes);
            chunks.push_back(chunk);
        }
    }
}
