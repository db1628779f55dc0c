//! Signals through one `signalfd` per base, forwarded so that every base that handles a
//! signal sees each instance.
//!
//! A signal is blocked in a thread while any base of that thread has a handler for it
//! ([`mask`] says how it is given back), and is read from the base's signalfd instead of
//! interrupting the program. Whichever base of the process reads an instance first forwards it
//! to every other base that handles that signal ([`registry`]). Within a base, every handler of
//! the signal runs, in registration order.
//!
//! # Threads
//!
//! The kernel delivers a process-directed signal (`kill`, `sigqueue`) to *any* thread that does
//! not block it, the old way. A program with more than one thread must therefore block its
//! signals in every thread: call [`block_signals`] in `main` before spawning any thread (threads
//! inherit the mask), or block them in each thread it spawns.
//!
//! # Coalescing
//!
//! Standard signals coalesce: two `SIGCHLD` sent before the loop reads them arrive as one.
//! Real-time signals (`SIGRTMIN..=SIGRTMAX`) queue, and each instance is delivered, in the
//! order the kernel queued it (see "Signals and child processes" in `docs/architecture.md` for
//! the bounds: what the forwarding pipe holds, and what waits for a base that does not run).

mod mask;
pub mod numbers;
mod registry;

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::Interest;
use slab::Slab;

use crate::base::EventBase;
use crate::source::Source;
use crate::sys::{self, SigSet};
use registry::{Arrived, Membership};

/// What a signal handler is told: the fields of the signal's `siginfo` that matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalInfo {
    /// The signal number ([`signals::SIGUSR1`](crate::signals::SIGUSR1), ...).
    pub signo: i32,
    /// How it was sent (`libc::SI_USER` for `kill`, `libc::SI_QUEUE` for `sigqueue`,
    /// `libc::CLD_EXITED` and friends for `SIGCHLD`, ...).
    pub code: i32,
    /// The sending process (or, for `SIGCHLD`, the child).
    pub pid: u32,
    /// The sender's real user id.
    pub uid: u32,
    /// For `SIGCHLD`: the exit code or the signal that ended the child.
    pub status: i32,
    /// The value passed to `sigqueue` (`sival_ptr`, whose low bits hold `sival_int`).
    pub value: u64,
}

impl SignalInfo {
    fn from_caught(caught: &sys::CaughtSignal) -> SignalInfo {
        SignalInfo {
            signo: caught.signo,
            code: caught.code,
            pid: caught.pid,
            uid: caught.uid,
            status: caught.status,
            value: caught.value,
        }
    }

    fn from_raw(raw: &libc::signalfd_siginfo) -> SignalInfo {
        SignalInfo {
            signo: raw.ssi_signo as i32,
            code: raw.ssi_code,
            pid: raw.ssi_pid,
            uid: raw.ssi_uid,
            status: raw.ssi_status,
            value: raw.ssi_ptr,
        }
    }
}

/// Identifies a signal handler of an [`EventBase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalHandlerId {
    key: usize,
    unique: u64,
}

type SignalCallback<S> = Box<dyn FnMut(&mut EventBase<S>, &mut S, SignalInfo)>;

struct Handler<S> {
    signo: i32,
    unique: u64,
    /// `None` while it runs.
    callback: Option<SignalCallback<S>>,
    one_shot: bool,
    refd: bool,
}

/// A signal read (or forwarded to this base) whose handlers have not all run yet.
struct Owed {
    info: SignalInfo,
    /// Only handlers added before the signal arrived (on the signal clock) get it...
    before: u64,
    /// ...and those up to this one have already been given it.
    done_up_to: u64,
}

impl Owed {
    /// `info`, owed to the handlers added before it arrived.
    fn new((info, arrived): Arrived) -> Owed {
        Owed {
            info,
            before: arrived,
            done_up_to: 0,
        }
    }
}

/// The signalfd a base reads, its place in the process-wide registry, and the forwarding
/// pipe it watches.
struct Reader {
    fd: OwnedFd,
    member: Membership,
    caught: RawFd,
}

/// The signal handlers of one base.
pub(crate) struct Signals<S> {
    /// Created with the first handler.
    reader: Option<Reader>,
    /// The signals this base's signalfd reads.
    set: SigSet,
    /// Each with its tick of the signal clock (`sys::signal_clock`, from 1 on: `done_up_to
    /// == 0` means no handler ran yet), which orders handlers and signals alike.
    handlers: Slab<Handler<S>>,
    owed: VecDeque<Owed>,
    refd: usize,
}

impl<S> Signals<S> {
    pub(crate) fn new() -> Self {
        Signals {
            reader: None,
            set: SigSet::empty(),
            handlers: Slab::new(),
            owed: VecDeque::new(),
            refd: 0,
        }
    }

    /// Number of handlers that keep the loop alive.
    pub(crate) fn refd(&self) -> usize {
        self.refd
    }

    /// Whether signals were read but not fully dispatched.
    pub(crate) fn has_owed(&self) -> bool {
        !self.owed.is_empty()
    }

    fn get(&self, id: SignalHandlerId) -> Option<&Handler<S>> {
        self.handlers.get(id.key).filter(|h| h.unique == id.unique)
    }

    /// The next handler owed the front signal, in registration order.
    fn next_for(&self, owed: &Owed) -> Option<SignalHandlerId> {
        self.handlers
            .iter()
            .filter(|(_, h)| {
                h.signo == owed.info.signo && h.unique > owed.done_up_to && h.unique < owed.before
            })
            .min_by_key(|(_, h)| h.unique)
            .map(|(key, h)| SignalHandlerId {
                key,
                unique: h.unique,
            })
    }

    fn wants(&self, signo: i32) -> bool {
        self.handlers.iter().any(|(_, h)| h.signo == signo)
    }

    /// Takes into the owed queue, in order, what other bases forwarded here and then either
    /// what the forwarding handler caught (`from_pipe`) or all the signalfd holds (it is
    /// edge-triggered), forwarding each instance read to the other bases that want it.
    fn harvest(&mut self, from_pipe: bool) {
        let Some(reader) = &self.reader else {
            return;
        };
        let owed = &mut self.owed;
        let (caught, signalfd) = match from_pipe {
            true => (Some(reader.caught), None),
            false => (None, Some(reader.fd.as_fd())),
        };
        let result = reader.member.harvest(caught, signalfd, |arrived| {
            owed.push_back(Owed::new(arrived))
        });
        if let Err(e) = result {
            log::error!("reading the signalfd failed: {e}");
        }
    }
}

impl<S> Drop for Signals<S> {
    fn drop(&mut self) {
        // Leave the registry first, so the mask is given back knowing this base is gone.
        self.reader = None;
        for (_, handler) in self.handlers.iter() {
            mask::release(handler.signo);
        }
    }
}

/// Checks that `signo` can be handled through a signalfd.
fn check_signal(signo: i32) -> io::Result<()> {
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    match signo {
        libc::SIGKILL | libc::SIGSTOP => refuse(format!(
            "signal {signo} (SIGKILL/SIGSTOP) can be neither caught nor blocked"
        )),
        libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE | libc::SIGILL => refuse(format!(
            "signal {signo} is a synchronous fault signal: it is raised by the faulting \
             instruction itself and cannot wait for the event loop; use sigaction"
        )),
        s if s < 1 || s > libc::SIGRTMAX() => refuse(format!(
            "{signo} is not a signal number (valid: 1..={})",
            libc::SIGRTMAX()
        )),
        s if s > libc::SIGSYS && s < libc::SIGRTMIN() => refuse(format!(
            "signal {signo} is reserved by the C library for its threads; real-time signals \
             start at SIGRTMIN ({})",
            libc::SIGRTMIN()
        )),
        _ => Ok(()),
    }
}

/// Blocks `signals` in the calling thread and, through inheritance, in every thread it spawns
/// afterwards, and records that the program wants them blocked: aioloop never unblocks them.
///
/// Call it at the start of `main`, before any thread exists, for each signal the program will
/// handle on its event loops. It is not required (see
/// [`add_signal_handler`](EventBase::add_signal_handler): a signal taken by a thread that does
/// not block it is forwarded to the loops), but it is the cheapest path, and the only one that
/// works for a signal with a `sigaction` handler of the program's own.
///
/// # Errors
///
/// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
/// on errors that carry a sentence of context ([Errors](crate#errors)).
///
/// `InvalidInput` for a signal that cannot be handled on a loop (as for
/// [`add_signal_handler`](EventBase::add_signal_handler)); nothing is blocked then.
///
/// ```
/// use aioloop::signals::{SIGHUP, SIGTERM};
///
/// aioloop::block_signals(&[SIGTERM, SIGHUP])?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let mut set = SigSet::empty();
    for &signo in signals {
        check_signal(signo)?;
        set.insert(signo);
    }
    sys::thread_sigmask(libc::SIG_BLOCK, &set)?;
    signals.iter().for_each(|&signo| mask::claim(signo));
    Ok(())
}

/// Ignores `SIGPIPE` process-wide, as daemons should: a write to a closed socket or pipe then
/// fails with `EPIPE` instead of killing the process. (Rust's own `main` already does this;
/// call it when embedding in a program whose entry point is not Rust's.)
///
/// # Errors
///
/// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
/// on errors that carry a sentence of context ([Errors](crate#errors)).
///
/// Only if `sigaction` fails, which it does not for `SIGPIPE`.
pub fn ignore_sigpipe() -> io::Result<()> {
    sys::ignore_signal(libc::SIGPIPE)
}

impl<S> EventBase<S> {
    /// Calls `callback` on the loop thread every time `signo` arrives, after any handler
    /// registered earlier for it in this base. A handler only gets signals that arrive after it
    /// was added.
    ///
    /// # How signals reach the loop
    ///
    /// * The signal is blocked in this thread while any base of the thread handles it, and read
    ///   from the base's `signalfd`.
    /// * **Every base** of the process that handles the signal gets each instance once,
    ///   whichever thread it runs on: the base that reads an instance forwards it to the others.
    /// * A thread that does not block the signal (`main`, when the loop runs on another thread)
    ///   would take it the old way. While the signal's disposition is `SIG_DFL`, aioloop
    ///   installs a small `sigaction` handler that forwards such an instance to the loops, so
    ///   it neither kills the process nor, for SIGCHLD or SIGWINCH, vanishes; `SIG_DFL` returns
    ///   with the last handler of the process. A `sigaction` handler of the program's own is
    ///   never replaced: block the signal in every thread ([`block_signals`](crate::block_signals)
    ///   in `main`, before spawning threads) for the loop to see it.
    /// * **Standard signals coalesce**: two `SIGCHLD` sent before the loop reads them arrive
    ///   as one, so count events, not signals. Real-time signals (`SIGRTMIN..=SIGRTMAX`) queue,
    ///   and each instance is delivered, in order. The bounds: instances taken by a thread
    ///   that does not block the signal wait in a pipe that holds about 26,000 of them, and
    ///   a base keeps as many instances read for it by other bases as the kernel queues
    ///   (`RLIMIT_SIGPENDING`) until it runs; past that they are lost and counted in
    ///   [`Metrics::signals_dropped`](crate::Metrics).
    /// * When the last handler of the signal in this thread goes, it stays blocked if it was
    ///   blocked before or if the program claimed it with `block_signals`. Otherwise it is
    ///   unblocked, even while another base still handles it (what this thread then takes is
    ///   forwarded to that base); pending instances go to that base, or to the program's own
    ///   handler if it has one, or are discarded first if the default action would terminate
    ///   the process.
    /// * Children inherit the blocked mask of the thread that spawns them (`std::process`
    ///   does not reset it), and so do threads: one spawned while this thread handles the
    ///   signal keeps it blocked, as if the program had blocked it there.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `InvalidInput` for SIGKILL, SIGSTOP, the synchronous fault signals (SIGSEGV, SIGBUS,
    /// SIGFPE, SIGILL), the C library's reserved signals and invalid numbers; an OS error if
    /// the signalfd, its eventfd or the forwarding pipe cannot be created (`EMFILE`...).
    ///
    /// ```no_run
    /// use aioloop::{signals::SIGHUP, EventBase};
    ///
    /// aioloop::block_signals(&[SIGHUP])?;
    /// let mut base = EventBase::<u32>::new()?;
    /// let reload = base.add_signal_handler(SIGHUP, |_, reloads, info| {
    ///     *reloads += 1;
    ///     println!("SIGHUP from pid {}", info.pid);
    /// })?;
    /// base.set_signal_ref(reload, false); // a SIGHUP handler alone keeps nothing alive
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_signal_handler<F>(&mut self, signo: i32, callback: F) -> io::Result<SignalHandlerId>
    where
        F: FnMut(&mut EventBase<S>, &mut S, SignalInfo) + 'static,
    {
        self.insert_signal_handler(signo, false, Box::new(callback))
    }

    /// Like [`add_signal_handler`](Self::add_signal_handler), but the handler is removed before
    /// its first call.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`add_signal_handler`](Self::add_signal_handler).
    pub fn add_signal_handler_once<F>(
        &mut self,
        signo: i32,
        callback: F,
    ) -> io::Result<SignalHandlerId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, SignalInfo) + 'static,
    {
        let mut callback = Some(callback);
        let callback = move |base: &mut EventBase<S>, state: &mut S, info: SignalInfo| {
            if let Some(callback) = callback.take() {
                callback(base, state, info);
            }
        };
        self.insert_signal_handler(signo, true, Box::new(callback))
    }

    /// Removes a signal handler; returns whether it existed. Allowed from any callback.
    ///
    /// When the last handler of the signal in this thread goes, the signal's mask bit is given
    /// back as [`add_signal_handler`](Self::add_signal_handler) describes.
    pub fn remove_signal_handler(&mut self, id: SignalHandlerId) -> bool {
        if self.signals.get(id).is_none() {
            return false;
        }
        let handler = self.signals.handlers.remove(id.key);
        self.signals.refd -= usize::from(handler.refd);
        if !self.signals.wants(handler.signo) {
            self.unwatch_signal(handler.signo);
        }
        mask::release(handler.signo);
        log::debug!("signal {}: handler removed", handler.signo);
        true
    }

    /// Chooses whether a signal handler keeps the loop alive (default: yes). Returns `false` if
    /// the handler does not exist.
    pub fn set_signal_ref(&mut self, id: SignalHandlerId, refd: bool) -> bool {
        let Some(handler) = self
            .signals
            .handlers
            .get_mut(id.key)
            .filter(|h| h.unique == id.unique)
        else {
            return false;
        };
        let was = mem::replace(&mut handler.refd, refd);
        self.signals.refd = self.signals.refd + usize::from(refd) - usize::from(was);
        true
    }

    fn insert_signal_handler(
        &mut self,
        signo: i32,
        one_shot: bool,
        callback: SignalCallback<S>,
    ) -> io::Result<SignalHandlerId> {
        check_signal(signo)?;
        mask::acquire(signo)?;
        if let Err(e) = self.watch_signal(signo) {
            mask::release(signo);
            return Err(e);
        }
        let unique = sys::signal_clock();
        let key = self.signals.handlers.insert(Handler {
            signo,
            unique,
            callback: Some(callback),
            one_shot,
            refd: true,
        });
        self.signals.refd += 1;
        log::debug!("signal {signo}: handler added");
        Ok(SignalHandlerId { key, unique })
    }

    /// Adds `signo` to the signalfd and to what the registry forwards here, creating both on
    /// first use.
    fn watch_signal(&mut self, signo: i32) -> io::Result<()> {
        if self.signals.set.contains(signo) {
            return Ok(());
        }
        let mut set = self.signals.set;
        set.insert(signo);
        match &self.signals.reader {
            Some(reader) => sys::signalfd_update(reader.fd.as_fd(), &set)?,
            None => self.signals.reader = Some(self.new_reader(&set)?),
        }
        if let Some(reader) = &self.signals.reader {
            if let Err(e) = reader.member.set_wants(signo, true) {
                self.unwatch_signal(signo);
                return Err(crate::error::context(
                    e,
                    format!("cannot install the forwarding handler of signal {signo}"),
                ));
            }
        }
        self.signals.set = set;
        Ok(())
    }

    fn new_reader(&self, set: &SigSet) -> io::Result<Reader> {
        let fd = sys::signalfd_create(set)
            .map_err(|e| crate::error::context(e, "cannot create the signalfd"))?;
        let member = Membership::join()?;
        let caught = sys::forwarding_pipe()
            .map_err(|e| crate::error::context(e, "cannot create the signal forwarding pipe"))?;
        let registry = self.poll.registry();
        let tokens = [
            (fd.as_raw_fd(), Source::Signals),
            (member.eventfd().as_raw_fd(), Source::ForwardedSignals),
            (caught, Source::ForwardedSignals),
        ];
        for (raw, source) in tokens {
            registry.register(&mut SourceFd(&raw), source.token(), Interest::READABLE)?;
        }
        Ok(Reader { fd, member, caught })
    }

    /// Stops reading `signo`: no handler of this base wants it any more.
    fn unwatch_signal(&mut self, signo: i32) {
        self.signals.set.remove(signo);
        let Some(reader) = &self.signals.reader else {
            return;
        };
        if let Err(e) = reader.member.set_wants(signo, false) {
            log::error!("signal {signo}: cannot leave the registry: {e}");
        }
        if let Err(e) = sys::signalfd_update(reader.fd.as_fd(), &self.signals.set) {
            log::error!("cannot update the signalfd's set: {e}");
        }
    }

    /// The signalfd is readable: take what it holds, after what other bases forwarded here
    /// (which the kernel queued earlier).
    pub(crate) fn harvest_signals(&mut self) {
        self.signals.harvest(false);
    }

    /// Signals came another way than this base's signalfd: forwarded by another base, or
    /// caught by the forwarding handler in a thread that did not block them.
    pub(crate) fn harvest_forwarded_signals(&mut self) {
        self.signals.harvest(true);
    }

    /// Runs the handlers owed each signal read, in order; stops early on `exit`, remembering
    /// which handler ran last.
    pub(crate) fn run_owed_signals(&mut self, state: &mut S) {
        while let Some(owed) = self.signals.owed.front() {
            match self.signals.next_for(owed) {
                Some(id) => self.run_signal_handler(id, owed.info, state),
                None => drop(self.signals.owed.pop_front()),
            }
            if self.exit_requested {
                return;
            }
        }
    }

    fn run_signal_handler(&mut self, id: SignalHandlerId, info: SignalInfo, state: &mut S) {
        if let Some(owed) = self.signals.owed.front_mut() {
            owed.done_up_to = id.unique;
        }
        let handler = &mut self.signals.handlers[id.key];
        let one_shot = handler.one_shot;
        let Some(mut callback) = handler.callback.take() else {
            return;
        };
        if one_shot {
            self.remove_signal_handler(id);
        }
        self.guarded(
            |base| callback(base, state, info),
            |base| {
                base.remove_signal_handler(id);
            },
        );
        if let Some(handler) = self.signals.handlers.get_mut(id.key) {
            if handler.unique == id.unique {
                handler.callback = Some(callback);
            }
        }
    }
}
