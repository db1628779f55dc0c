//! The timerfd that wakes the loop for its earliest timer, to the microsecond.
//!
//! `epoll_wait` takes its timeout in whole milliseconds, and mio rounds up, so a loop that
//! sleeps until its next timer wakes up to a millisecond late (p99 1.13 ms measured on an idle
//! loop). Instead, the loop arms one timerfd, at the absolute `CLOCK_MONOTONIC` time of its
//! earliest deadline, and registers it on its epoll: the poll then waits without a timeout
//! and the timerfd's expiry wakes it. (When the earliest timer is beyond the next wheel slot,
//! in a slot of more than a few timers, it is armed for that slot's start instead, earlier:
//! the loop wakes there, moves the slot down and re-arms, at most once per wheel level.) The
//! timerfd is re-armed only when the earliest deadline changes (one `timerfd_settime`), never
//! per dispatched event, and never read: re-arming resets its expiry count, and epoll is
//! edge-triggered. It is made with the base.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::Interest;

use super::Tick;
use crate::base::EventBase;
use crate::source::Source;
use crate::sys;

/// The timerfd of a base.
#[derive(Default)]
pub(crate) struct Wakeup {
    fd: Option<OwnedFd>,
    /// The time the timerfd is armed for: when the loop must wake for its timers (see
    /// `Timers::next_deadline_mut`), rounded up to the slack.
    armed: Option<Tick>,
    /// When the loop must wake for its timers, rounded up to the slack, as the last
    /// `arm_timer_wakeup` found it.
    next: Option<Tick>,
    /// Creating the timerfd failed (fd limit): fall back to the poll's millisecond timeout.
    unavailable: bool,
    /// How long before a deadline the timerfd fires, for the loop to busy-poll the rest.
    spin: Tick,
    /// Deadlines round up to a multiple of this (0: none), so that timers due close together
    /// share one wake-up.
    slack: Tick,
}

impl Wakeup {
    /// How long the poll may wait for the earliest timer at time `now`: `None` when the
    /// timerfd will wake it or no timer can fire, zero when the timer is due or in its spin
    /// window. It reads what `arm_timer_wakeup`, the last work before each poll, found.
    #[inline]
    pub(crate) fn poll_timeout(&self, now: Tick) -> Option<Duration> {
        let at = self.next?;
        let left = at.saturating_sub(now);
        let armed = self.armed == Some(at);
        if left == 0 || (armed && left <= self.spin) {
            Some(Duration::ZERO)
        } else if armed {
            None
        } else {
            Some(Duration::from_nanos(left))
        }
    }

    /// The timer slack, in ticks.
    pub(crate) fn slack(&self) -> Tick {
        self.slack
    }

    /// When the loop wakes for a deadline `at`: `at` rounded up to the slack.
    fn slot(&self, at: Tick) -> Tick {
        match self.slack {
            0 => at,
            slack => at.div_ceil(slack).saturating_mul(slack),
        }
    }
}

impl<S> EventBase<S> {
    /// Trades CPU for timer precision: timers wake the loop `spin` before their deadline, and
    /// the loop then polls without blocking (still serving I/O) until the deadline. Default: 0.
    ///
    /// Without it, a timer fires as late as the kernel takes to wake a sleeping thread after
    /// a timerfd expires, which is a few microseconds on bare metal but around 100 µs (p50)
    /// and several hundred (p99) in a virtual machine. With `spin` above that wake-up latency,
    /// timers fire within a few microseconds of their deadline, for the cost of a busy `spin`
    /// before each of them (at 100 timers a second, 200 µs of spin is 2% of a core).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let mut base = aioloop::EventBase::<()>::new()?;
    /// base.set_timer_spin(Duration::from_micros(200));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_timer_spin(&mut self, spin: Duration) {
        self.wakeup.spin = super::ticks(spin);
        self.wakeup.armed = None; // re-arm for the new window before the next poll
    }

    /// Trades timer precision for fewer wake-ups: a timer may fire up to `slack` after its
    /// deadline (never before), because deadlines round up to a multiple of `slack` and the
    /// timers of one such slot fire in one iteration. Default: 0, each timer on its own
    /// deadline. Like Linux's timer slack and libev's timeout collect interval, it is for
    /// programs with many timers that need no sub-millisecond precision: 100,000 timers spread
    /// over 100 ms cost about an eighth of the CPU to fire with 1 ms of slack (`timers_1m` in the
    /// bench member).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let mut base = aioloop::EventBase::<()>::new()?;
    /// base.set_timer_slack(Duration::from_millis(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_timer_slack(&mut self, slack: Duration) {
        self.wakeup.slack = super::ticks(slack);
        self.wakeup.armed = None;
    }

    /// Arms the timerfd for the earliest deadline, if that changed since it was last armed.
    /// Inlined: it runs before every poll, and the deadline rarely changed.
    #[inline]
    pub(crate) fn arm_timer_wakeup(&mut self) {
        let next = self
            .timers
            .next_deadline_mut(self.now)
            .map(|at| self.wakeup.slot(at));
        self.wakeup.next = next;
        if next != self.wakeup.armed && !self.wakeup.unavailable {
            self.rearm_timer_wakeup(next);
        }
    }

    fn rearm_timer_wakeup(&mut self, next: Option<Tick>) {
        if let Err(e) = self.try_arm(next) {
            log::warn!("cannot arm the timerfd ({e}); timers fall back to millisecond precision");
            self.wakeup.unavailable = true;
            self.wakeup.armed = None;
        }
    }

    /// Creates and registers the timerfd. The base does it when it is made, so that timers
    /// keep their precision in a process that later runs out of fds; if even that fails, they
    /// fall back to the poll's millisecond timeout.
    pub(crate) fn create_timer_wakeup(&mut self) {
        let created = sys::timerfd().and_then(|fd| {
            let token = Source::Timer.token();
            let raw = fd.as_raw_fd();
            let mut source = SourceFd(&raw);
            self.poll
                .registry()
                .register(&mut source, token, Interest::READABLE)?;
            Ok(fd)
        });
        match created {
            Ok(fd) => self.wakeup.fd = Some(fd),
            Err(e) => {
                log::warn!(
                    "cannot create the timerfd ({e}); timers fall back to millisecond precision"
                );
                self.wakeup.unavailable = true;
            }
        }
    }

    fn try_arm(&mut self, next: Option<Tick>) -> io::Result<()> {
        let Some(fd) = self.wakeup.fd.as_ref() else {
            return Err(io::Error::other("no timerfd"));
        };
        let fire_at = next.map(|t| self.clock.monotonic_ns(t.saturating_sub(self.wakeup.spin)));
        sys::timerfd_arm(fd.as_fd(), fire_at)?;
        self.wakeup.armed = next;
        Ok(())
    }
}
