//! Counters that describe what a base has been doing.

use std::time::Duration;

/// A snapshot of a base's counters, from [`EventBase::metrics`](crate::EventBase::metrics).
///
/// Counting costs a few integer additions per iteration; nothing here allocates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Loop iterations run (each polls at most once).
    pub iterations: u64,
    /// `epoll_wait` calls made.
    pub polls: u64,
    /// Callbacks run: fd handlers, timers and cross-thread posts.
    pub callbacks: u64,
    /// Total time spent inside `epoll_wait` (blocked or not).
    pub poll_time: Duration,
    /// fd handlers installed now (read, write and error handlers each count).
    pub fd_handlers: usize,
    /// Timers pending now, including handler inactivity timeouts and `exit_after` timers.
    pub timers: usize,
}
