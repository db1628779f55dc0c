//! fd handlers: readiness callbacks on any pollable file descriptor.
//!
//! Each fd has at most one read handler, one write handler and one error handler (IOLib's
//! model). The fd has one epoll registration whose interest is the union of its read and write
//! handlers, and whose token packs the fd number with a generation (`token.rs`) that changes
//! every time the registration is dropped, so an event harvested for an earlier registration
//! of the same fd number is recognised and dropped.
//!
//! Each handler also records an install number. A batch only reaches handlers installed before
//! the poll that harvested it: a handler added during a batch waits for the next poll, which
//! reports the fd's current readiness anyway (an `EPOLL_CTL_ADD`/`MOD` re-reports it).
//!
//! This module holds the value types; `table.rs` the fd table, `register.rs` the API that
//! changes it, `dispatch.rs` the delivery of events and timeouts.

use std::fmt;
use std::os::fd::RawFd;
use std::time::Duration;

#[cfg(doc)]
use crate::EventBase;

mod dispatch;
mod register;
mod table;
pub(crate) mod token;

pub(crate) use table::FdTable;

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
        // Branch-free: one event per round trip of every server goes through here.
        let flag = |set: bool, flag: Readiness| flag.0 * u8::from(set);
        Readiness(
            flag(event.is_readable(), Self::READABLE)
                | flag(event.is_writable(), Self::WRITABLE)
                | flag(event.is_read_closed(), Self::READ_CLOSED)
                | flag(event.is_write_closed(), Self::WRITE_CLOSED)
                | flag(event.is_error(), Self::ERROR)
                | flag(event.is_priority(), Self::PRIORITY),
        )
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
    ///
    /// One saving is safe, and worth a system call per event: on a stream socket (TCP, Unix
    /// stream) or a pipe, a read that returns fewer bytes than the buffer holds has drained
    /// it, so the handler may stop there instead of making the read that would return
    /// `WouldBlock`; data that arrives later makes a new edge. **Except when the event carries
    /// [`Readiness::READ_CLOSED`]**: a peer that sent its last bytes and shut its side at once
    /// (`send` then `shutdown`, as `nc -N` and HTTP/1.0 clients do) is reported in the same
    /// edge as the data, the short read takes the data, and only the next read (returning 0)
    /// tells the end of the stream; no further edge comes for it. A full buffer means more may
    /// be waiting: read again. This does not hold for datagram sockets (a read returns one
    /// datagram, however many wait) nor for writes. Connections ([`EventBase::add_conn`]) read
    /// this way; tokio does the same.
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
    #[must_use]
    pub fn new() -> IoOptions {
        IoOptions::default()
    }

    /// Sets the trigger mode.
    #[must_use]
    pub fn trigger(mut self, trigger: Trigger) -> IoOptions {
        self.trigger = trigger;
        self
    }

    /// Level-triggered (see [`Trigger::Level`]).
    #[must_use]
    pub fn level(self) -> IoOptions {
        self.trigger(Trigger::Level)
    }

    /// Edge-triggered (see [`Trigger::Edge`]); the default.
    #[must_use]
    pub fn edge(self) -> IoOptions {
        self.trigger(Trigger::Edge)
    }

    /// The handler is removed right **before** its first callback runs (an event or its
    /// timeout), so that callback may install a new handler for the same fd and direction.
    #[must_use]
    pub fn one_shot(mut self) -> IoOptions {
        self.one_shot = true;
        self
    }

    /// Calls the handler with [`Readiness::TIMEOUT`] after `timeout` without any event for it,
    /// measured from its last event (the time of the poll that harvested it) or from
    /// installation. A persistent handler stays installed and is told again after every
    /// further `timeout` of silence; a one-shot handler is removed before its timeout callback.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> IoOptions {
        self.timeout = Some(timeout);
        self
    }
}

/// What a handler is called with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoEvent {
    /// The fd the handler was installed for.
    pub fd: RawFd,
    /// Which of the fd's handlers is being called.
    pub kind: HandlerKind,
    /// What the kernel reported, or [`Readiness::TIMEOUT`].
    pub ready: Readiness,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_debug_names_flags() {
        let r = Readiness::READABLE | Readiness::ERROR;
        assert_eq!(format!("{r:?}"), "Readiness(READABLE | ERROR)");
    }
}
