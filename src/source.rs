//! The loop's internal sources: one list, and the five questions the loop asks each of them.
//!
//! fd handlers and timers are the loop's own tables. Everything else that wakes the loop is an
//! internal *source*: it owns one reserved epoll token (an eventfd or signalfd of its own), and
//! it may hold *owed* work, callbacks that are ready to run without waiting for the kernel (a
//! request cancelled while queued, a signal read before an `exit`, ...). The iteration in
//! `base.rs` is written as loops over [`Source::ALL`]:
//!
//! 1. [`prepare`](Source::prepare) every source (submit what callbacks queued);
//! 2. poll, with a zero timeout if any source [`owes_work`](Source::owes_work), so owed work
//!    never waits behind a blocking poll;
//! 3. for each harvested event whose token is a source's, [`harvest`](Source::harvest) it (take
//!    what the kernel has into the source's owed queue);
//! 4. [`run_owed`](Source::run_owed) for every source that owes work;
//! 5. between runs, [`keeps_alive`](Source::keeps_alive) decides, with the tables, whether a
//!    run with `set_exit_when_empty` goes on.
//!
//! A new source is one more variant here: the compiler then asks for its arm in every question.

use mio::Token;

use crate::base::EventBase;

/// An internal source of events; its token is reserved at the top of the token space, which
/// fd tokens never reach (see `io/token.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Closures posted from other threads ([`Remote`](crate::Remote)), on a `mio::Waker`.
    Posts,
    /// Signals, on the base's signalfd.
    Signals,
    /// Signals that reach this base another way than its signalfd: forwarded by another base
    /// of the process (an eventfd), or caught by the forwarding handler (a pipe).
    ForwardedSignals,
    /// Jobs the helper threads finished, on the pool's eventfd. Before `Aio`: AIO requests
    /// a helper finished join the AIO completions of the same iteration.
    Helpers,
    /// Kernel AIO completions, on the context's eventfd.
    Aio,
    /// The timerfd armed for the earliest timer; its expiry only wakes the poll, and the
    /// timers fire in the iteration's timer step.
    Timer,
}

// fd tokens stay below the reserved range (`io/token.rs`); the list must fit in it.
const _: () = assert!(Source::ALL.len() <= Source::RESERVED_TOKENS);

/// How many AIO completions one pass runs (helper results: how many beyond those owed when the
/// pass began, which the helper count bounds): a thousand reads done at once, or a chain of
/// completions that each cause the next (a cached read queued by the callback of the one
/// before), yields to events and due timers after this many, yet pays one poll per this many
/// callbacks, not one per callback.
pub(crate) const PASS_BUDGET: usize = 64;

impl Source {
    /// Every source, in the order their owed work runs within an iteration: the order of the
    /// variants, which `from_token` relies on.
    pub(crate) const ALL: [Source; 6] = [
        Source::Posts,
        Source::Signals,
        Source::ForwardedSignals,
        Source::Helpers,
        Source::Aio,
        Source::Timer,
    ];

    /// How many tokens, counted down from `usize::MAX`, are reserved for internal sources.
    pub(crate) const RESERVED_TOKENS: usize = 8;

    /// The source's reserved token.
    pub(crate) const fn token(self) -> Token {
        Token(usize::MAX - self as usize)
    }

    /// The source a harvested token belongs to, if it is not an fd's.
    pub(crate) fn from_token(token: Token) -> Option<Source> {
        let index = usize::MAX - token.0;
        Source::ALL.get(index).copied()
    }

    /// Work done before each poll: what callbacks asked for goes out together.
    pub(crate) fn prepare<S>(self, base: &mut EventBase<S>) {
        match self {
            Source::Aio => base.flush_aio(),
            Source::Timer => base.arm_timer_wakeup(),
            Source::Posts | Source::Signals | Source::ForwardedSignals | Source::Helpers => {}
        }
    }

    /// Its fd was reported ready: move what the kernel (or another thread) has into the
    /// source's owed queue. Runs no callback.
    pub(crate) fn harvest<S>(self, base: &mut EventBase<S>) {
        match self {
            Source::Posts => base.harvest_posts(),
            Source::Signals => base.harvest_signals(),
            Source::ForwardedSignals => base.harvest_forwarded_signals(),
            Source::Aio => base.harvest_aio(),
            Source::Helpers => base.harvest_helpers(),
            Source::Timer => {}
        }
    }

    /// Whether callbacks are ready to run without waiting for the kernel.
    pub(crate) fn owes_work<S>(self, base: &EventBase<S>) -> bool {
        match self {
            Source::Posts => base.owes_posts(),
            Source::Signals => base.signals.has_owed(),
            Source::ForwardedSignals => false, // harvested into the same owed queue
            Source::Aio => base.aio.owes_work(),
            Source::Helpers => base.pool.owes_work(),
            Source::Timer => false, // due timers fire in the timer step
        }
    }

    /// Runs the owed callbacks; stops early, keeping the rest owed, when one calls `exit`.
    pub(crate) fn run_owed<S>(self, base: &mut EventBase<S>, state: &mut S) {
        match self {
            Source::Posts => base.run_posts(state),
            Source::Signals => base.run_owed_signals(state),
            Source::ForwardedSignals | Source::Timer => {}
            Source::Aio => base.run_aio_completions(state),
            Source::Helpers => base.run_helper_completions(state),
        }
    }

    /// Whether the source keeps a run with `set_exit_when_empty` going.
    pub(crate) fn keeps_alive<S>(self, base: &EventBase<S>) -> bool {
        match self {
            Source::Posts => base.has_queued_posts(),
            Source::Signals => base.signals.refd() > 0,
            Source::ForwardedSignals => false,
            Source::Aio => base.aio.pending() > 0,
            Source::Helpers => base.pool.pending() > 0,
            Source::Timer => false, // the timers themselves count
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_round_trips_through_its_token() {
        for source in Source::ALL {
            assert_eq!(Source::from_token(source.token()), Some(source));
        }
        assert!(Source::ALL.len() <= Source::RESERVED_TOKENS);
        assert_eq!(Source::from_token(Token(0)), None);
        assert_eq!(
            Source::from_token(Token(usize::MAX - Source::ALL.len())),
            None
        );
    }
}
