//! Timers: one-shot and repeating callbacks, plus the loop's internal deadlines.
//!
//! A deadline is a [`Tick`], nanoseconds since the base was created, saturating at [`NEVER`],
//! so a delay of `Duration::MAX` neither overflows nor panics, and no deadline is ever rounded.
//!
//! The timers live in one flat table of 40-byte entries ([`table`]), a timer's links, id
//! generation and callback inline (a closure of up to one word is stored without a box,
//! see `sys::small_fn`), scheduled in one of two structures. Timers due within the next 65 µs
//! or so sit in a small indexed 4-ary heap ordered by `(deadline, seq)` ([`near`]), which gives
//! the exact earliest deadline for the timerfd and fires in exact order; the rest sit in a
//! hierarchical timing wheel of intrusive lists ([`wheel`]): 4096 slots of 65.5 µs, then six
//! levels of 64 slots each 64 times coarser, up to 2^64 ns. Adding or cancelling a timer is
//! `O(1)` (a list append or unlink; a heap operation for one due within the heap's span); the
//! wheel moves a slot into the heap only when the heap runs dry and the slot starts within one
//! slot of the loop time, so each timer is moved at most a few times, and the heap holds about
//! two slots' worth of timers, in cache, whatever their number (see [`near`]). Why this and
//! not a heap of every timer, or a plain wheel: a heap of a million timers pays `O(log n)` cache misses to add and to fire
//! (this crate's earlier 4-ary heap: 1.3 to 1.6 times tokio's `DelayQueue` to add and to fire
//! at a million timers); a plain timing wheel rounds deadlines to its slots, which loses the
//! microsecond precision and the exact timerfd wake-up this loop promises; Linux's wheel, which
//! never cascades, even fires up to an eighth of the delay late. Here the wheel only sorts timers coarsely, lists keep each deadline
//! exact, and the heap restores exact order for the few timers about to fire; equal deadlines
//! fire first in, first out because the wheel keeps every timer due at one instant in one list
//! in scheduling order (see [`wheel`]). Measured against `DelayQueue` in `docs/benchmarks.md`.
//!
//! A firing pass fires every timer due at the loop time sampled after the poll. A timer
//! scheduled during the pass for that time or earlier (a zero-delay re-arm) waits for the next
//! pass, so the loop polls for I/O in between instead of livelocking.

use std::fmt;
use std::time::{Duration, Instant};

use crate::base::EventBase;
use crate::io::HandlerKind;

mod fire;
mod near;
mod table;
mod wakeup;
mod wheel;

pub(crate) use table::Timers;
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
/// now holds another timer. (An id is a table slot and that slot's generation, 8 bytes; a slot
/// whose 2^32 generations are spent is retired, never reused.)
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: u32,
    gen: u32,
}

impl fmt::Debug for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimerId({}.{})", self.key, self.gen)
    }
}

/// How a repeating timer picks its next deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Drift-free: the next deadline is the previous deadline plus the period, so the timer
    /// keeps its phase however long callbacks take. After a stall that spans several periods
    /// it fires **once** and skips the missed slots (no catch-up burst).
    ///
    /// Lateness within the [timer slack](EventBase::set_timer_slack) is not a stall: a period
    /// shorter than the slack keeps its tick count, the ticks that one slack-rounded wake-up
    /// finds due firing back to back (each at most the slack late), one per loop iteration.
    /// Only lateness beyond the slack skips slots.
    FixedRate,
    /// The next deadline is one period after the callback returns: there is always at least a
    /// full period between two runs, and the schedule drifts by the callback's duration.
    FixedDelay,
}

/// Callback of a one-shot timer: inline if it fits in a word, else boxed.
pub(crate) type OnceCallback<S> = crate::sys::small_fn::SmallFnOnce<EventBase<S>, S, TimerId>;
/// Callback of a repeating timer.
pub(crate) type RepeatCallback<S> = Box<dyn FnMut(&mut EventBase<S>, &mut S, TimerId)>;

/// What happens when a timer's deadline passes.
pub(crate) enum Action<S> {
    /// A user one-shot timer; the callback is consumed when it fires.
    Once(OnceCallback<S>),
    /// A user repeating timer.
    Repeat {
        period: Duration,
        schedule: Schedule,
        callback: RepeatCallback<S>,
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
/// returned at `now`, on a base whose timers may fire up to `slack` late.
pub(crate) fn next_deadline(
    schedule: Schedule,
    period: Duration,
    deadline: Tick,
    now: Tick,
    slack: Tick,
) -> Tick {
    let period = ticks(period);
    match schedule {
        Schedule::FixedDelay => now.saturating_add(period),
        Schedule::FixedRate if period == 0 => now,
        Schedule::FixedRate => {
            let next = deadline.saturating_add(period);
            if next.saturating_add(slack) >= now {
                // On time, or late only by the slack's rounding: keep every tick.
                return next;
            }
            // Skip every slot missed during a stall: fire once, keep the phase.
            let missed = (now - deadline) / period;
            deadline.saturating_add((missed + 1).saturating_mul(period))
        }
    }
}

/// The clock of a base: nanoseconds of `CLOCK_MONOTONIC` (the clock of `Instant` on Linux) since
/// an `Instant` taken when the base was made, so that `base.now()` is the very instant the loop
/// read, on the timeline of every other `Instant`.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    /// Tick 0: when the base was made.
    epoch: Instant,
    /// `CLOCK_MONOTONIC` at `epoch`, to the nanosecond. A raw reading taken next to `epoch`
    /// would differ from it by the time between the two reads, and every tick with it.
    epoch_ns: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let before = crate::sys::monotonic_ns();
        let epoch = Instant::now();
        let after = crate::sys::monotonic_ns();
        // Should the standard library ever stop showing its reading (see `instant_ns`), fall
        // back to the reading taken before: ticks then run at most that gap ahead of the
        // `Instant` timeline, so no timer can fire before a deadline a caller computed from
        // `Instant::now()`, and the timerfd stays on the ticks' own timeline.
        let epoch_ns = instant_ns(&epoch)
            .filter(|ns| (before..=after).contains(ns))
            .unwrap_or(before);
        Clock { epoch, epoch_ns }
    }

    /// Nanoseconds since the base was made: one `clock_gettime` through the vDSO, cheaper
    /// than `Instant::elapsed` (whose checked arithmetic costs more than the call itself).
    #[inline]
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

/// The `CLOCK_MONOTONIC` reading an `Instant` holds, in nanoseconds. The standard library has
/// no accessor for it, but on Linux an `Instant` is that reading, seconds (`i64`) then
/// nanoseconds (`u32`), and hashes as exactly these two fields: a hasher that keeps what it is
/// given reads them back. Anything else (another representation) gives `None`; the caller
/// also checks the answer against clock readings taken around the `Instant`.
fn instant_ns(instant: &Instant) -> Option<u64> {
    use std::hash::{Hash, Hasher};

    /// Keeps the fields hashed into it, in order, if they are `i64` seconds then `u32`
    /// nanoseconds.
    #[derive(Default)]
    struct Fields {
        secs: Option<u64>,
        nanos: Option<u32>,
        unexpected: bool,
    }

    impl Hasher for Fields {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, _: &[u8]) {
            self.unexpected = true;
        }
        fn write_i64(&mut self, secs: i64) {
            self.unexpected |= self.secs.is_some();
            self.secs = u64::try_from(secs).ok();
        }
        fn write_u32(&mut self, nanos: u32) {
            self.unexpected |= self.secs.is_none() || self.nanos.is_some();
            self.nanos = Some(nanos);
        }
    }

    let mut fields = Fields::default();
    instant.hash(&mut fields);
    match fields {
        Fields {
            secs: Some(secs),
            nanos: Some(nanos),
            unexpected: false,
        } if nanos < 1_000_000_000 => secs.checked_mul(1_000_000_000)?.checked_add(nanos.into()),
        _ => None,
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
            .insert(deadline, true, Action::Once(OnceCallback::new(callback)));
        log::trace!("{id:?} added: once in {delay:?}");
        id
    }

    /// Runs `callback` every `period`, first one `period` from now, until cancelled (from any
    /// callback, its own included). `schedule` picks drift-free or fixed-delay repeats; either
    /// way a stall makes it fire once, not in a burst. A zero period fires once per iteration.
    /// To fire first at another time ("now, then every period"), see
    /// [`add_repeating_timer_after`](Self::add_repeating_timer_after).
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
        self.add_repeating_timer_after(period, period, schedule, callback)
    }

    /// Like [`add_repeating_timer`](Self::add_repeating_timer), but the first run is `first`
    /// from now; later runs follow every `period` from that first deadline. With
    /// `Duration::ZERO` it fires in the loop's next timer pass, then every period, like the
    /// first tick of `tokio::time::interval`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use aioloop::{EventBase, Schedule};
    ///
    /// let mut base = EventBase::<Vec<Instant>>::new()?;
    /// let start = Instant::now();
    /// let period = Duration::from_millis(20);
    /// base.add_repeating_timer_after(Duration::ZERO, period, Schedule::FixedRate, |base, runs, me| {
    ///     runs.push(Instant::now());
    ///     if runs.len() == 2 {
    ///         base.cancel_timer(me);
    ///     }
    /// });
    /// base.set_exit_when_empty(true);
    /// let mut runs = Vec::new();
    /// base.run(&mut runs)?;
    /// // The first run did not wait a period; the second is one period after the first's
    /// // deadline, never earlier.
    /// assert!(runs[1] - start >= period);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_repeating_timer_after<F>(
        &mut self,
        first: Duration,
        period: Duration,
        schedule: Schedule,
        callback: F,
    ) -> TimerId
    where
        F: FnMut(&mut EventBase<S>, &mut S, TimerId) + 'static,
    {
        let deadline = deadline_after(self.clock.now(), first);
        let action = Action::Repeat {
            period,
            schedule,
            callback: Box::new(callback),
        };
        let id = self.timers.insert(deadline, true, action);
        log::trace!("{id:?} added: in {first:?}, then every {period:?} ({schedule:?})");
        id
    }

    /// Cancels a timer; returns whether it was pending. A one-shot timer that has fired, a
    /// cancelled timer, or an unknown id give `false`. A repeating timer may cancel itself from
    /// its own callback.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        let cancelled = self.timers.remove(id);
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

    /// Time left until a pending timer fires (zero if due, `Duration::MAX` if it never will),
    /// or `None` if it is not pending.
    pub fn timer_remaining(&self, id: TimerId) -> Option<Duration> {
        let deadline = self.timers.deadline(id)?;
        if deadline == NEVER {
            return Some(Duration::MAX);
        }
        Some(Duration::from_nanos(
            deadline.saturating_sub(self.clock.now()),
        ))
    }

    /// Makes room in the timer table for at least `additional` more timers than are pending,
    /// so that adding them allocates no table space. What else a timer may allocate is not
    /// reserved: the box of a closure larger than a word, a repeating timer's state, and room
    /// in the small heap of the timers due in the next 130 µs or so, when more are due there at
    /// once than ever before. For a program that knows its scale, like `Vec::reserve`; timers
    /// never need it.
    pub fn reserve_timers(&mut self, additional: usize) {
        self.timers.reserve(additional);
    }

    /// Chooses whether a timer keeps the loop alive (default: yes; `exit_after` timers: no).
    /// See [`set_exit_when_empty`](EventBase::set_exit_when_empty). Returns `false` if the timer
    /// is not pending.
    pub fn set_timer_ref(&mut self, id: TimerId, refd: bool) -> bool {
        self.timers.set_ref(id, refd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_shows_its_clock_reading() {
        let before = crate::sys::monotonic_ns();
        let instant = Instant::now();
        let after = crate::sys::monotonic_ns();
        let ns = instant_ns(&instant).expect("the Instant's fields");
        assert!(before <= ns && ns <= after, "{before} <= {ns} <= {after}");
        let later = instant + Duration::new(3, 5);
        assert_eq!(instant_ns(&later), Some(ns + 3_000_000_005));
    }

    #[test]
    fn clock_ticks_are_the_instants_it_read() {
        // A tick turned back into an Instant lies between the Instants read around it: the
        // base's timeline is the real one, not a clock read's gap behind it.
        let clock = Clock::new();
        for _ in 0..100_000 {
            let before = Instant::now();
            let tick = clock.now();
            let after = Instant::now();
            let at = clock.instant(tick);
            assert!(
                before <= at && at <= after,
                "{before:?} <= {at:?} <= {after:?}"
            );
        }
    }
}
