//! Timers: one-shot and repeating callbacks, plus the loop's internal deadlines.
//!
//! All deadlines of a base live in one indexed 4-ary min-heap ordered by `(deadline, seq)`:
//!
//! * `deadline` is a [`Tick`], nanoseconds since the base was created, saturating at
//!   [`NEVER`], so a delay of `Duration::MAX` neither overflows nor panics;
//! * `seq` grows by one every time any timer is (re)scheduled, so equal deadlines fire in the
//!   order they were scheduled (FIFO), and a pass over due timers can refuse every timer
//!   scheduled during that pass (a zero-delay re-arm runs next iteration, not in a livelock).
//!
//! Each timer lives in a [`Slab`] entry that records its position in the heap, so cancelling or
//! rescheduling any timer is `O(log n)` and a cancelled timer leaves nothing behind: the slab
//! reuses its slot and the heap shrinks at once (no lazy tombstones, which is how calloop's heap
//! grew without bound under add/cancel churn before its PR #238).

use std::fmt;
use std::time::{Duration, Instant};

use crate::base::EventBase;
use crate::io::HandlerKind;

mod heap;
mod wakeup;

pub(crate) use heap::Timers;
pub(crate) use wakeup::Wakeup;

/// Nanoseconds since the base's epoch.
pub(crate) type Tick = u64;

/// A deadline that is never reached; the poll never wakes up for it.
pub(crate) const NEVER: Tick = u64::MAX;

/// Converts a duration to ticks, saturating at [`NEVER`].
pub(crate) fn ticks(d: Duration) -> Tick {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER)
}

/// The deadline `delay` after `now`, saturating at [`NEVER`].
pub(crate) fn deadline_after(now: Tick, delay: Duration) -> Tick {
    now.saturating_add(ticks(delay))
}

/// Identifies a timer of an [`EventBase`].
///
/// Ids are never reused: an id whose timer has fired (one-shot) or been cancelled stays
/// invalid, so cancelling it later is a harmless no-op that returns `false`, even when its slot
/// now holds another timer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: usize,
    unique: u64,
}

impl fmt::Debug for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimerId({})", self.unique)
    }
}

/// How a repeating timer picks its next deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Drift-free: the next deadline is the previous deadline plus the period, so the timer
    /// keeps its phase however long callbacks take. After a stall that spans several periods
    /// it fires **once** and skips the missed slots (no catch-up burst).
    FixedRate,
    /// The next deadline is one period after the callback returns: there is always at least a
    /// full period between two runs, and the schedule drifts by the callback's duration.
    FixedDelay,
}

/// Callback of a one-shot timer.
pub(crate) type OnceCallback<S> = Box<dyn FnOnce(&mut EventBase<S>, &mut S, TimerId)>;
/// Callback of a repeating timer.
pub(crate) type RepeatCallback<S> = Box<dyn FnMut(&mut EventBase<S>, &mut S, TimerId)>;

/// What happens when a timer's deadline passes.
pub(crate) enum Action<S> {
    /// A user one-shot timer; the callback is consumed when it fires.
    Once(Option<OnceCallback<S>>),
    /// A user repeating timer; the callback is `None` while it runs.
    Repeat {
        period: Duration,
        schedule: Schedule,
        callback: Option<RepeatCallback<S>>,
    },
    /// The inactivity timeout of an fd handler (see `io.rs`).
    HandlerTimeout {
        fd: i32,
        gen: u32,
        kind: HandlerKind,
    },
    /// `EventBase::exit_after`.
    Exit,
}

/// The next deadline of a repeating timer that was due at `deadline` and whose callback
/// returned at `now`.
pub(crate) fn next_deadline(
    schedule: Schedule,
    period: Duration,
    deadline: Tick,
    now: Tick,
) -> Tick {
    let period = ticks(period);
    match schedule {
        Schedule::FixedDelay => now.saturating_add(period),
        Schedule::FixedRate if period == 0 => now,
        Schedule::FixedRate => {
            let next = deadline.saturating_add(period);
            if next > now {
                return next;
            }
            // Skip every slot missed during a stall: fire once, keep the phase.
            let missed = (now - deadline) / period;
            deadline.saturating_add((missed + 1).saturating_mul(period))
        }
    }
}

/// The clock of a base: ticks since its creation.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    /// When the base was made, for turning ticks into `Instant`s (`Instant` is
    /// `CLOCK_MONOTONIC` on Linux too).
    epoch: Instant,
    /// `CLOCK_MONOTONIC` at `epoch` (read just after it): tick 0.
    epoch_ns: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let epoch = Instant::now();
        Clock {
            epoch,
            epoch_ns: crate::sys::monotonic_ns(),
        }
    }

    /// Nanoseconds since the base was made: one `clock_gettime` through the vDSO, cheaper
    /// than `Instant::elapsed` (whose checked arithmetic costs more than the call itself),
    /// on the timeline the timerfd uses.
    pub(crate) fn now(&self) -> Tick {
        crate::sys::monotonic_ns().saturating_sub(self.epoch_ns)
    }

    pub(crate) fn instant(&self, tick: Tick) -> Instant {
        self.epoch + Duration::from_nanos(tick)
    }

    /// The absolute `CLOCK_MONOTONIC` time of `tick`, for a timerfd.
    pub(crate) fn monotonic_ns(&self, tick: Tick) -> u64 {
        self.epoch_ns.saturating_add(tick)
    }
}

impl<S> EventBase<S> {
    /// Runs `callback` once, `delay` from now (never earlier), and returns the timer's id.
    ///
    /// Timers due at the same instant fire in the order they were added. A timer added from a
    /// callback with zero delay fires in the next iteration, after one poll for I/O.
    /// `Duration::MAX` means "never" and does not overflow.
    ///
    /// ```
    /// use std::time::Duration;
    /// use aioloop::EventBase;
    ///
    /// let mut base = EventBase::<Vec<&str>>::new()?;
    /// base.add_timer(Duration::from_millis(2), |_, log, _| log.push("second"));
    /// base.add_timer(Duration::from_millis(1), |_, log, _| log.push("first"));
    /// base.set_exit_when_empty(true);
    /// let mut log = Vec::new();
    /// base.run(&mut log)?;
    /// assert_eq!(log, ["first", "second"]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_timer<F>(&mut self, delay: Duration, callback: F) -> TimerId
    where
        F: FnOnce(&mut EventBase<S>, &mut S, TimerId) + 'static,
    {
        let deadline = deadline_after(self.clock.now(), delay);
        let id = self
            .timers
            .insert(deadline, true, Action::Once(Some(Box::new(callback))));
        log::trace!("{id:?} added: once in {delay:?}");
        id
    }

    /// Runs `callback` every `period`, first one `period` from now, until cancelled (from any
    /// callback, its own included). `schedule` picks drift-free or fixed-delay repeats; either
    /// way a stall makes it fire once, not in a burst. A zero period fires once per iteration.
    ///
    /// ```
    /// use std::time::Duration;
    /// use aioloop::{EventBase, Schedule};
    ///
    /// let mut base = EventBase::<u32>::new()?;
    /// base.add_repeating_timer(Duration::from_millis(1), Schedule::FixedRate, |base, n, me| {
    ///     *n += 1;
    ///     if *n == 3 {
    ///         base.cancel_timer(me);
    ///     }
    /// });
    /// base.set_exit_when_empty(true);
    /// let mut n = 0;
    /// base.run(&mut n)?;
    /// assert_eq!(n, 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_repeating_timer<F>(
        &mut self,
        period: Duration,
        schedule: Schedule,
        callback: F,
    ) -> TimerId
    where
        F: FnMut(&mut EventBase<S>, &mut S, TimerId) + 'static,
    {
        let deadline = deadline_after(self.clock.now(), period);
        let action = Action::Repeat {
            period,
            schedule,
            callback: Some(Box::new(callback)),
        };
        let id = self.timers.insert(deadline, true, action);
        log::trace!("{id:?} added: every {period:?} ({schedule:?})");
        id
    }

    /// Cancels a timer; returns whether it was pending. A one-shot timer that has fired, a
    /// cancelled timer, or an unknown id give `false`. A repeating timer may cancel itself from
    /// its own callback.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        let cancelled = self.timers.remove(id).is_some();
        log::trace!("{id:?} cancelled: {cancelled}");
        cancelled
    }

    /// Moves a pending timer to `delay` from now; returns `false` if it is not pending.
    /// For a repeating timer, later periods count from the new deadline. Called from the timer's
    /// own callback, it replaces the next scheduled run.
    pub fn reset_timer(&mut self, id: TimerId, delay: Duration) -> bool {
        let deadline = deadline_after(self.clock.now(), delay);
        self.timers.reschedule(id, deadline)
    }

    /// Time left until a pending timer fires (zero if due), or `None` if it is not pending.
    pub fn timer_remaining(&self, id: TimerId) -> Option<Duration> {
        let entry = self.timers.get(id)?;
        Some(Duration::from_nanos(
            entry.deadline.saturating_sub(self.clock.now()),
        ))
    }

    /// Chooses whether a timer keeps the loop alive (default: yes; `exit_after` timers: no).
    /// See [`set_exit_when_empty`](EventBase::set_exit_when_empty). Returns `false` if the timer
    /// is not pending.
    pub fn set_timer_ref(&mut self, id: TimerId, refd: bool) -> bool {
        self.timers.set_ref(id, refd)
    }
}
