//! The process-wide list of bases that handle signals, so that each signal reaches all of them.
//!
//! Every base with a signal handler has a signalfd, and all of them read the same pending
//! signals: whichever base reads an instance first takes it from the kernel, and the others
//! would never see it. So the reader forwards every instance it reads to each other base that
//! wants that signal: into the base's inbox, then a write to the base's own eventfd, which its
//! loop harvests as [`Source::ForwardedSignals`](crate::source::Source). Each base therefore
//! sees each instance exactly once, from its own read or from its inbox, whatever thread it
//! runs on, and bases coming and going in other threads only join or leave the list.
//!
//! A signal only waits for a signalfd while every thread blocks it. A thread that does not
//! (`main`, say, when the loop runs on another thread) would take it the old way: the default
//! action kills the process, or, for SIGCHLD, SIGWINCH, SIGURG and SIGCONT, the kernel drops it
//! at once. So while any base handles a signal whose disposition was `SIG_DFL`, the registry
//! installs a forwarding handler (`sys::signal`) that writes the instance into a process-wide
//! pipe, which every base watches with the same token; whichever base reads it hands it on like
//! one of its own reads. A program's own `sigaction` handler or `SIG_IGN` is left alone.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::SignalInfo;
use crate::sys;

/// The signals a base wants, as a bit per signal number (bit `signo - 1`; Linux has 64).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Wants(u64);

impl Wants {
    fn bit(signo: i32) -> u64 {
        1u64.checked_shl(signo as u32 - 1).unwrap_or(0)
    }

    fn contains(self, signo: i32) -> bool {
        self.0 & Wants::bit(signo) != 0
    }

    fn set(&mut self, signo: i32, wanted: bool) {
        if wanted {
            self.0 |= Wants::bit(signo);
        } else {
            self.0 &= !Wants::bit(signo);
        }
    }
}

struct Member {
    id: u64,
    wants: Wants,
    inbox: Arc<Inbox>,
}

/// Signals forwarded to one base, and the eventfd that wakes it.
struct Inbox {
    queue: Mutex<Vec<SignalInfo>>,
    eventfd: OwnedFd,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Vec<SignalInfo>> {
        // Only pushes and drains run under the lock: a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Registry {
    members: Vec<Member>,
    /// Signals whose `SIG_DFL` disposition the forwarding handler replaced.
    taken_over: Wants,
}

impl Registry {
    fn wanted(&self, signo: i32) -> bool {
        self.members.iter().any(|m| m.wants.contains(signo))
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    members: Vec::new(),
    taken_over: Wants(0),
});
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One base's place in the registry; leaving it is dropping it.
pub(crate) struct Membership {
    id: u64,
    inbox: Arc<Inbox>,
}

impl Membership {
    /// Joins the registry, wanting no signal yet.
    pub(crate) fn join() -> io::Result<Membership> {
        let eventfd = sys::eventfd().map_err(|e| {
            crate::error::context(e, "cannot create the eventfd for forwarded signals")
        })?;
        let inbox = Arc::new(Inbox {
            queue: Mutex::new(Vec::new()),
            eventfd,
        });
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        registry().members.push(Member {
            id,
            wants: Wants::default(),
            inbox: inbox.clone(),
        });
        Ok(Membership { id, inbox })
    }

    /// The eventfd written when a signal is forwarded to this base.
    pub(crate) fn eventfd(&self) -> BorrowedFd<'_> {
        self.inbox.eventfd.as_fd()
    }

    /// Starts or stops receiving `signo` from other bases, and puts the forwarding handler in
    /// place (or takes it away) when the first base of the process wants it (or the last goes).
    pub(crate) fn set_wants(&self, signo: i32, wanted: bool) -> io::Result<()> {
        let mut registry = registry();
        let was_wanted = registry.wanted(signo);
        if wanted && !was_wanted && sys::take_over_default(signo)? {
            registry.taken_over.set(signo, true);
        }
        if let Some(me) = registry.members.iter_mut().find(|m| m.id == self.id) {
            me.wants.set(signo, wanted);
        }
        release_unwanted(&mut registry);
        Ok(())
    }

    /// Hands `info`, just read by this base, to every other base that wants it.
    pub(crate) fn forward(&self, info: SignalInfo) {
        for member in registry().members.iter() {
            if member.id == self.id || !member.wants.contains(info.signo) {
                continue;
            }
            let was_empty = {
                let mut queue = member.inbox.lock();
                queue.push(info);
                queue.len() == 1
            };
            if was_empty {
                sys::eventfd_add(member.inbox.eventfd.as_fd(), 1);
            }
        }
    }

    /// Takes what other bases forwarded, resetting the eventfd first so that a signal
    /// forwarded meanwhile wakes the loop again instead of waiting unseen.
    pub(crate) fn take_forwarded(&self, each: impl FnMut(SignalInfo)) {
        sys::eventfd_take(self.inbox.eventfd.as_fd());
        self.inbox.lock().drain(..).for_each(each);
    }

    /// Reads what the forwarding handler caught (from the pipe `fd`), hands each instance to
    /// the other bases that want it, and to `mine` (which keeps those this base wants).
    pub(crate) fn take_caught(&self, fd: RawFd, mut mine: impl FnMut(SignalInfo)) {
        let mut batch = [sys::CaughtSignal::default(); 16];
        loop {
            let n = sys::read_caught(fd, &mut batch);
            for caught in &batch[..n] {
                let info = SignalInfo::from_caught(caught);
                self.forward(info);
                mine(info);
            }
            if n < batch.len() {
                return;
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut registry = registry();
        registry.members.retain(|m| m.id != self.id);
        release_unwanted(&mut registry);
    }
}

/// Gives `SIG_DFL` back for every taken-over signal that no base wants any more.
fn release_unwanted(registry: &mut Registry) {
    for signo in 1..=64 {
        if registry.taken_over.contains(signo) && !registry.wanted(signo) {
            sys::restore_default(signo);
            registry.taken_over.set(signo, false);
        }
    }
}

/// Whether any base of the process still wants `signo`.
pub(crate) fn wanted_anywhere(signo: i32) -> bool {
    registry().wanted(signo)
}
