//! Which signals aioloop blocks in a thread, and how it gives them back.
//!
//! A signal is read from a signalfd only while it is blocked in the reading thread, so the first
//! handler of a signal in a thread blocks it there (unless the thread blocks it already).
//! Giving it back when the last handler goes must not undo anybody else's choice, nor throw a
//! signal at a default action that kills the process. When the last handler of `signo` in this
//! thread goes, the signal stays blocked if it was blocked before the first handler came (the
//! thread's own mask), or if the program has since claimed it with
//! [`block_signals`](crate::block_signals). Otherwise it is unblocked at once, even while
//! another base of the process still handles it: the forwarding handler (`registry`), put back
//! in place if the disposition is `SIG_DFL` again, then carries each instance this thread
//! takes to that base.
//!
//! Instances still pending at the unblock go where the disposition says (read, and the fatal
//! ones discarded, under the registry's lock, so that a base elsewhere cannot install the
//! forwarding handler in between and see its instances discarded here): to the forwarding
//! handler while another base handles the signal, to the program's own `sigaction` handler, or
//! nowhere for an ignored signal. Only under the default disposition of a signal whose default
//! action is not "ignore" are pending instances discarded first, since delivering them would
//! terminate (or stop) the process.

use std::cell::RefCell;
use std::io;

use super::registry;
use crate::sys::{self, Disposition, SigSet};

#[derive(Clone, Copy, Default)]
struct Want {
    /// Handlers of the signal in all bases of this thread.
    handlers: u32,
    /// aioloop blocked the signal when the first handler came.
    blocked_by_us: bool,
    /// The program asked for it blocked through `block_signals`.
    claimed: bool,
}

thread_local! {
    static WANTS: RefCell<[Want; 65]> = const { RefCell::new([Want { handlers: 0, blocked_by_us: false, claimed: false }; 65]) };
}

/// One more handler of `signo` in this thread: block it here if it is not yet.
pub(super) fn acquire(signo: i32) -> io::Result<()> {
    WANTS.with(|wants| {
        let want = &mut wants.borrow_mut()[signo as usize];
        // A block aioloop kept (see `release`) is still aioloop's, not the program's.
        if want.handlers == 0 && !want.blocked_by_us && !sys::current_sigmask()?.contains(signo) {
            sys::thread_sigmask(libc::SIG_BLOCK, &SigSet::of(signo))?;
            want.blocked_by_us = true;
        }
        want.handlers += 1;
        Ok(())
    })
}

/// One handler of `signo` less in this thread; the last one gives the signal back (see the
/// module docs).
pub(super) fn release(signo: i32) {
    // `try_with`: a base dropped during thread teardown has no mask left to give back.
    let _ = WANTS.try_with(|wants| {
        let mut wants = wants.borrow_mut();
        let want = &mut wants[signo as usize];
        want.handlers = want.handlers.saturating_sub(1);
        if want.handlers > 0 || !want.blocked_by_us {
            return;
        }
        if want.claimed {
            want.blocked_by_us = false;
            return;
        }
        match registry::forward_if_wanted(signo, || discard_if_fatal(signo)) {
            Ok(()) => {
                want.blocked_by_us = false;
                unblock(signo);
            }
            // Unblocking now could hand an instance to the default action while another base
            // handles the signal: keep the block, still as aioloop's, for the next handler of
            // this thread to give back.
            Err(e) => log::error!("signal {signo}: kept blocked, cannot forward it: {e}"),
        }
    });
}

/// Records that the program itself wants `signo` blocked in this thread.
pub(super) fn claim(signo: i32) {
    WANTS.with(|wants| wants.borrow_mut()[signo as usize].claimed = true);
}

/// Takes the pending instances of `signo` that its disposition would let terminate (or stop)
/// the process once this thread unblocks it.
fn discard_if_fatal(signo: i32) {
    let disposition = match sys::disposition(signo) {
        Ok(d) => d,
        Err(e) => return log::error!("signal {signo}: cannot read its disposition: {e}"),
    };
    if disposition == Disposition::Default && !default_action_ignores(signo) {
        let mut discarded = 0;
        while sys::take_pending(signo) {
            discarded += 1;
        }
        if discarded > 0 {
            log::debug!("signal {signo}: discarded {discarded} pending with its last handler");
        }
    }
}

fn unblock(signo: i32) {
    if let Err(e) = sys::thread_sigmask(libc::SIG_UNBLOCK, &SigSet::of(signo)) {
        log::error!("signal {signo}: cannot restore the thread's mask: {e}");
    }
}

/// Signals whose default action is to do nothing (signal(7)).
fn default_action_ignores(signo: i32) -> bool {
    matches!(
        signo,
        libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT
    )
}
