//! The event base: one `mio::Poll`, the handler and timer tables, the internal sources, and the
//! run modes.
//!
//! One iteration ([`EventBase::run_once`]) is:
//!
//! 1. every internal source prepares (AIO requests queued by callbacks go out together);
//! 2. poll, unless events of an interrupted batch are left: with a zero timeout if any source
//!    owes work (callbacks ready without the kernel), otherwise until the earliest timer,
//!    capped by the caller's limit; `EINTR` is retried with the time left, and the clock is
//!    sampled once, after the poll returns;
//! 3. dispatch the harvested events in kernel order: fd events to their handlers, an internal
//!    source's token to that source, which takes what the kernel has into its owed queue;
//! 4. run every source's owed callbacks (`source.rs`);
//! 5. fire every timer due at the sampled time that was scheduled before step 5 began, in
//!    `(deadline, insertion)` order.
//!
//! [`exit`](EventBase::exit) is checked after every callback; whatever is left of the batch and
//! of the owed queues is dispatched first by the next run, so an edge is never lost. Because
//! owed work only ever runs in step 4, after a poll, and the run loop checks liveness before
//! every iteration, the last callback of a run with `set_exit_when_empty` ends it at once.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::aio::Aio;
use crate::io::{FdTable, Readiness};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::remote::{self, Remote};
use crate::signal::Signals;
use crate::source::Source;
use crate::sys;
use crate::timer::{self, Action, Clock, Tick, TimerId, Timers, Wakeup};

/// Default capacity of the events buffer handed to `epoll_wait`.
const DEFAULT_EVENTS_CAPACITY: usize = 256;

/// An event harvested by a poll, with the handler kinds still to run for it.
#[derive(Clone, Copy)]
pub(crate) struct Harvested {
    pub(crate) token: Token,
    pub(crate) ready: Readiness,
    /// Bit `k` set: the handler of kind `k` has not been given this event yet.
    pub(crate) todo: u8,
}

/// A single-threaded event loop: fd handlers, timers, signals, child exits, file I/O and
/// cross-thread posts on one epoll.
///
/// `S` is the caller's state. Every run call takes `&mut S` and hands it, together with
/// `&mut EventBase<S>`, to every callback, so callbacks can change the state, add and remove
/// handlers and timers, and stop the loop without `Rc<RefCell<_>>`.
///
/// ```
/// use std::time::Duration;
/// use aioloop::EventBase;
///
/// let mut base = EventBase::<u32>::new()?;
/// base.add_timer(Duration::from_millis(1), |base, ticks, _| {
///     *ticks += 1;
///     base.exit();
/// });
/// let mut ticks = 0;
/// base.run(&mut ticks)?;
/// assert_eq!(ticks, 1);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// Name the state type where the base is made, `EventBase::<State>::new()` (or
/// `let mut base: EventBase<State> = ...`), or in a callback's parameter
/// (`|base, st: &mut State, _| ...`). Otherwise the compiler says "type annotations needed"
/// as soon as a callback calls a method on its state: it must know the type there, and
/// does not look ahead to `run(&mut state)`.
///
/// # Methods by topic
///
/// * **Make and run**: [`new`](Self::new), [`with_capacity`](Self::with_capacity),
///   [`run`](Self::run), [`run_once`](Self::run_once), [`run_for`](Self::run_for),
///   [`exit`](Self::exit), [`exit_with_error`](Self::exit_with_error),
///   [`exit_after`](Self::exit_after), [`set_exit_when_empty`](Self::set_exit_when_empty),
///   [`is_alive`](Self::is_alive), [`next_timeout`](Self::next_timeout) (to embed the loop in
///   another), [`now`](Self::now), [`metrics`](Self::metrics), [`remote`](Self::remote)
///   (posts from other threads).
/// * **Fds**: [`set_io_handler`](Self::set_io_handler),
///   [`set_error_handler`](Self::set_error_handler),
///   [`remove_fd_handlers`](Self::remove_fd_handlers),
///   [`has_fd_handler`](Self::has_fd_handler), [`set_fd_ref`](Self::set_fd_ref).
/// * **Timers**: [`add_timer`](Self::add_timer),
///   [`add_repeating_timer`](Self::add_repeating_timer),
///   [`add_repeating_timer_after`](Self::add_repeating_timer_after),
///   [`cancel_timer`](Self::cancel_timer), [`reset_timer`](Self::reset_timer),
///   [`timer_remaining`](Self::timer_remaining), [`reserve_timers`](Self::reserve_timers),
///   [`set_timer_ref`](Self::set_timer_ref), [`set_timer_spin`](Self::set_timer_spin),
///   [`set_timer_slack`](Self::set_timer_slack).
/// * **Signals**: [`add_signal_handler`](Self::add_signal_handler),
///   [`add_signal_handler_once`](Self::add_signal_handler_once),
///   [`remove_signal_handler`](Self::remove_signal_handler),
///   [`set_signal_ref`](Self::set_signal_ref).
/// * **Children**: [`spawn_child`](Self::spawn_child), [`watch_child`](Self::watch_child),
///   [`watch_pid`](Self::watch_pid), [`unwatch_child`](Self::unwatch_child).
/// * **Connections the loop owns**: [`add_conn`](Self::add_conn), [`serve`](Self::serve),
///   [`conn_write`](Self::conn_write) and the other `conn_*` methods,
///   [`shut_down`](Self::shut_down), [`conn_count`](Self::conn_count).
/// * **Accepting and writing on your own sockets**:
///   [`accept_connections`](Self::accept_connections),
///   [`stop_accepting`](Self::stop_accepting), [`add_writer`](Self::add_writer),
///   [`write`](Self::write) and the other writer methods.
/// * **File I/O** ([the AIO guide](crate::guide::aio)): [`read_at`](Self::read_at),
///   [`write_at`](Self::write_at), [`readv_at`](Self::readv_at),
///   [`writev_at`](Self::writev_at), [`read_exact_at`](Self::read_exact_at),
///   [`write_all_at`](Self::write_all_at), [`fsync`](Self::fsync),
///   [`fdatasync`](Self::fdatasync), [`fallocate`](Self::fallocate),
///   [`set_len`](Self::set_len), [`close`](Self::close),
///   [`file_metadata`](Self::file_metadata), [`cancel_aio`](Self::cancel_aio),
///   [`set_aio_options`](Self::set_aio_options), [`submit_aio`](Self::submit_aio).
/// * **Paths, on helper threads**: [`open`](Self::open), [`open_beneath`](Self::open_beneath),
///   [`stat`](Self::stat), [`read_dir`](Self::read_dir), [`rename`](Self::rename),
///   [`remove_file`](Self::remove_file), [`create_dir`](Self::create_dir).
/// * **Any blocking work**: [`run_blocking`](Self::run_blocking),
///   [`cancel_job`](Self::cancel_job).
/// * **systemd**: [`start_watchdog`](Self::start_watchdog) (and the [`systemd`](crate::systemd)
///   module).
///
/// # Threads and processes
///
/// An `EventBase` is `!Send`: it and its callbacks stay on the thread that created it. Run one
/// base per thread to use several cores, and talk to a base from other threads through its
/// [`Remote`]. A base belongs to the process that created it: after `fork`, the child shares
/// the parent's epoll instance and AIO ring, so every run method refuses to run there (build a
/// new base in the child).
///
/// # Callback rules
///
/// * Callbacks run on the thread that calls a run method, one at a time, never nested.
/// * A callback may add, remove or change any handler or timer, including its own. Removing a
///   handler guarantees its callback is not called again, even for an event already harvested
///   in the same batch.
/// * A run method called from inside a callback returns an error: the loop is not re-entrant.
///
/// # Panics
///
/// A panic in a callback, or in the `Drop` of anything the base drops while it runs (a removed
/// handler's closure, say), propagates out of the run call. The base stays consistent and
/// usable: the handler or timer whose callback panicked is removed (as if removed by hand,
/// including its epoll registration), every other handler and timer is untouched, and events
/// harvested but not yet dispatched are kept and dispatched first by the next run.
pub struct EventBase<S> {
    pub(crate) poll: Poll,
    events: Events,
    /// The current batch, copied out of `events` so callbacks can borrow the base mutably.
    pub(crate) harvested: Vec<Harvested>,
    /// Index of the first event of `harvested` not fully dispatched yet.
    cursor: usize,
    pub(crate) fds: FdTable<S>,
    pub(crate) timers: Timers<S>,
    /// The timerfd that wakes the poll for the earliest timer.
    pub(crate) wakeup: Wakeup,
    pub(crate) signals: Signals<S>,
    pub(crate) aio: Aio<S>,
    pub(crate) pool: Pool<S>,
    pub(crate) writers: crate::writer::Writers<S>,
    pub(crate) conns: crate::conn::Conns<S>,
    pub(crate) clock: Clock,
    /// Loop time: sampled once after each poll.
    pub(crate) now: Tick,
    /// When the last poll of the current run returned (or the run began): the start of the
    /// loop thread's current hold.
    polled_at: Option<Tick>,
    /// `Metrics::poll_time` and `longest_hold` in ticks: adding and comparing `Duration`s
    /// on every poll costs more than the clock read that feeds them.
    poll_ticks: Tick,
    longest_hold_ticks: Tick,
    pub(crate) remote: Option<Arc<remote::Shared<S>>>,
    /// The posts' waker fired and its posts have not all run.
    pub(crate) posts_woken: bool,
    pub(crate) exit_requested: bool,
    /// The error a callback ended the run with ([`EventBase::exit_with_error`]).
    failure: Option<io::Error>,
    exit_when_empty: bool,
    running: bool,
    /// The process that created the base (see `sys::Owner`).
    owner: sys::Owner,
    pub(crate) metrics: Metrics,
}

impl<S> EventBase<S> {
    /// Creates a base with the default events-buffer capacity (256 events per poll).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// Only if the kernel refuses an epoll instance (`EMFILE`, `ENFILE`, `ENOMEM`).
    pub fn new() -> io::Result<Self> {
        Self::with_capacity(DEFAULT_EVENTS_CAPACITY)
    }

    /// Creates a base whose polls harvest at most `events` events each (at least 1).
    ///
    /// A burst larger than the buffer is not lost: the kernel keeps the rest ready and the
    /// following iterations harvest it. A small buffer only trades syscalls for latency.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`new`](Self::new).
    pub fn with_capacity(events: usize) -> io::Result<Self> {
        let poll = Poll::new().map_err(|e| {
            crate::error::context(e, "cannot create the epoll instance (check RLIMIT_NOFILE)")
        })?;
        let capacity = events.max(1);
        let clock = Clock::new();
        log::debug!("event base created: epoll fd {}", poll.as_raw_fd());
        let mut base = EventBase {
            poll,
            events: Events::with_capacity(capacity),
            harvested: Vec::with_capacity(capacity),
            cursor: 0,
            fds: FdTable::new(),
            timers: Timers::new(),
            wakeup: Wakeup::default(),
            signals: Signals::new(),
            aio: Aio::new(),
            pool: Pool::new(),
            writers: crate::writer::Writers::new(),
            conns: crate::conn::Conns::new(),
            clock,
            now: clock.now(),
            polled_at: None,
            poll_ticks: 0,
            longest_hold_ticks: 0,
            remote: None,
            posts_woken: false,
            exit_requested: false,
            failure: None,
            exit_when_empty: false,
            running: false,
            owner: sys::Owner::current(),
            metrics: Metrics::default(),
        };
        base.create_timer_wakeup();
        Ok(base)
    }

    /// Runs until [`exit`](Self::exit) is called, or, with
    /// [`set_exit_when_empty`](Self::set_exit_when_empty), until nothing keeps the loop alive.
    ///
    /// A pending `exit` from before this call is forgotten: each run starts afresh.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// A run method called from inside a callback, or in a process forked from the one that
    /// created the base; `epoll_wait` failing for any reason but `EINTR`; the error a callback
    /// passed to [`exit_with_error`](Self::exit_with_error).
    pub fn run(&mut self, state: &mut S) -> io::Result<()> {
        self.run_until(state, None)
    }

    /// Runs like [`run`](Self::run), but for at most `duration`. With `Duration::ZERO` it makes
    /// one non-blocking iteration.
    ///
    /// The time limit is not a timer: it does not keep an otherwise empty base alive.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`run`](Self::run).
    pub fn run_for(&mut self, state: &mut S, duration: Duration) -> io::Result<()> {
        let deadline = timer::deadline_after(self.clock.now(), duration);
        self.run_until(state, Some(deadline))
    }

    /// Runs one iteration: waits for events at most `timeout` (`None`: until an event or a timer
    /// is due; `Some(Duration::ZERO)`: not at all), dispatches them, then fires due timers.
    /// Work already owed (a request cancelled while queued, say) makes the wait zero.
    ///
    /// Returns the number of callbacks run (zero if the wait timed out). With
    /// [`set_exit_when_empty`](Self::set_exit_when_empty) and nothing alive, returns `Ok(0)` at
    /// once instead of blocking forever.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`run`](Self::run).
    pub fn run_once(&mut self, state: &mut S, timeout: Option<Duration>) -> io::Result<u64> {
        let before = self.metrics.callbacks;
        self.running(|base| {
            if base.should_stop_empty() {
                return Ok(());
            }
            let limit = timeout.map(|t| timer::deadline_after(base.clock.now(), t));
            base.iterate(state, limit)
        })?;
        Ok(self.metrics.callbacks - before)
    }

    /// Stops the current run right after the callback that calls it returns.
    ///
    /// Events of the current batch not dispatched yet are kept for the next run; due timers not
    /// fired yet fire in the next run. Outside a run, it does nothing: each run clears it.
    pub fn exit(&mut self) {
        self.exit_requested = true;
    }

    /// Stops the current run like [`exit`](Self::exit), and makes the run method return
    /// `Err(error)`: how a callback reports a fatal error (a listener that died, a config that
    /// cannot be reloaded) to the code that called `run`. If several callbacks call it before
    /// the run returns, the first error wins. Outside a run, it does nothing.
    ///
    /// ```
    /// use std::io;
    /// use std::time::Duration;
    /// use aioloop::EventBase;
    ///
    /// let mut base = EventBase::<()>::new()?;
    /// base.add_timer(Duration::ZERO, |base, _, _| {
    ///     base.exit_with_error(io::Error::other("the config file vanished"));
    /// });
    /// let err = base.run(&mut ()).unwrap_err();
    /// assert_eq!(err.to_string(), "the config file vanished");
    /// # Ok::<(), io::Error>(())
    /// ```
    pub fn exit_with_error(&mut self, error: io::Error) {
        if self.running {
            self.failure.get_or_insert(error);
            self.exit_requested = true;
        }
    }

    /// Stops the loop `delay` from now, through a timer that does not keep the loop alive.
    ///
    /// Cancel it with [`cancel_timer`](Self::cancel_timer). Unlike `exit`, it outlives the run
    /// that created it: if that run ends first, the timer still stops a later one.
    pub fn exit_after(&mut self, delay: Duration) -> TimerId {
        let deadline = timer::deadline_after(self.clock.now(), delay);
        self.timers.insert(deadline, false, Action::Exit)
    }

    /// Chooses whether runs end when nothing keeps the loop alive (see
    /// [`is_alive`](Self::is_alive)). Off by default, because a daemon's main loop usually
    /// waits for events that nothing has registered yet.
    pub fn set_exit_when_empty(&mut self, exit_when_empty: bool) {
        self.exit_when_empty = exit_when_empty;
    }

    /// Whether anything keeps the loop alive: a referenced fd handler (child watches included),
    /// a referenced timer, a referenced signal handler, an AIO request not yet called back, or
    /// a queued cross-thread post. Handler timeouts, `exit_after` timers and unreferenced items
    /// (`set_*_ref(.., false)`) do not count.
    pub fn is_alive(&self) -> bool {
        self.fds.refd() > 0
            || self.timers.refd() > 0
            || Source::ALL.iter().any(|s| s.keeps_alive(self))
    }

    /// How long the loop would block now: `Some(Duration::ZERO)` if work is pending, `None` if
    /// only an event can wake it, otherwise the time to the earliest timer (or, when that is
    /// in a crowded far slot of the timing wheel, to the slot's start, a little earlier, when
    /// the loop moves it closer).
    ///
    /// With [`AsRawFd`] this lets another loop embed this one: wait until the epoll fd is
    /// readable or this timeout elapses, then call `run_once(state, Some(Duration::ZERO))`.
    pub fn next_timeout(&self) -> Option<Duration> {
        if self.owes_work() {
            return Some(Duration::ZERO);
        }
        let now = self.clock.now();
        let at = self.timers.next_deadline()?;
        Some(Duration::from_nanos(at.saturating_sub(now)))
    }

    /// The loop time: sampled once right after each poll returns. Cheap; use
    /// `std::time::Instant::now()` for a fresh reading inside a long callback.
    pub fn now(&self) -> Instant {
        self.clock.instant(self.now)
    }

    /// A snapshot of the loop's counters.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            fd_handlers: self.fds.handlers(),
            timers: self.timers.len(),
            aio_in_flight: self.aio.in_flight(),
            poll_time: Duration::from_nanos(self.poll_ticks),
            longest_hold: Duration::from_nanos(self.longest_hold_ticks),
            signals_dropped: sys::signals_dropped(),
            ..self.metrics
        }
    }

    /// A handle for other threads: it wakes this loop and runs closures on it. All handles of a
    /// base share one eventfd, created by the first call.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// Only the first call can fail: the kernel refuses the eventfd (`EMFILE`, ...).
    pub fn remote(&mut self) -> io::Result<Remote<S>> {
        if self.remote.is_none() {
            self.remote = Some(remote::Shared::new(self.poll.registry())?);
        }
        Ok(Remote::new(self.remote.clone().expect("created above")))
    }

    /// Runs `body` as a run of the loop: refuses nested runs and runs in a forked child, clears
    /// a stale `exit`, and whatever happens inside (an error, or a panic from a callback or a
    /// `Drop`) leaves the base ready for the next run.
    fn running(&mut self, body: impl FnOnce(&mut Self) -> io::Result<()>) -> io::Result<()> {
        if self.running {
            return Err(io::Error::other(
                "EventBase run method called from inside a callback: the loop is not re-entrant; \
                 return from the callback and let the running loop continue",
            ));
        }
        if !self.owner.is_current() {
            return Err(io::Error::other(
                "this EventBase was created by the parent process before fork: the child shares \
                 its epoll instance and AIO ring, so running it here would steal the parent's \
                 events; create a new EventBase in the child (and drop or forget this one)",
            ));
        }
        self.running = true;
        self.exit_requested = false;
        self.polled_at = Some(self.clock.now());
        let result = panic::catch_unwind(AssertUnwindSafe(|| body(self)));
        if result.is_err() {
            self.recover_from_panic();
        }
        self.running = false;
        self.end_hold(self.clock.now());
        self.polled_at = None;
        let failure = self.failure.take();
        let result = result.unwrap_or_else(|panic| panic::resume_unwind(panic));
        match failure {
            Some(error) => Err(error),
            None => result,
        }
    }

    fn run_until(&mut self, state: &mut S, deadline: Option<Tick>) -> io::Result<()> {
        self.running(|base| loop {
            if base.exit_requested || base.should_stop_empty() {
                return Ok(());
            }
            base.iterate(state, deadline)?;
            if deadline.is_some_and(|d| base.clock.now() >= d) {
                return Ok(());
            }
        })
    }

    fn should_stop_empty(&self) -> bool {
        self.exit_when_empty && !self.is_alive() && !self.owes_work()
    }

    /// Whether work is owed before the next blocking poll: events of an interrupted batch, or
    /// callbacks a source can run without the kernel.
    fn owes_work(&self) -> bool {
        self.cursor < self.harvested.len() || Source::ALL.iter().any(|s| s.owes_work(self))
    }

    /// One iteration; `limit` caps the wait.
    fn iterate(&mut self, state: &mut S, limit: Option<Tick>) -> io::Result<()> {
        for source in Source::ALL {
            source.prepare(self);
        }
        if self.cursor == self.harvested.len() {
            self.poll_events(limit)?;
        }
        self.dispatch_harvested(state);
        self.run_owed(state);
        self.fire_due_timers(state);
        self.metrics.iterations += 1;
        Ok(())
    }

    /// The poll timeout at time `now`, capped by the deadline `limit`. A future timer armed on
    /// the timerfd needs no timeout: its expiry wakes the poll, without mio's rounding up to
    /// whole milliseconds.
    fn poll_timeout(&self, now: Tick, limit: Option<Tick>) -> Option<Duration> {
        if self.owes_work() {
            return Some(Duration::ZERO);
        }
        let timer = self.wakeup.poll_timeout(now);
        let limit = limit.map(|at| Duration::from_nanos(at.saturating_sub(now)));
        match (timer, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Polls once (retrying `EINTR` with the time left) and copies the batch into `harvested`.
    fn poll_events(&mut self, limit: Option<Tick>) -> io::Result<()> {
        let started = self.clock.now();
        self.end_hold(started);
        let mut timeout = self.poll_timeout(started, limit);
        log::trace!("poll: timeout {timeout:?}");
        self.fds.mark_batch();
        loop {
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    timeout = self.poll_timeout(self.clock.now(), limit);
                }
                Err(e) => return Err(crate::error::context(e, "epoll_wait failed")),
            }
        }
        self.now = self.clock.now();
        self.polled_at = Some(self.now);
        self.metrics.polls += 1;
        self.poll_ticks += self.now - started;
        self.harvested.clear();
        self.cursor = 0;
        for e in self.events.iter() {
            self.harvested.push(Harvested {
                token: e.token(),
                ready: Readiness::from_event(e),
                todo: u8::MAX,
            });
        }
        log::trace!("poll: {} events", self.harvested.len());
        Ok(())
    }

    /// Accounts the loop thread's work since the last poll returned, ending at `now`.
    fn end_hold(&mut self, now: Tick) {
        if let Some(since) = self.polled_at {
            let hold = now.saturating_sub(since);
            self.longest_hold_ticks = self.longest_hold_ticks.max(hold);
        }
    }

    /// Hands each harvested event to its fd's handlers or to its internal source.
    fn dispatch_harvested(&mut self, state: &mut S) {
        while self.cursor < self.harvested.len() && !self.exit_requested {
            let event = self.harvested[self.cursor];
            match Source::from_token(event.token) {
                Some(source) => {
                    self.cursor += 1;
                    source.harvest(self);
                }
                None => {
                    self.dispatch_io(self.cursor, state);
                    if self.harvested[self.cursor].todo == 0 {
                        self.cursor += 1;
                    }
                }
            }
        }
    }

    /// Runs the callbacks every source owes, source by source.
    fn run_owed(&mut self, state: &mut S) {
        for source in Source::ALL {
            if self.exit_requested {
                return;
            }
            if source.owes_work(self) {
                source.run_owed(self, state);
            }
        }
    }

    /// Runs a user callback. If it panics, `cleanup` removes what the callback belonged to, and
    /// the panic continues out of the run call with the base consistent.
    pub(crate) fn guarded(
        &mut self,
        call: impl FnOnce(&mut Self),
        cleanup: impl FnOnce(&mut Self),
    ) {
        self.metrics.callbacks += 1;
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| call(self))) {
            cleanup(self);
            panic::resume_unwind(panic);
        }
    }
}

impl<S> AsRawFd for EventBase<S> {
    /// The epoll fd, for embedding this loop in another one (see [`EventBase::next_timeout`]).
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl<S> AsFd for EventBase<S> {
    /// The epoll fd, for embedding this loop in another one (see [`EventBase::next_timeout`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poll.registry().as_fd()
    }
}

impl<S> fmt::Debug for EventBase<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBase")
            .field("epoll_fd", &self.poll.as_raw_fd())
            .field("alive", &self.is_alive())
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl<S> Drop for EventBase<S> {
    fn drop(&mut self) {
        if let Some(shared) = &self.remote {
            shared.close();
        }
        log::debug!("event base dropped: epoll fd {}", self.poll.as_raw_fd());
    }
}
