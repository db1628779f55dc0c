//! The process-wide list of bases that handle signals, so that each signal reaches all of them.
//!
//! Every base with a signal handler has a signalfd, and all of them read the same pending
//! signals: whichever base reads an instance first takes it from the kernel, and the others
//! would never see it. So the reader forwards every instance it reads to each other base that
//! wants that signal: into the base's inbox, then a write to the base's own eventfd, which its
//! loop harvests as [`Source::ForwardedSignals`](crate::source::Source). Each base therefore
//! sees each instance exactly once, from its own read or from its inbox (a standard signal
//! still waiting in an inbox coalesces with a newer one, as in the kernel), whatever thread it
//! runs on, and bases coming and going in other threads only join or leave the list. Reading
//! and forwarding happen under the registry's one lock, and a base empties its inbox before it
//! reads, so that every base sees the instances in the order the kernel queued them.
//!
//! A signal only waits for a signalfd while every thread blocks it. A thread that does not
//! (`main`, say, when the loop runs on another thread) would take it the old way: the default
//! action kills the process, or, for SIGCHLD, SIGWINCH, SIGURG and SIGCONT, the kernel drops it
//! at once. So while any base handles a signal whose disposition was `SIG_DFL`, the registry
//! installs a forwarding handler (`sys::signal`) that writes the instance into a process-wide
//! pipe, which every base watches with the same token; whichever base reads it hands it on like
//! one of its own reads. A program's own `sigaction` handler or `SIG_IGN` is left alone.

use std::cell::RefCell;
use std::io;
use std::mem;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

use super::SignalInfo;
use crate::sys::{self, ForwardingPipe};

/// Records read from a signalfd, or from the forwarding pipe, per `read(2)`.
const READ_BATCH: usize = 16;

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

/// A signal instance and when it arrived, on the signal clock (`sys::signal_clock`).
pub(crate) type Arrived = (SignalInfo, u64);

struct Member {
    id: u64,
    wants: Wants,
    /// What other bases read for this one, in the order they read it.
    inbox: Vec<Arrived>,
    /// The standard signals in `inbox`: each is there once at most, since standard signals
    /// coalesce (so a base that does not run keeps a bounded inbox of them).
    standard_in_inbox: Wants,
    /// What the kernel would queue for the process (`RLIMIT_SIGPENDING` when the base joined):
    /// the instances past it are lost, as the kernel would lose them for a reader that lags.
    inbox_bound: usize,
    /// Written when the inbox stops being empty.
    eventfd: Arc<OwnedFd>,
}

struct Registry {
    members: Vec<Member>,
    /// Signals whose `SIG_DFL` disposition the forwarding handler replaced.
    taken_over: Wants,
    /// In a forked child: the parent's members, set aside by the `fork` handler (which must
    /// not free memory) and dropped by the next `join`.
    left_by_parent: Vec<Member>,
}

impl Registry {
    fn wanted(&self, signo: i32) -> bool {
        self.members.iter().any(|m| m.wants.contains(signo))
    }

    /// Hands `arrived`, just taken from the kernel by member `from`, to every other member
    /// that wants it. A standard signal already waiting in an inbox takes the new one's place
    /// (and stamp, so a handler added between the two still gets it), as the kernel coalesces;
    /// an inbox holds as many instances as the kernel would queue, and drops (and counts) more.
    fn forward(&mut self, from: u64, arrived: Arrived) {
        let signo = arrived.0.signo;
        let standard = signo < libc::SIGRTMIN();
        for member in &mut self.members {
            if member.id == from || !member.wants.contains(signo) {
                continue;
            }
            if standard && member.standard_in_inbox.contains(signo) {
                if let Some(waiting) = member.inbox.iter_mut().find(|(i, _)| i.signo == signo) {
                    *waiting = arrived;
                    continue;
                }
            }
            if member.inbox.len() >= member.inbox_bound {
                // A base that does not run: lost, and counted (`Metrics::signals_dropped`).
                sys::count_dropped();
                continue;
            }
            member.standard_in_inbox.set(signo, standard);
            member.inbox.push(arrived);
            if member.inbox.len() == 1 {
                sys::eventfd_add(member.eventfd.as_fd(), 1);
            }
        }
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    members: Vec::new(),
    taken_over: Wants(0),
    left_by_parent: Vec::new(),
});
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, Registry> {
    fork_safe();
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// The locks the forking thread holds from the `fork` prepare handler to the parent's and
    /// the child's handlers.
    static HELD_ACROSS_FORK: RefCell<Option<(MutexGuard<'static, Registry>, MutexGuard<'static, ForwardingPipe>)>> =
        const { RefCell::new(None) };
}

/// Makes the registry and the forwarding pipe survive `fork`: a lock another thread held at
/// the fork would never be released in the child, whose first signal handler would then wait
/// forever. So the forking thread takes both locks (registry first, as everywhere) before the
/// fork and releases them after, in the parent and in the child; the child also empties the
/// registry, since the parent's bases are not its own.
fn fork_safe() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if let Err(e) = sys::at_fork(before_fork, after_fork_in_parent, after_fork_in_child) {
            log::error!("pthread_atfork failed ({e}): a child forked while another thread handles signals may deadlock");
        }
    });
}

extern "C" fn before_fork() {
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let pipe = sys::lock_forwarding_pipe();
    let _ = HELD_ACROSS_FORK.try_with(|held| *held.borrow_mut() = Some((registry, pipe)));
}

extern "C" fn after_fork_in_parent() {
    let _ = HELD_ACROSS_FORK.try_with(|held| drop(held.borrow_mut().take()));
}

extern "C" fn after_fork_in_child() {
    let _ = HELD_ACROSS_FORK.try_with(|held| {
        if let Some((mut registry, pipe)) = held.borrow_mut().take() {
            // Moves, no allocation or free: another thread of the parent may have held the
            // allocator's lock at the fork.
            let parents = mem::take(&mut registry.members);
            if registry.left_by_parent.is_empty() {
                registry.left_by_parent = parents;
            } else {
                mem::forget(parents);
            }
            drop((registry, pipe));
        }
    });
}

/// One base's place in the registry; leaving it is dropping it.
pub(crate) struct Membership {
    id: u64,
    eventfd: Arc<OwnedFd>,
}

impl Membership {
    /// Joins the registry, wanting no signal yet.
    pub(crate) fn join() -> io::Result<Membership> {
        let eventfd = Arc::new(sys::eventfd().map_err(|e| {
            crate::error::context(e, "cannot create the eventfd for forwarded signals")
        })?);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let inbox_bound = sys::pending_signals_limit();
        let left_by_parent = {
            let mut registry = registry();
            registry.members.push(Member {
                id,
                wants: Wants::default(),
                inbox: Vec::new(),
                standard_in_inbox: Wants::default(),
                inbox_bound,
                eventfd: eventfd.clone(),
            });
            mem::take(&mut registry.left_by_parent)
        };
        drop(left_by_parent);
        Ok(Membership { id, eventfd })
    }

    /// The eventfd written when a signal is forwarded to this base.
    pub(crate) fn eventfd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// Starts or stops receiving `signo` from other bases, and puts the forwarding handler in
    /// place (or takes it away) when the first base of the process wants it (or the last goes).
    pub(crate) fn set_wants(&self, signo: i32, wanted: bool) -> io::Result<()> {
        let mut registry = registry();
        if wanted {
            take_over_default(&mut registry, signo)?;
        }
        if let Some(me) = registry.members.iter_mut().find(|m| m.id == self.id) {
            me.wants.set(signo, wanted);
        }
        release_unwanted(&mut registry);
        Ok(())
    }

    /// Takes every instance that reached this base, in order, and gives each to `mine` with
    /// when it arrived: first what other bases forwarded, then, from `caught` (the forwarding
    /// pipe), what the forwarding handler caught of the signals this base wants, then all that
    /// `signalfd` holds. Each instance taken from the kernel here is forwarded to every other
    /// base that wants it. The loop passes the pipe when the pipe's or the eventfd's token fired
    /// (and the eventfd is reset then), the signalfd when its token did.
    ///
    /// All of this runs under the registry's lock, which every base takes to read from the
    /// kernel: so the instances read by different bases reach each base in the order the
    /// kernel queued them, and a base's own read never overtakes what another base read before
    /// and forwarded to it.
    pub(crate) fn harvest(
        &self,
        caught: Option<RawFd>,
        signalfd: Option<BorrowedFd<'_>>,
        mut mine: impl FnMut(Arrived),
    ) -> io::Result<()> {
        let mut registry = registry();
        let Some(me) = registry.members.iter().position(|m| m.id == self.id) else {
            return Ok(());
        };
        if caught.is_some() {
            // Reset before draining: a forward after the drain wakes the loop again. (A
            // signalfd harvest drains without resetting: the eventfd's own event follows.)
            sys::eventfd_take(self.eventfd.as_fd());
        }
        registry.members[me].standard_in_inbox = Wants::default();
        let mut inbox = mem::take(&mut registry.members[me].inbox);
        inbox.drain(..).for_each(&mut mine);
        registry.members[me].inbox = inbox; // keeps its capacity: no allocation per signal
        let wants = registry.members[me].wants;

        if let Some(pipe) = caught {
            let mut batch = [sys::CaughtSignal::default(); READ_BATCH];
            loop {
                let n = sys::read_caught(pipe, &mut batch);
                for caught in &batch[..n] {
                    let arrived = (SignalInfo::from_caught(caught), caught.stamp);
                    registry.forward(self.id, arrived);
                    if wants.contains(caught.signo) {
                        mine(arrived);
                    }
                }
                if n < batch.len() {
                    break;
                }
            }
        }

        let Some(signalfd) = signalfd else {
            return Ok(());
        };
        let mut buf = sys::siginfo_batch::<READ_BATCH>();
        loop {
            let n = sys::signalfd_read(signalfd, &mut buf)?;
            let stamp = sys::signal_clock();
            for raw in &buf[..n] {
                let arrived = (SignalInfo::from_raw(raw), stamp);
                registry.forward(self.id, arrived);
                mine(arrived);
            }
            if n < READ_BATCH {
                return Ok(());
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let gone = {
            let mut registry = registry();
            let at = registry.members.iter().position(|m| m.id == self.id);
            let gone = at.map(|at| registry.members.swap_remove(at));
            release_unwanted(&mut registry);
            gone
        };
        drop(gone);
    }
}

/// Puts the forwarding handler in place for `signo` if its disposition is `SIG_DFL`. The
/// disposition is read every time rather than trusted to `taken_over`: in a forked child, the
/// inherited handler gives a signal it takes its default action, and `SIG_DFL` with it.
fn take_over_default(registry: &mut Registry, signo: i32) -> io::Result<()> {
    if sys::take_over_default(signo)? {
        registry.taken_over.set(signo, true);
    }
    Ok(())
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

/// Called when a thread lets go of `signo` while it may still be handled elsewhere: if another
/// base of the process still handles it, makes sure that an instance the kernel hands this
/// thread (once it unblocks the signal) reaches the forwarding handler rather than the default
/// action, by installing the handler if the disposition is `SIG_DFL` again. Then runs
/// `discard` under the registry's lock, so that no base elsewhere installs the handler between
/// the disposition `discard` reads and the pending instances it takes.
pub(crate) fn forward_if_wanted(signo: i32, discard: impl FnOnce()) -> io::Result<()> {
    let mut registry = registry();
    if registry.wanted(signo) {
        take_over_default(&mut registry, signo)?;
    }
    discard();
    Ok(())
}
