//! fd handlers: readiness callbacks on any pollable file descriptor.
//!
//! Each fd has at most one read handler, one write handler and one error handler (IOLib's
//! model). The fd has one epoll registration whose interest is the union of its read and write
//! handlers; its mio token packs the fd number with a generation that changes every time the
//! registration is dropped, so an event harvested for an earlier registration of the same fd
//! number is recognised and dropped.
//!
//! Each handler also records an install number. A batch only reaches handlers installed before
//! the poll that harvested it: a handler added during a batch waits for the next poll, which
//! reports the fd's current readiness anyway (an `EPOLL_CTL_ADD`/`MOD` re-reports it).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::base::EventBase;
use crate::error;
use crate::timer::{self, Action, Tick, TimerId};

/// Readiness flags reported to a handler.
///
/// `READ_CLOSED`, `WRITE_CLOSED`, `ERROR` and `PRIORITY` are hints from the kernel (`EPOLLHUP`,
/// `EPOLLRDHUP`, `EPOLLERR`, `EPOLLPRI`); the only reliable end-of-stream signal remains a read
/// returning 0, and the only reliable error is the one the next syscall returns.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Readiness(u8);

impl Readiness {
    /// The fd can be read without blocking.
    pub const READABLE: Readiness = Readiness(1);
    /// The fd can be written without blocking.
    pub const WRITABLE: Readiness = Readiness(1 << 1);
    /// The peer closed its writing side, or the fd hung up (`EPOLLRDHUP`/`EPOLLHUP`).
    pub const READ_CLOSED: Readiness = Readiness(1 << 2);
    /// The fd can no longer be written (`EPOLLHUP`, or `EPOLLERR` with `EPOLLOUT`).
    pub const WRITE_CLOSED: Readiness = Readiness(1 << 3);
    /// An error is pending on the fd (`EPOLLERR`); read it with `SO_ERROR` or the next syscall.
    pub const ERROR: Readiness = Readiness(1 << 4);
    /// Priority data (TCP urgent data, `EPOLLPRI`) can be read.
    pub const PRIORITY: Readiness = Readiness(1 << 5);
    /// No event reached this handler for its inactivity timeout.
    pub const TIMEOUT: Readiness = Readiness(1 << 6);

    /// No flag set.
    pub const fn empty() -> Readiness {
        Readiness(0)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Readiness) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the fd can be read (see [`Readiness::READABLE`]).
    pub const fn is_readable(self) -> bool {
        self.contains(Self::READABLE)
    }

    /// Whether the fd can be written (see [`Readiness::WRITABLE`]).
    pub const fn is_writable(self) -> bool {
        self.contains(Self::WRITABLE)
    }

    /// See [`Readiness::READ_CLOSED`].
    pub const fn is_read_closed(self) -> bool {
        self.contains(Self::READ_CLOSED)
    }

    /// See [`Readiness::WRITE_CLOSED`].
    pub const fn is_write_closed(self) -> bool {
        self.contains(Self::WRITE_CLOSED)
    }

    /// See [`Readiness::ERROR`].
    pub const fn is_error(self) -> bool {
        self.contains(Self::ERROR)
    }

    /// See [`Readiness::PRIORITY`].
    pub const fn is_priority(self) -> bool {
        self.contains(Self::PRIORITY)
    }

    /// Whether this is an inactivity timeout rather than I/O readiness.
    pub const fn is_timeout(self) -> bool {
        self.contains(Self::TIMEOUT)
    }

    pub(crate) fn from_event(event: &mio::event::Event) -> Readiness {
        let flags = [
            (event.is_readable(), Self::READABLE),
            (event.is_writable(), Self::WRITABLE),
            (event.is_read_closed(), Self::READ_CLOSED),
            (event.is_write_closed(), Self::WRITE_CLOSED),
            (event.is_error(), Self::ERROR),
            (event.is_priority(), Self::PRIORITY),
        ];
        flags
            .iter()
            .filter(|(set, _)| *set)
            .fold(Readiness::empty(), |acc, (_, flag)| acc | *flag)
    }

    /// Whether a handler of `kind` is told about this readiness.
    fn concerns(self, kind: HandlerKind) -> bool {
        let wanted = match kind {
            HandlerKind::Read => Self::READABLE | Self::READ_CLOSED | Self::PRIORITY | Self::ERROR,
            HandlerKind::Write => Self::WRITABLE | Self::WRITE_CLOSED | Self::ERROR,
            HandlerKind::Error => Self::ERROR,
        };
        self.0 & wanted.0 != 0
    }
}

impl std::ops::BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 | rhs.0)
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 7] = [
            "READABLE",
            "WRITABLE",
            "READ_CLOSED",
            "WRITE_CLOSED",
            "ERROR",
            "PRIORITY",
            "TIMEOUT",
        ];
        let set: Vec<_> = (0..7)
            .filter(|bit| self.0 & (1 << bit) != 0)
            .map(|bit| NAMES[bit])
            .collect();
        write!(f, "Readiness({})", set.join(" | "))
    }
}

/// The direction an I/O handler waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Readable, read-closed, priority data.
    Read,
    /// Writable, write-closed.
    Write,
}

/// Which of an fd's three handlers an [`IoEvent`] is delivered to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// The read handler ([`Direction::Read`]).
    Read = 0,
    /// The write handler ([`Direction::Write`]).
    Write = 1,
    /// The error handler ([`EventBase::set_error_handler`]).
    Error = 2,
}

const KINDS: [HandlerKind; 3] = [HandlerKind::Read, HandlerKind::Write, HandlerKind::Error];

impl HandlerKind {
    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn name(self) -> &'static str {
        match self {
            HandlerKind::Read => "read",
            HandlerKind::Write => "write",
            HandlerKind::Error => "error",
        }
    }
}

impl From<Direction> for HandlerKind {
    fn from(direction: Direction) -> HandlerKind {
        match direction {
            Direction::Read => HandlerKind::Read,
            Direction::Write => HandlerKind::Write,
        }
    }
}

/// A set of handler kinds, for [`EventBase::remove_fd_handlers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handlers(u8);

impl Handlers {
    /// The read handler.
    pub const READ: Handlers = Handlers(1);
    /// The write handler.
    pub const WRITE: Handlers = Handlers(1 << 1);
    /// The error handler.
    pub const ERROR: Handlers = Handlers(1 << 2);
    /// All three.
    pub const ALL: Handlers = Handlers(0b111);

    fn contains(self, kind: HandlerKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

impl std::ops::BitOr for Handlers {
    type Output = Handlers;
    fn bitor(self, rhs: Handlers) -> Handlers {
        Handlers(self.0 | rhs.0)
    }
}

/// How readiness is reported to a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Trigger {
    /// Once per change of readiness (epoll `EPOLLET`, mio's native mode). The handler **must**
    /// keep reading (or writing) until the syscall returns `WouldBlock`: readiness left
    /// unconsumed is not reported again until new data (or space) arrives.
    #[default]
    Edge,
    /// On every iteration while the fd stays ready (poll(2) semantics, as IOLib). The handler may
    /// read a bounded amount and return; it is called again next iteration. Costs one
    /// `epoll_ctl(EPOLL_CTL_MOD)` per delivered event, which re-arms the registration.
    Level,
}

/// Options of an I/O handler; the default is edge-triggered, persistent, without timeout.
///
/// ```
/// use std::time::Duration;
/// use aioloop::IoOptions;
///
/// let options = IoOptions::new().level().one_shot().timeout(Duration::from_secs(30));
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IoOptions {
    trigger: Trigger,
    one_shot: bool,
    timeout: Option<Duration>,
}

impl IoOptions {
    /// Edge-triggered, persistent, no timeout.
    pub fn new() -> IoOptions {
        IoOptions::default()
    }

    /// Sets the trigger mode.
    pub fn trigger(mut self, trigger: Trigger) -> IoOptions {
        self.trigger = trigger;
        self
    }

    /// Level-triggered (see [`Trigger::Level`]).
    pub fn level(self) -> IoOptions {
        self.trigger(Trigger::Level)
    }

    /// Edge-triggered (see [`Trigger::Edge`]); the default.
    pub fn edge(self) -> IoOptions {
        self.trigger(Trigger::Edge)
    }

    /// The handler is removed right **before** its first callback runs (an event or its
    /// timeout), so that callback may install a new handler for the same fd and direction.
    pub fn one_shot(mut self) -> IoOptions {
        self.one_shot = true;
        self
    }

    /// Calls the handler with [`Readiness::TIMEOUT`] after `timeout` without any event for it,
    /// measured from when its last event was dispatched (or from installation). A persistent
    /// handler stays installed and is told again after every further `timeout` of silence; a
    /// one-shot handler is removed before its timeout callback.
    pub fn timeout(mut self, timeout: Duration) -> IoOptions {
        self.timeout = Some(timeout);
        self
    }
}

/// What a handler is called with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoEvent {
    /// The fd the handler was installed for.
    pub fd: RawFd,
    /// Which of the fd's handlers is being called.
    pub kind: HandlerKind,
    /// What the kernel reported, or [`Readiness::TIMEOUT`].
    pub ready: Readiness,
}

/// The callback of an fd handler.
pub(crate) type IoCallback<S> = Box<dyn FnMut(&mut EventBase<S>, &mut S, IoEvent)>;

struct Handler<S> {
    /// `None` while the callback runs.
    callback: Option<IoCallback<S>>,
    options: IoOptions,
    /// Unique per installation; orders handlers against batches.
    install: u64,
    /// When the last event was dispatched to it (or when it was installed).
    last_active: Tick,
    timer: Option<TimerId>,
}

struct FdEntry<S> {
    handlers: [Option<Handler<S>>; 3],
    /// The interest currently registered with epoll.
    interest: Interest,
    refd: bool,
}

impl<S> FdEntry<S> {
    /// The epoll interest its read and write handlers need.
    fn wanted(&self) -> Option<Interest> {
        let read = self.handlers[0].is_some().then_some(Interest::READABLE);
        let write = self.handlers[1].is_some().then_some(Interest::WRITABLE);
        match (read, write) {
            (Some(r), Some(w)) => Some(r | w),
            (r, w) => r.or(w),
        }
    }

    fn has_level_handler_for(&self, ready: Readiness) -> bool {
        KINDS.iter().any(|&kind| {
            self.handlers[kind as usize]
                .as_ref()
                .is_some_and(|h| h.options.trigger == Trigger::Level && ready.concerns(kind))
        })
    }
}

struct FdSlot<S> {
    /// Changes every time the slot's registration is dropped.
    gen: u32,
    entry: Option<Box<FdEntry<S>>>,
}

/// Token layout: fd number in the low half of the word, generation in the high half.
const FD_BITS: u32 = usize::BITS / 2;
const FD_MASK: usize = (1 << FD_BITS) - 1;

fn token(fd: RawFd, gen: u32) -> Token {
    Token(fd as usize | ((gen as usize) << FD_BITS))
}

fn decode(token: Token) -> (RawFd, u32) {
    ((token.0 & FD_MASK) as RawFd, (token.0 >> FD_BITS) as u32)
}

/// The fd handlers of one base, indexed by fd number.
pub(crate) struct FdTable<S> {
    slots: Vec<FdSlot<S>>,
    next_install: u64,
    /// `next_install` when the current batch was harvested.
    batch_mark: u64,
    handlers: usize,
    refd: usize,
}

impl<S> FdTable<S> {
    pub(crate) fn new() -> Self {
        FdTable {
            slots: Vec::new(),
            next_install: 0,
            batch_mark: 0,
            handlers: 0,
            refd: 0,
        }
    }

    /// Number of installed handlers (read, write and error).
    pub(crate) fn handlers(&self) -> usize {
        self.handlers
    }

    /// Number of registered fds that keep the loop alive.
    pub(crate) fn refd(&self) -> usize {
        self.refd
    }

    /// Called right before a poll: the batch it harvests reaches only handlers installed now.
    pub(crate) fn mark_batch(&mut self) {
        self.batch_mark = self.next_install;
    }

    fn entry(&self, fd: RawFd) -> Option<&FdEntry<S>> {
        self.slots.get(fd as usize)?.entry.as_deref()
    }

    fn entry_mut(&mut self, fd: RawFd) -> Option<&mut FdEntry<S>> {
        self.slots.get_mut(fd as usize)?.entry.as_deref_mut()
    }

    /// The entry of `fd` if its registration is still generation `gen`.
    fn current(&mut self, fd: RawFd, gen: u32) -> Option<&mut FdEntry<S>> {
        let slot = self.slots.get_mut(fd as usize)?;
        (slot.gen == gen).then_some(())?;
        slot.entry.as_deref_mut()
    }

    fn handler(&mut self, fd: RawFd, kind: HandlerKind) -> Option<&mut Handler<S>> {
        self.entry_mut(fd)?.handlers[kind as usize].as_mut()
    }

    fn token(&self, fd: RawFd) -> Token {
        token(fd, self.slots.get(fd as usize).map_or(0, |s| s.gen))
    }

    fn insert(&mut self, fd: RawFd, interest: Interest) {
        let index = fd as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || FdSlot {
                gen: 0,
                entry: None,
            });
        }
        self.slots[index].entry = Some(Box::new(FdEntry {
            handlers: [None, None, None],
            interest,
            refd: true,
        }));
        self.refd += 1;
    }

    /// Drops the registration record of `fd`; stale events for it will not match any more.
    fn remove(&mut self, fd: RawFd) -> Option<Box<FdEntry<S>>> {
        let slot = self.slots.get_mut(fd as usize)?;
        let entry = slot.entry.take()?;
        slot.gen = slot.gen.wrapping_add(1) & (FD_MASK as u32);
        self.refd -= usize::from(entry.refd);
        self.handlers -= entry.handlers.iter().flatten().count();
        Some(entry)
    }
}

fn check_fd(fd: RawFd) -> io::Result<()> {
    if fd < 0 || fd as usize > FD_MASK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not a valid file descriptor number"),
        ));
    }
    Ok(())
}

/// Explains why epoll refused an fd.
fn registration_error(err: io::Error, fd: RawFd) -> io::Error {
    let what = match err.raw_os_error() {
        Some(libc::EPERM) => format!(
            "fd {fd} cannot be watched by epoll (EPERM): regular files and directories are \
             always ready; read files through the AIO API instead"
        ),
        Some(libc::EBADF) => format!("fd {fd} is not an open file descriptor (EBADF)"),
        Some(libc::EEXIST) => {
            format!("fd {fd} is already registered on this epoll instance outside aioloop (EEXIST)")
        }
        Some(libc::ENOSPC) => format!(
            "cannot watch fd {fd}: the per-user epoll watch limit is reached (ENOSPC); raise \
             /proc/sys/fs/epoll/max_user_watches"
        ),
        _ => format!("cannot register fd {fd} with epoll"),
    };
    error::context(err, what)
}

fn is_stale_registration(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF))
}

impl<S> EventBase<S> {
    /// Installs the `direction` handler of `fd`: `callback` runs when the fd is ready for it.
    ///
    /// `fd` is anything with a raw fd: a `RawFd`, a `mio::net::TcpStream`, a `std` socket, a
    /// pipe; register a socket that the callback itself owns by its number (`&sock.as_raw_fd()`).
    /// The base does not own it: keep it (in your state, say), and remove its handlers
    /// with [`remove_fd_handlers`](Self::remove_fd_handlers) **before** closing it, because
    /// epoll tracks open files, not fd numbers.
    ///
    /// Errors, which leave the base unchanged:
    /// * `AlreadyExists`: the fd already has a handler for this direction;
    /// * `PermissionDenied` (EPERM): epoll cannot watch this kind of file (regular files);
    /// * EBADF: the fd is not open; `InvalidInput`: a negative fd.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// use aioloop::{Direction, EventBase, IoOptions};
    ///
    /// let (mut a, b) = UnixStream::pair()?;
    /// b.set_nonblocking(true)?;
    /// let mut base = EventBase::<Vec<u8>>::new()?;
    /// // The closure owns `b`, so register by its raw fd number.
    /// let fd = b.as_raw_fd();
    /// base.set_io_handler(&fd, Direction::Read, IoOptions::new(), move |base, got, _ev| {
    ///     let mut buf = [0; 64];
    ///     // Edge-triggered: read until WouldBlock.
    ///     while let Ok(n @ 1..) = (&b).read(&mut buf) {
    ///         got.extend_from_slice(&buf[..n]);
    ///     }
    ///     base.exit();
    /// })?;
    /// a.write_all(b"hi")?;
    /// let mut got = Vec::new();
    /// base.run(&mut got)?;
    /// assert_eq!(got, b"hi");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_io_handler<F>(
        &mut self,
        fd: &impl AsRawFd,
        direction: Direction,
        options: IoOptions,
        callback: F,
    ) -> io::Result<()>
    where
        F: FnMut(&mut EventBase<S>, &mut S, IoEvent) + 'static,
    {
        let fd = fd.as_raw_fd();
        check_fd(fd)?;
        let kind = HandlerKind::from(direction);
        self.register_direction(fd, kind)?;
        let now = self.clock.now();
        let timer = options.timeout.map(|timeout| {
            let gen = self.fds.slots[fd as usize].gen;
            let deadline = timer::deadline_after(now, timeout);
            self.timers
                .insert(deadline, false, Action::HandlerTimeout { fd, gen, kind })
        });
        self.install(fd, kind, options, now, timer, Box::new(callback));
        log::debug!("fd {fd}: {} handler installed ({options:?})", kind.name());
        Ok(())
    }

    /// Installs the error handler of `fd`, called with [`Readiness::ERROR`] when epoll reports
    /// `EPOLLERR`, after the read and write handlers have been told.
    ///
    /// The fd must already have a read or write handler: the error handler belongs to that
    /// registration, and is removed with the fd's last I/O handler. Handlers are **not**
    /// removed on error; decide in the callback (usually: remove all and close).
    pub fn set_error_handler<F>(&mut self, fd: &impl AsRawFd, callback: F) -> io::Result<()>
    where
        F: FnMut(&mut EventBase<S>, &mut S, IoEvent) + 'static,
    {
        let fd = fd.as_raw_fd();
        check_fd(fd)?;
        let Some(entry) = self.fds.entry(fd) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "fd {fd} has no read or write handler; install one with set_io_handler \
                     before its error handler"
                ),
            ));
        };
        if entry.handlers[HandlerKind::Error as usize].is_some() {
            return Err(already_exists(fd, HandlerKind::Error));
        }
        let now = self.clock.now();
        self.install(
            fd,
            HandlerKind::Error,
            IoOptions::new(),
            now,
            None,
            Box::new(callback),
        );
        log::debug!("fd {fd}: error handler installed");
        Ok(())
    }

    /// Removes the selected handlers of `fd` and returns whether any was removed.
    ///
    /// Safe from any callback, including the removed handler's own: a removed handler is never
    /// called again, not even for an event already harvested in the current batch. Removing the
    /// last read/write handler drops the fd's epoll registration and its error handler.
    pub fn remove_fd_handlers(&mut self, fd: &impl AsRawFd, which: Handlers) -> bool {
        let fd = fd.as_raw_fd();
        let removed = KINDS.map(|kind| {
            which
                .contains(kind)
                .then(|| self.detach(fd, kind))
                .flatten()
        });
        let any = removed.iter().any(Option::is_some);
        if any {
            self.sync_interest(fd);
        }
        // Dropped only now, after the registration is gone: a callback may own the fd itself.
        drop(removed);
        any
    }

    /// Whether `fd` has a handler of `kind`.
    pub fn has_fd_handler(&self, fd: &impl AsRawFd, kind: HandlerKind) -> bool {
        self.fds
            .entry(fd.as_raw_fd())
            .is_some_and(|e| e.handlers[kind as usize].is_some())
    }

    /// Chooses whether the handlers of `fd` keep the loop alive (default: yes). See
    /// [`set_exit_when_empty`](Self::set_exit_when_empty). Returns `false` if `fd` has no
    /// handler.
    pub fn set_fd_ref(&mut self, fd: &impl AsRawFd, refd: bool) -> bool {
        let Some(entry) = self.fds.entry_mut(fd.as_raw_fd()) else {
            return false;
        };
        let was = std::mem::replace(&mut entry.refd, refd);
        self.fds.refd = self.fds.refd + usize::from(refd) - usize::from(was);
        true
    }

    /// Makes sure `fd` is registered with epoll with interest for `kind`, with no handler of
    /// that kind yet. On error nothing is changed (a provably stale record may be dropped).
    fn register_direction(&mut self, fd: RawFd, kind: HandlerKind) -> io::Result<()> {
        let wanted = match kind {
            HandlerKind::Read => Interest::READABLE,
            _ => Interest::WRITABLE,
        };
        if let Some(entry) = self.fds.entry(fd) {
            // Also for a duplicate: the MOD is what tells a live registration from one that
            // vanished when its fd was closed behind our back (and the number reused).
            let taken = entry.handlers[kind as usize].is_some();
            let interest = entry.interest | wanted;
            let token = self.fds.token(fd);
            match self
                .poll
                .registry()
                .reregister(&mut SourceFd(&fd), token, interest)
            {
                Ok(()) if taken => return Err(already_exists(fd, kind)),
                Ok(()) => {
                    if let Some(entry) = self.fds.entry_mut(fd) {
                        entry.interest = interest;
                    }
                    return Ok(());
                }
                Err(e) if is_stale_registration(&e) => {
                    // The fd was closed behind our back (and maybe its number reused): the old
                    // registration is gone from epoll, so drop our record and start afresh.
                    log::warn!(
                        "fd {fd} was closed without remove_fd_handlers; dropping its handlers"
                    );
                    self.drop_entry(fd);
                }
                Err(e) => return Err(registration_error(e, fd)),
            }
        }
        let token = self.fds.token(fd);
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), token, wanted)
            .map_err(|e| registration_error(e, fd))?;
        self.fds.insert(fd, wanted);
        Ok(())
    }

    fn install(
        &mut self,
        fd: RawFd,
        kind: HandlerKind,
        options: IoOptions,
        now: Tick,
        timer: Option<TimerId>,
        callback: IoCallback<S>,
    ) {
        let install = self.fds.next_install;
        self.fds.next_install += 1;
        self.fds.handlers += 1;
        let entry = self.fds.entry_mut(fd).expect("registered by the caller");
        entry.handlers[kind as usize] = Some(Handler {
            callback: Some(callback),
            options,
            install,
            last_active: now,
            timer,
        });
    }

    /// Takes a handler out of its entry and cancels its timeout, without touching epoll.
    fn detach(&mut self, fd: RawFd, kind: HandlerKind) -> Option<Handler<S>> {
        let handler = self.fds.entry_mut(fd)?.handlers[kind as usize].take()?;
        self.fds.handlers -= 1;
        if let Some(timer) = handler.timer {
            self.timers.remove(timer);
        }
        log::debug!("fd {fd}: {} handler removed", kind.name());
        Some(handler)
    }

    /// Brings the epoll registration of `fd` in line with its remaining handlers.
    fn sync_interest(&mut self, fd: RawFd) {
        let Some(entry) = self.fds.entry(fd) else {
            return;
        };
        match entry.wanted() {
            None => {
                let entry = self.drop_entry(fd);
                if let Err(e) = self.poll.registry().deregister(&mut SourceFd(&fd)) {
                    log::debug!("fd {fd}: deregister failed ({e}); it was probably closed first");
                }
                drop(entry);
            }
            Some(wanted) if wanted != entry.interest => {
                let token = self.fds.token(fd);
                if let Err(e) = self
                    .poll
                    .registry()
                    .reregister(&mut SourceFd(&fd), token, wanted)
                {
                    log::warn!("fd {fd}: cannot update epoll interest ({e}); was it closed?");
                }
                if let Some(entry) = self.fds.entry_mut(fd) {
                    entry.interest = wanted;
                }
            }
            Some(_) => {}
        }
    }

    /// Forgets every handler of `fd` and cancels their timeouts, without touching epoll.
    /// Returns the handlers, for the caller to drop once epoll is done with the fd.
    fn drop_entry(&mut self, fd: RawFd) -> Option<Box<FdEntry<S>>> {
        let entry = self.fds.remove(fd)?;
        for handler in entry.handlers.iter().flatten() {
            if let Some(timer) = handler.timer {
                self.timers.remove(timer);
            }
        }
        Some(entry)
    }

    /// Delivers harvested event `index` to the handlers still owed it. Returns early, leaving
    /// the rest owed, if a callback asks the loop to exit.
    pub(crate) fn dispatch_io(&mut self, index: usize, state: &mut S) {
        let event = self.harvested[index];
        let (fd, gen) = decode(event.token);
        let Some(entry) = self.fds.current(fd, gen) else {
            self.harvested[index].todo = 0;
            return;
        };
        if event.todo == u8::MAX {
            self.harvested[index].todo =
                HandlerKind::Read.bit() | HandlerKind::Write.bit() | HandlerKind::Error.bit();
            if entry.has_level_handler_for(event.ready) {
                // Re-arm before the callbacks: epoll re-checks readiness when it next harvests,
                // so this reports the fd again next iteration only if it is still ready then.
                let (interest, token) = (entry.interest, event.token);
                if let Err(e) = self
                    .poll
                    .registry()
                    .reregister(&mut SourceFd(&fd), token, interest)
                {
                    log::warn!("fd {fd}: level re-arm failed ({e}); was it closed?");
                }
            }
        }
        for kind in KINDS {
            let todo = &mut self.harvested[index].todo;
            if *todo & kind.bit() == 0 {
                continue;
            }
            *todo &= !kind.bit();
            if event.ready.concerns(kind) {
                self.run_handler(fd, gen, kind, event.ready, state);
                if self.exit_requested {
                    return;
                }
            }
        }
    }

    fn run_handler(
        &mut self,
        fd: RawFd,
        gen: u32,
        kind: HandlerKind,
        ready: Readiness,
        state: &mut S,
    ) {
        let batch_mark = self.fds.batch_mark;
        let Some(entry) = self.fds.current(fd, gen) else {
            return;
        };
        let Some(handler) = entry.handlers[kind as usize].as_mut() else {
            return;
        };
        if handler.install >= batch_mark {
            return;
        }
        if handler.timer.is_some() {
            handler.last_active = self.clock.now();
        }
        self.invoke(fd, kind, ready, state);
    }

    /// Inactivity timeout of a handler: fire if it has been idle long enough, else re-arm for
    /// the remaining time (activity only records a timestamp; the heap is touched here, lazily).
    pub(crate) fn handler_timeout(
        &mut self,
        timer: TimerId,
        fd: RawFd,
        gen: u32,
        kind: HandlerKind,
        state: &mut S,
    ) {
        let now = self.clock.now();
        let Some(handler) = self
            .fds
            .current(fd, gen)
            .and_then(|e| e.handlers[kind as usize].as_mut())
        else {
            self.timers.remove(timer);
            return;
        };
        let timeout = handler.options.timeout.unwrap_or(Duration::MAX);
        let due = timer::deadline_after(handler.last_active, timeout);
        if due > now {
            self.timers.reschedule(timer, due);
            return;
        }
        handler.last_active = now;
        self.timers
            .reschedule(timer, timer::deadline_after(now, timeout));
        self.invoke(fd, kind, Readiness::TIMEOUT, state);
    }

    /// Calls the handler of `kind` on `fd`: a one-shot handler is removed first; a persistent
    /// one lends its callback out for the call and gets it back unless it was removed meanwhile.
    fn invoke(&mut self, fd: RawFd, kind: HandlerKind, ready: Readiness, state: &mut S) {
        let event = IoEvent { fd, kind, ready };
        let Some(handler) = self.fds.handler(fd, kind) else {
            return;
        };
        let (one_shot, install) = (handler.options.one_shot, handler.install);
        if one_shot {
            let callback = self.detach(fd, kind).and_then(|h| h.callback);
            self.sync_interest(fd);
            if let Some(mut callback) = callback {
                self.guarded(|base| callback(base, state, event), |_| {});
            }
            return;
        }
        let Some(mut callback) = self.fds.handler(fd, kind).and_then(|h| h.callback.take()) else {
            return;
        };
        self.guarded(
            |base| callback(base, state, event),
            |base| {
                if base
                    .fds
                    .handler(fd, kind)
                    .is_some_and(|h| h.install == install)
                {
                    base.remove_fd_handlers(&fd, handlers_of(kind));
                }
            },
        );
        if let Some(handler) = self.fds.handler(fd, kind) {
            if handler.install == install {
                handler.callback = Some(callback);
            }
        }
    }
}

fn handlers_of(kind: HandlerKind) -> Handlers {
    Handlers(kind.bit())
}

fn already_exists(fd: RawFd, kind: HandlerKind) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "fd {fd} already has a {} handler; remove it with remove_fd_handlers first",
            kind.name()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_fd_and_generation() {
        for (fd, gen) in [(0, 0), (7, 1), (i32::MAX, (FD_MASK as u32) - 1)] {
            assert_eq!(decode(token(fd, gen)), (fd, gen));
        }
        assert_ne!(token(i32::MAX, FD_MASK as u32), crate::remote::TOKEN);
    }

    #[test]
    fn readiness_debug_names_flags() {
        let r = Readiness::READABLE | Readiness::ERROR;
        assert_eq!(format!("{r:?}"), "Readiness(READABLE | ERROR)");
    }
}
