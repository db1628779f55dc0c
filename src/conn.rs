//! Connections the loop owns: a stream socket, its handler, its write queue and its timers,
//! under one id.
//!
//! With bare fd handlers a server keeps the socket, installs a read handler, adds a writer on
//! the same fd, keys its state by an id with a generation, and tears all of it down in the
//! right order; every step missed is a bug (a writer that outlives its socket writes to the
//! next owner of the fd number). A connection ([`EventBase::add_conn`], or
//! [`EventBase::serve`] for a listener) does all of it:
//!
//! * it owns the fd (made non-blocking) and closes it exactly once, after its handler, write
//!   queue and timers are gone ([`EventBase::conn_close`]);
//! * reads hand the handler the bytes ([`ConnEvent::Data`]) from one buffer shared by every
//!   connection of the base: no allocation per event. Reads are edge-triggered and stop at a
//!   short read, unless the event says the peer also closed its side (`READ_CLOSED`), so the
//!   end of the stream is never missed;
//! * the peer's end of stream ([`ConnEvent::PeerShutdown`]) and errors
//!   ([`ConnEvent::Closed`]) are reported whether or not the handler cares about its input;
//! * writes go through a queue with high and low marks, and **back-pressure is the default**:
//!   over the high mark the connection stops reading (the peer's data waits in the kernel,
//!   and TCP slows the peer down), and it reads again at the low mark ([`ConnEvent::Drained`]);
//! * [`EventBase::conn_finish`] sends what is queued, shuts the write side down, reads and
//!   drops what the peer still sends for a short while (a *lingering close*: closing with
//!   unread data would reset the connection and could destroy the response's tail), then
//!   closes;
//! * an idle deadline (no byte read, and no byte leaving the queue) and a per-message
//!   deadline ([`EventBase::conn_set_deadline`]);
//! * [`EventBase::shut_down`] ends a server gracefully in one call.
//!
//! A [`ConnId`] carries a 64-bit generation, so an id kept by a late callback (a file read that
//! completes after its client left) never reaches a later connection.
//!
//! Every event but `Data` may call any method of the base; nothing is ever told from inside
//! the call that caused it (a failed write is told later, as [`ConnEvent::Closed`]), so the
//! handler is never re-entered.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use slab::Slab;

use crate::accept::{close_listener, Acceptor};
use crate::base::EventBase;
use crate::io::Readiness;
use crate::sys;
use crate::timer::{self, Tick, TimerId};
use crate::writer::{WriteStatus, WriterEvent, WriterId, WriterOptions};

/// Bytes read per `read` call, into the buffer all connections of a base share.
const READ_BUFFER: usize = 64 << 10;

/// Identifies a connection of a base. Ids are never reused: one of a closed connection is
/// refused (`NotFound`) or ignored, never taken for a later connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    key: u32,
    gen: u64,
}

/// How a connection queues, times out and closes.
#[derive(Clone, Copy, Debug)]
pub struct ConnOptions {
    writer: WriterOptions,
    idle: Option<Duration>,
    linger: Duration,
    nodelay: bool,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            writer: WriterOptions::new(),
            idle: None,
            linger: Duration::from_secs(2),
            nodelay: false,
        }
    }
}

impl ConnOptions {
    /// High mark 1 MiB, low mark 256 KiB, no idle timeout, lingering close of up to 2 s,
    /// Nagle's algorithm on.
    pub fn new() -> ConnOptions {
        ConnOptions::default()
    }

    /// Over `bytes` queued, [`EventBase::conn_write`] answers [`WriteStatus::Full`] and the
    /// connection stops reading; the low mark becomes a quarter of it, unless set after.
    pub fn high_water(mut self, bytes: usize) -> ConnOptions {
        self.writer = self.writer.high_water(bytes);
        self
    }

    /// The queue size at which a connection that was over its high mark reads again and
    /// tells [`ConnEvent::Drained`].
    pub fn low_water(mut self, bytes: usize) -> ConnOptions {
        self.writer = self.writer.low_water(bytes);
        self
    }

    /// After `idle` without progress (no byte read, no byte of the queue taken by the
    /// socket, no byte of the socket's send buffer taken by the peer), the handler gets [`ConnEvent::Timeout`]`(`[`ConnTimeout::Idle`]`)`. A slow but
    /// steady reader of a long answer is progress, not idleness.
    pub fn idle_timeout(mut self, idle: Duration) -> ConnOptions {
        self.idle = Some(idle);
        self
    }

    /// How long [`EventBase::conn_finish`] keeps reading (and dropping) what the peer still
    /// sends, after the write side is shut, before it closes anyway.
    pub fn linger(mut self, linger: Duration) -> ConnOptions {
        self.linger = linger;
        self
    }

    /// Sets `TCP_NODELAY` (ignored on sockets that are not TCP): small answers leave at once
    /// instead of waiting for the previous one's acknowledgement.
    pub fn nodelay(mut self, nodelay: bool) -> ConnOptions {
        self.nodelay = nodelay;
        self
    }
}

/// Which deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnTimeout {
    /// No progress for the idle timeout ([`ConnOptions::idle_timeout`]).
    Idle,
    /// The deadline of [`EventBase::conn_set_deadline`].
    Deadline,
}

/// What a connection tells its handler.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnEvent<'a> {
    /// The connection was accepted by [`EventBase::serve`] (the first event; its peer's
    /// address is [`conn_peer`](EventBase::conn_peer)). Close it here to refuse it.
    Opened,
    /// Bytes from the peer. They are lent from a buffer the next read reuses: copy what must
    /// be kept.
    Data(&'a [u8]),
    /// The peer shut its write side (the end of the stream): no more `Data`. The connection
    /// can still be written to; [`conn_finish`](EventBase::conn_finish) it once the answer is
    /// queued.
    PeerShutdown,
    /// The queue went over the high mark and is back at the low mark: the connection reads
    /// again; a producer that paused (a file being sent) goes on.
    Drained,
    /// A deadline passed. Unless the handler calls [`conn_keep`](EventBase::conn_keep), the
    /// connection is closed right after (with `Closed(Err(TimedOut))`).
    Timeout(ConnTimeout),
    /// [`shut_down`](EventBase::shut_down) was called. Unless the handler calls
    /// [`conn_keep`](EventBase::conn_keep) (to finish an answer in progress first), the
    /// connection is finished right after ([`conn_finish`](EventBase::conn_finish)).
    ShuttingDown,
    /// The connection is closed, its fd too; the last event. `Ok` after
    /// [`conn_finish`](EventBase::conn_finish) completed; the error otherwise (a failed read
    /// or write, a deadline). Not told for [`conn_close`](EventBase::conn_close).
    Closed(io::Result<()>),
}

/// Reading paused by the owner ([`EventBase::conn_pause_reading`]).
const PAUSED: u8 = 1;
/// The peer's end of stream was read.
const READ_CLOSED: u8 = 1 << 2;
/// [`EventBase::conn_finish`] was called: no more writes, no more `Data`.
const FINISHING: u8 = 1 << 3;
/// The write side is shut; what the peer sends is dropped until it closes.
const LINGERING: u8 = 1 << 4;

type Handler<S> = Box<dyn FnMut(&mut EventBase<S>, &mut S, ConnId, ConnEvent<'_>)>;

struct Conn<S> {
    gen: u64,
    fd: OwnedFd,
    writer: WriterId,
    options: ConnOptions,
    /// Taken out while it runs.
    handler: Option<Handler<S>>,
    /// [`PAUSED`], [`READ_CLOSED`], [`FINISHING`], [`LINGERING`]: one byte, so that the read
    /// path tests them in one instruction. Back-pressure is the writer's state: over its high
    /// mark until it has drained to its low mark.
    flags: u8,
    /// The handler cancelled the default action of the event it is being told.
    kept: bool,
    /// The peer's IP address, for a connection accepted by [`EventBase::serve`].
    peer: Option<SocketAddr>,
    /// Bytes handed to [`EventBase::conn_write`] and its kin, all told.
    handed: u64,
    /// Of those, the bytes that had left the queue and the kernel's send buffer at the last
    /// idle check (progress, when more): counted from the total, so that a queue refilled
    /// meanwhile does not hide what left.
    delivered: u64,
    /// Loop time of the last read event (progress, for the idle timeout).
    read_at: Tick,
    idle_timer: Option<TimerId>,
    deadline: Option<TimerId>,
    /// A zero-delay timer that will read (resumed reading, lingering).
    read_timer: Option<TimerId>,
}

/// The connections of a base.
pub(crate) struct Conns<S> {
    slab: Slab<Conn<S>>,
    next_gen: u64,
    /// The read buffer all connections share; `None` while lent to a handler (and before the
    /// first read).
    buf: Option<Box<[u8; READ_BUFFER]>>,
    /// The listeners of [`EventBase::serve`], for [`EventBase::shut_down`].
    acceptors: Vec<Acceptor>,
    shutting_down: bool,
    /// The timer that ends [`EventBase::shut_down`]'s grace period, while it runs.
    grace: Option<TimerId>,
    /// The connection whose handler is being told `Data` (without a catch_unwind).
    calling: Option<ConnId>,
}

impl<S> Conn<S> {
    /// Whether reading goes on (not paused, not finishing or done), the queue aside.
    fn reads(&self) -> bool {
        self.flags & (PAUSED | FINISHING | READ_CLOSED | LINGERING) == 0
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Sets or clears `flag`, and says whether it was set.
    fn set(&mut self, flag: u8, on: bool) -> bool {
        let was = self.has(flag);
        self.flags = if on {
            self.flags | flag
        } else {
            self.flags & !flag
        };
        was
    }
}

impl<S> Conns<S> {
    pub(crate) fn new() -> Self {
        Conns {
            slab: Slab::new(),
            next_gen: 0,
            buf: None,
            acceptors: Vec::new(),
            shutting_down: false,
            grace: None,
            calling: None,
        }
    }

    #[inline]
    fn get(&mut self, id: ConnId) -> Option<&mut Conn<S>> {
        self.slab
            .get_mut(id.key as usize)
            .filter(|c| c.gen == id.gen)
    }
}

#[cold]
fn first_buffer() -> Box<[u8; READ_BUFFER]> {
    let buf = vec![0; READ_BUFFER].into_boxed_slice();
    buf.try_into()
        .unwrap_or_else(|_| unreachable!("READ_BUFFER bytes"))
}

fn gone(id: ConnId) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{id:?} is closed (by conn_close, a finish, an error or a deadline)"),
    )
}

impl<S> EventBase<S> {
    /// Makes a connection of `stream` (a `TcpStream`, a `UnixStream`, mio's or std's, or any
    /// stream fd as an `OwnedFd`), which the base owns from now on; it is made non-blocking.
    /// `handler` hears its [`ConnEvent`]s.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use aioloop::{ConnEvent, ConnOptions, EventBase};
    ///
    /// let (ours, mut theirs) = std::os::unix::net::UnixStream::pair()?;
    /// let mut base = EventBase::<Vec<u8>>::new()?;
    /// base.add_conn(ours, ConnOptions::new(), |base, got, id, event| match event {
    ///     ConnEvent::Data(bytes) => {
    ///         got.extend_from_slice(bytes);
    ///         let _ = base.conn_write(id, bytes); // echo
    ///     }
    ///     ConnEvent::PeerShutdown => drop(base.conn_finish(id)),
    ///     _ => {}
    /// })?;
    /// theirs.write_all(b"ping")?;
    /// theirs.shutdown(std::net::Shutdown::Write)?;
    /// base.set_exit_when_empty(true);
    /// let mut got = Vec::new();
    /// base.run(&mut got)?;
    /// let mut echoed = String::new();
    /// theirs.read_to_string(&mut echoed)?;
    /// assert_eq!((got.as_slice(), echoed.as_str()), (&b"ping"[..], "ping"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `InvalidInput` for a socket that is listening ([`serve`](Self::serve) takes those) or
    /// not a stream (UDP); as for [`set_io_handler`](Self::set_io_handler) (a file epoll
    /// cannot watch, the fd number already watched by another handler). The stream is closed
    /// then.
    pub fn add_conn<F>(
        &mut self,
        stream: impl Into<OwnedFd>,
        options: ConnOptions,
        handler: F,
    ) -> io::Result<ConnId>
    where
        F: FnMut(&mut EventBase<S>, &mut S, ConnId, ConnEvent<'_>) + 'static,
    {
        let fd = stream.into();
        sys::net::check_stream(fd.as_raw_fd())?;
        self.add_boxed_conn(fd, options, Box::new(handler))
    }

    fn add_boxed_conn(
        &mut self,
        fd: OwnedFd,
        options: ConnOptions,
        handler: Handler<S>,
    ) -> io::Result<ConnId> {
        let raw = fd.as_raw_fd();
        sys::net::set_nonblocking(raw)?;
        if options.nodelay {
            let _ = sys::net::set_nodelay(raw);
        }
        let id = ConnId {
            key: u32::try_from(self.conns.slab.vacant_key())
                .map_err(|_| io::Error::other("too many connections"))?,
            gen: self.conns.next_gen,
        };
        self.set_conn_handler(raw, id)?;
        let writer = self.add_writer(&raw, options.writer, move |base, state, event| {
            base.conn_writer_event(id, state, event)
        });
        let writer = match writer {
            Ok(writer) => writer,
            Err(e) => {
                self.remove_handlers(raw, crate::Handlers::ALL);
                return Err(e);
            }
        };
        self.conns.next_gen += 1;
        let key = self.conns.slab.insert(Conn {
            gen: id.gen,
            fd,
            writer,
            options,
            handler: Some(handler),
            flags: 0,
            peer: None,
            handed: 0,
            delivered: 0,
            kept: false,
            read_at: self.now,
            idle_timer: None,
            deadline: None,
            read_timer: None,
        });
        debug_assert_eq!(key, id.key as usize);
        if let Some(idle) = options.idle {
            self.arm_idle(id, idle);
        }
        Ok(id)
    }

    /// Accepts every connection that reaches `listener` (TCP or Unix, any listening stream
    /// socket), makes each a connection with `options` and a clone of `handler`, and tells
    /// the handler [`ConnEvent::Opened`] first. The accept loop is that of
    /// [`accept_connections`](Self::accept_connections): batches, and a back-off when out of
    /// fds or under the fd reserve ([`Acceptor::set_fd_reserve`]).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`set_io_handler`](Self::set_io_handler) (the listener's registration).
    pub fn serve<H>(
        &mut self,
        listener: impl Into<OwnedFd>,
        options: ConnOptions,
        handler: H,
    ) -> io::Result<Acceptor>
    where
        H: FnMut(&mut EventBase<S>, &mut S, ConnId, ConnEvent<'_>) + Clone + 'static,
    {
        let acceptor = self.accept_fds(listener.into(), move |base, state, fd, peer| match base
            .add_boxed_conn(fd, options, Box::new(handler.clone()))
        {
            Ok(id) => {
                if let Some(c) = base.conns.get(id) {
                    c.peer = peer;
                }
                base.tell(id, state, ConnEvent::Opened);
            }
            Err(e) => log::warn!("cannot make a connection of an accepted socket: {e}"),
        })?;
        self.conns.acceptors.push(acceptor.clone());
        Ok(acceptor)
    }

    /// Queues a copy of `bytes` (or writes them at once when nothing is queued), and says
    /// whether the queue is now over its high mark: then the connection has stopped reading,
    /// and a producer should pause until [`ConnEvent::Drained`].
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `NotFound` for a closed connection; `InvalidInput` after
    /// [`conn_finish`](Self::conn_finish); the socket's error (`EPIPE`, `ECONNRESET`): the
    /// connection then closes, and its handler hears it as `Closed(Err(..))`, the one place
    /// where failures arrive.
    pub fn conn_write(&mut self, id: ConnId, bytes: &[u8]) -> io::Result<WriteStatus> {
        let writer = self.writable(id, bytes.len())?;
        self.write(writer, bytes)
    }

    /// Like [`conn_write`](Self::conn_write) for bytes in pieces (a head and a body), sent in
    /// one `sendmsg` when nothing is queued.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`conn_write`](Self::conn_write).
    pub fn conn_write_vectored(&mut self, id: ConnId, parts: &[&[u8]]) -> io::Result<WriteStatus> {
        let writer = self.writable(id, parts.iter().map(|p| p.len()).sum())?;
        self.write_vectored(writer, parts)
    }

    /// Like [`conn_write`](Self::conn_write) for a buffer the queue keeps instead of copying.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`conn_write`](Self::conn_write).
    pub fn conn_write_owned(&mut self, id: ConnId, bytes: Vec<u8>) -> io::Result<WriteStatus> {
        let writer = self.writable(id, bytes.len())?;
        self.write_owned(writer, bytes)
    }

    /// The writer of `id`, about to be handed `len` bytes.
    #[inline]
    fn writable(&mut self, id: ConnId, len: usize) -> io::Result<WriterId> {
        match self.conns.get(id) {
            Some(c) if c.has(FINISHING) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{id:?}: write after conn_finish"),
            )),
            Some(c) => {
                c.handed += len as u64;
                Ok(c.writer)
            }
            None => Err(gone(id)),
        }
    }

    /// Bytes queued on the connection and not yet taken by the socket (0 once closed).
    pub fn conn_queued(&self, id: ConnId) -> usize {
        match self.conns.slab.get(id.key as usize) {
            Some(c) if c.gen == id.gen => self.writer_queued(c.writer),
            _ => 0,
        }
    }

    /// The peer's IP address, for a TCP connection accepted by [`serve`](Self::serve);
    /// `None` otherwise (a Unix socket, [`add_conn`](Self::add_conn), a closed connection).
    pub fn conn_peer(&self, id: ConnId) -> Option<SocketAddr> {
        match self.conns.slab.get(id.key as usize) {
            Some(c) if c.gen == id.gen => c.peer,
            _ => None,
        }
    }

    /// Whether `id` is an open connection.
    pub fn conn_is_open(&self, id: ConnId) -> bool {
        self.conns
            .slab
            .get(id.key as usize)
            .is_some_and(|c| c.gen == id.gen)
    }

    /// The connection's fd, for socket options; `None` once closed. Never close it.
    pub fn conn_fd(&self, id: ConnId) -> Option<BorrowedFd<'_>> {
        match self.conns.slab.get(id.key as usize) {
            Some(c) if c.gen == id.gen => Some(c.fd.as_fd()),
            _ => None,
        }
    }

    /// Sends what is queued, then shuts the write side down, reads and drops what the peer
    /// still sends until it closes (at most the linger time of [`ConnOptions::linger`]), and
    /// closes; the handler then hears `Closed(Ok(()))`. No more `Data` is told, and writes are
    /// refused.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `NotFound` for a closed connection.
    pub fn conn_finish(&mut self, id: ConnId) -> io::Result<()> {
        let c = self.conns.get(id).ok_or_else(|| gone(id))?;
        if c.set(FINISHING, true) {
            return Ok(());
        }
        let writer = c.writer;
        // A writer already gone has failed: its Closed(Err) is on its way.
        let _ = self.finish_writer(writer);
        Ok(())
    }

    /// Closes the connection now: its handler, queue (dropped), timers and fd go at once. The
    /// handler is not told. Returns the bytes dropped from the queue, `None` if it was closed.
    pub fn conn_close(&mut self, id: ConnId) -> Option<usize> {
        let (c, dropped) = self.remove_conn(id)?;
        drop(c);
        Some(dropped)
    }

    /// Stops reading from the connection (`true`) or reads again (`false`): while paused, what
    /// the peer sends waits in the kernel, and TCP slows the peer down. Back-pressure pauses
    /// reading by itself; this is for a handler that holds all the input it can.
    pub fn conn_pause_reading(&mut self, id: ConnId, paused: bool) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let was = c.set(PAUSED, paused);
        if was && !paused {
            self.owe_read(id);
        }
    }

    /// Sets (or with `None` clears) the connection's deadline: after `after` the handler gets
    /// [`ConnEvent::Timeout`]`(`[`ConnTimeout::Deadline`]`)`, activity or not (a deadline for
    /// a request head, for a whole exchange).
    ///
    /// Ignored once the connection lingers (its answer is out after
    /// [`conn_finish`](Self::conn_finish)): the linger time ends it then.
    pub fn conn_set_deadline(&mut self, id: ConnId, after: Option<Duration>) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        if c.has(LINGERING) {
            return; // `deadline` holds the linger timer
        }
        if let Some(timer) = c.deadline.take() {
            self.cancel_timer(timer);
        }
        if let Some(after) = after {
            let timer = self.add_timer(after, move |base, state, _| {
                if let Some(c) = base.conns.get(id) {
                    c.deadline = None;
                    base.timed_out(id, state, ConnTimeout::Deadline);
                }
            });
            self.set_timer_ref(timer, false);
            if let Some(c) = self.conns.get(id) {
                c.deadline = Some(timer);
            }
        }
    }

    /// Cancels the default action of the [`ConnEvent::Timeout`] or
    /// [`ConnEvent::ShuttingDown`] being told (close, finish), and counts as progress for the
    /// idle timeout: the handler has a reason to keep the connection (an answer waits on the
    /// server's own file system, say).
    pub fn conn_keep(&mut self, id: ConnId) {
        let now = self.now;
        if let Some(c) = self.conns.get(id) {
            c.kept = true;
            c.read_at = now;
        }
    }

    /// Ends the server gracefully: every listener of [`serve`](Self::serve) is closed, every
    /// connection is told [`ConnEvent::ShuttingDown`] (and finished, unless its handler keeps
    /// it), and the run ends ([`exit`](Self::exit)) once the last connection has closed, or
    /// after `grace`, when those left are closed: `Closed(Err(TimedOut))`, or `Closed(Ok(()))`
    /// for one whose answer is out and that only lingers. Once done, it leaves nothing behind:
    /// the base may run on, and be shut down again.
    pub fn shut_down(&mut self, grace: Duration) {
        if std::mem::replace(&mut self.conns.shutting_down, true) {
            return;
        }
        for acceptor in std::mem::take(&mut self.conns.acceptors) {
            close_listener(self, &acceptor.shared);
        }
        let timer = self.add_timer(Duration::ZERO, |base, state, _| {
            if !base.conns.shutting_down {
                return; // already done (the last connection closed first)
            }
            for id in base.conn_ids() {
                if base.conns.get(id).is_some_and(|c| !c.has(FINISHING))
                    && base.tell_default(id, state, ConnEvent::ShuttingDown)
                {
                    let _ = base.conn_finish(id);
                }
            }
            base.exit_if_done();
        });
        self.set_timer_ref(timer, false);
        let timer = self.add_timer(grace, |base, state, _| {
            (base.conns.grace, base.conns.shutting_down) = (None, false);
            for id in base.conn_ids() {
                // A lingering connection's answer is out: only the peer's close was awaited.
                let result = match base.conns.get(id).is_some_and(|c| c.has(LINGERING)) {
                    true => Ok(()),
                    false => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the shutdown's grace period ended",
                    )),
                };
                base.end_conn(id, state, result);
            }
            base.exit();
        });
        self.set_timer_ref(timer, false);
        self.conns.grace = Some(timer);
    }

    /// The number of open connections.
    pub fn conn_count(&self) -> usize {
        self.conns.slab.len()
    }

    fn conn_ids(&self) -> Vec<ConnId> {
        let slab = &self.conns.slab;
        slab.iter()
            .map(|(key, c)| ConnId {
                key: key as u32,
                gen: c.gen,
            })
            .collect()
    }

    fn exit_if_done(&mut self) {
        if self.conns.shutting_down && self.conns.slab.is_empty() {
            // Done: neither the grace timer nor a later emptied base may end a later run.
            self.conns.shutting_down = false;
            if let Some(timer) = self.conns.grace.take() {
                self.cancel_timer(timer);
            }
            self.exit();
        }
    }

    /// The connection's fd is readable (or closed, or in error): reads and tells `Data` until
    /// the socket is drained or reading stops.
    pub(crate) fn conn_readable(&mut self, id: ConnId, state: &mut S, ready: Readiness) {
        let now = self.now;
        let Some(c) = self.conns.get(id) else {
            return;
        };
        if !c.reads() || self.writers.is_full(c.writer) {
            // The data waits (an error shows in the next read or write), or is dropped. Not
            // progress: a peer that trickles bytes it knows are not read is idle.
            return self.not_reading(id, state);
        }
        c.read_at = now;
        let fd = c.fd.as_raw_fd();
        let Some(mut handler) = c.handler.take() else {
            return;
        };
        let mut buf = match self.conns.buf.take() {
            Some(buf) => buf,
            None => first_buffer(),
        };
        // The handler runs without a catch_unwind of its own, for speed: if it panics, the
        // run's catch closes the connection named here (`recover_from_panic`).
        self.conns.calling = Some(id);
        let end = loop {
            let n = match sys::net::recv(fd, &mut buf[..]) {
                Ok(0) => break Some(Ok(())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(Err(e)),
            };
            self.metrics.callbacks += 1;
            handler(self, state, id, ConnEvent::Data(&buf[..n]));
            // A short read drained the socket: data arriving later makes a new edge. Not
            // when the peer has also closed: its end of stream came in the same edge, and
            // only the next read (returning 0) reports it.
            if n < buf.len() && !ready.is_read_closed() {
                break None;
            }
            match self.conns.get(id) {
                Some(c) if c.reads() && !self.writers.is_full(c.writer) => {}
                _ => break None,
            }
        };
        self.conns.calling = None;
        self.conns.buf = Some(buf);
        if let Some(c) = self.conns.get(id) {
            c.handler = Some(handler);
        }
        if let Some(end) = end {
            self.read_ended(id, state, end);
        }
    }

    /// The stream ended (`Ok`) or failed.
    #[cold]
    #[inline(never)]
    fn read_ended(&mut self, id: ConnId, state: &mut S, end: io::Result<()>) {
        match end {
            Ok(()) => {
                if let Some(c) = self.conns.get(id) {
                    c.set(READ_CLOSED, true);
                }
                self.tell(id, state, ConnEvent::PeerShutdown);
            }
            Err(e) => self.end_conn(id, state, Err(e)),
        }
    }

    /// A read event while not reading: lingering, drop what came.
    #[cold]
    #[inline(never)]
    fn not_reading(&mut self, id: ConnId, state: &mut S) {
        if self.conns.get(id).is_some_and(|c| c.has(LINGERING)) {
            self.linger_read(id, state);
        }
    }

    /// A run ended in a panic: close the connection whose handler was running unguarded.
    pub(crate) fn recover_from_panic(&mut self) {
        if let Some(id) = self.conns.calling.take() {
            self.conn_close(id);
        }
    }

    /// Reads again from a zero-delay timer (never from inside the caller, which may be a
    /// handler lent the read buffer).
    fn owe_read(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        if c.read_timer.is_some() {
            return;
        }
        let timer = self.add_timer(Duration::ZERO, move |base, state, _| {
            if let Some(c) = base.conns.get(id) {
                c.read_timer = None;
                base.conn_readable(id, state, Readiness::READABLE | Readiness::READ_CLOSED);
            }
        });
        self.set_timer_ref(timer, false);
        if let Some(c) = self.conns.get(id) {
            c.read_timer = Some(timer);
        }
    }

    /// Lingering close: drops what the peer sends until it closes.
    fn linger_read(&mut self, id: ConnId, state: &mut S) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let fd = c.fd.as_raw_fd();
        let mut sink = [0u8; 4096];
        loop {
            match sys::net::recv(fd, &mut sink) {
                Ok(0) => return self.end_conn(id, state, Ok(())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The answer left; a reset now changes nothing for it.
                Err(_) => return self.end_conn(id, state, Ok(())),
            }
        }
    }

    fn conn_writer_event(&mut self, id: ConnId, state: &mut S, event: WriterEvent) {
        match event {
            WriterEvent::Drained => {
                if self.tell(id, state, ConnEvent::Drained) {
                    self.owe_read(id);
                }
            }
            WriterEvent::Finished => self.flushed(id, state),
            WriterEvent::Failed(e) => self.end_conn(id, state, Err(e)),
        }
    }

    /// Everything queued before `conn_finish` is out: shut the write side, then linger.
    fn flushed(&mut self, id: ConnId, state: &mut S) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let (fd, linger) = (c.fd.as_raw_fd(), c.options.linger);
        if c.has(READ_CLOSED) || sys::net::shutdown_write(fd).is_err() || linger.is_zero() {
            return self.end_conn(id, state, Ok(()));
        }
        c.set(LINGERING, true);
        if let Some(timer) = c.deadline.take() {
            self.cancel_timer(timer);
        }
        let timer = self.add_timer(linger, move |base, state, _| {
            if let Some(c) = base.conns.get(id) {
                c.deadline = None;
                base.end_conn(id, state, Ok(()));
            }
        });
        self.set_timer_ref(timer, false);
        if let Some(c) = self.conns.get(id) {
            c.deadline = Some(timer);
        }
        self.linger_read(id, state);
    }

    /// Arms the idle check `idle` after the connection's last progress.
    fn arm_idle(&mut self, id: ConnId, after: Duration) {
        let timer = self.add_timer(after, move |base, state, _| base.idle_check(id, state));
        self.set_timer_ref(timer, false);
        if let Some(c) = self.conns.get(id) {
            c.idle_timer = Some(timer);
        }
    }

    /// The idle timer fired: tell `Timeout(Idle)` if there was no progress since, else wait
    /// for what is left of the timeout after the last progress.
    fn idle_check(&mut self, id: ConnId, state: &mut S) {
        let now = self.clock.now();
        let Some(c) = self.conns.get(id) else {
            return;
        };
        c.idle_timer = None;
        if c.has(LINGERING) {
            return; // the linger timer ends it
        }
        let (Some(idle), read_at, writer) = (c.options.idle, c.read_at, c.writer) else {
            return;
        };
        let fd = c.fd.as_raw_fd();
        // Bytes leaving the kernel's send buffer are progress too: the kernel tells of room
        // only once a third of a large buffer is free, which a slow reader may take long to
        // make, while it reads steadily.
        let pending = self.writer_queued(writer) + sys::net::unsent(fd).unwrap_or(0);
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let delivered = c.handed.saturating_sub(pending as u64);
        let moved = delivered > c.delivered;
        c.delivered = delivered;
        let sent_at = self.writer_sent_at(writer).unwrap_or(0);
        let last = if moved { now } else { read_at.max(sent_at) };
        let due = timer::deadline_after(last, idle);
        if due > now {
            return self.arm_idle(id, Duration::from_nanos(due - now));
        }
        self.timed_out(id, state, ConnTimeout::Idle);
        if self.conns.get(id).is_some() {
            self.arm_idle(id, idle);
        }
    }

    fn timed_out(&mut self, id: ConnId, state: &mut S, which: ConnTimeout) {
        if self.tell_default(id, state, ConnEvent::Timeout(which)) {
            let what = match which {
                ConnTimeout::Idle => "the connection was idle for its idle timeout",
                ConnTimeout::Deadline => "the connection's deadline passed",
            };
            let e = io::Error::new(io::ErrorKind::TimedOut, what);
            self.end_conn(id, state, Err(e));
        }
    }

    /// Tells `event`, and says whether its default action is still owed (the connection is
    /// open and the handler did not call `conn_keep`).
    fn tell_default(&mut self, id: ConnId, state: &mut S, event: ConnEvent<'_>) -> bool {
        if let Some(c) = self.conns.get(id) {
            c.kept = false;
        }
        self.tell(id, state, event) && self.conns.get(id).is_some_and(|c| !c.kept)
    }

    /// Tells the handler `event`; `false` if the connection is closed (before or by it).
    fn tell(&mut self, id: ConnId, state: &mut S, event: ConnEvent<'_>) -> bool {
        let Some(mut handler) = self.conns.get(id).and_then(|c| c.handler.take()) else {
            return false;
        };
        // A panic closes the connection, as it removes a panicking fd handler.
        let cleanup = |base: &mut Self| {
            base.conn_close(id);
        };
        self.guarded(|base| handler(base, state, id, event), cleanup);
        match self.conns.get(id) {
            Some(c) => {
                c.handler = Some(handler);
                true
            }
            None => false,
        }
    }

    /// Closes the connection and tells its handler `Closed(result)`.
    fn end_conn(&mut self, id: ConnId, state: &mut S, result: io::Result<()>) {
        let Some((mut c, _)) = self.remove_conn(id) else {
            return;
        };
        if let Err(e) = &result {
            log::debug!("{id:?} closed: {e}");
        }
        if let Some(mut handler) = c.handler.take() {
            self.guarded(
                |base| handler(base, state, id, ConnEvent::Closed(result)),
                |_| {},
            );
        }
    }

    /// Removes the connection's writer (with its queue), handlers and timers, then closes its
    /// fd; returns it (without the fd) and the bytes dropped.
    fn remove_conn(&mut self, id: ConnId) -> Option<(Conn<S>, usize)> {
        self.conns.get(id)?;
        let c = self.conns.slab.remove(id.key as usize);
        let dropped = self.remove_writer(c.writer).unwrap_or(0);
        self.remove_handlers(c.fd.as_raw_fd(), crate::Handlers::ALL);
        for timer in [c.idle_timer, c.deadline, c.read_timer]
            .into_iter()
            .flatten()
        {
            self.cancel_timer(timer);
        }
        self.exit_if_done();
        Some((c, dropped))
    }
}
