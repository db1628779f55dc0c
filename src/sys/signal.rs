//! Signal syscalls: masks, signalfd, dispositions, and the forwarding handler.

use std::ffi::c_void;
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{check, fork_generation};

/// A signal set, as `sigset_t`.
#[derive(Clone, Copy)]
pub(crate) struct SigSet(libc::sigset_t);

impl SigSet {
    pub(crate) fn empty() -> SigSet {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the whole set it is given.
        unsafe { libc::sigemptyset(set.as_mut_ptr()) };
        // SAFETY: initialised just above.
        SigSet(unsafe { set.assume_init() })
    }

    /// Every signal.
    pub(crate) fn full() -> SigSet {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset initialises the whole set it is given.
        unsafe { libc::sigfillset(set.as_mut_ptr()) };
        // SAFETY: initialised just above.
        SigSet(unsafe { set.assume_init() })
    }

    pub(crate) fn of(signo: i32) -> SigSet {
        let mut set = SigSet::empty();
        set.insert(signo);
        set
    }

    pub(crate) fn insert(&mut self, signo: i32) {
        // SAFETY: `self.0` is an initialised set; an invalid signo only makes this return -1.
        unsafe { libc::sigaddset(&mut self.0, signo) };
    }

    pub(crate) fn remove(&mut self, signo: i32) {
        // SAFETY: as in `insert`.
        unsafe { libc::sigdelset(&mut self.0, signo) };
    }

    pub(crate) fn contains(&self, signo: i32) -> bool {
        // SAFETY: `self.0` is an initialised set.
        unsafe { libc::sigismember(&self.0, signo) == 1 }
    }
}

/// Changes the calling thread's signal mask (`how`: `SIG_BLOCK`, `SIG_UNBLOCK`) and returns the
/// previous mask.
pub(crate) fn thread_sigmask(how: libc::c_int, set: &SigSet) -> io::Result<SigSet> {
    let mut old = SigSet::empty();
    // SAFETY: both pointers refer to initialised sets that live across the call.
    let rc = unsafe { libc::pthread_sigmask(how, &set.0, &mut old.0) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(old)
}

/// The calling thread's signal mask.
pub(crate) fn current_sigmask() -> io::Result<SigSet> {
    thread_sigmask(libc::SIG_BLOCK, &SigSet::empty())
}

/// Creates a non-blocking, close-on-exec signalfd for `set`.
pub(crate) fn signalfd_create(set: &SigSet) -> io::Result<OwnedFd> {
    // SAFETY: `set` is an initialised sigset; -1 asks for a new fd.
    let fd = check(
        unsafe { libc::signalfd(-1, &set.0, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) }
            as libc::c_long,
    )?;
    // SAFETY: signalfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Replaces the signal set of an existing signalfd.
pub(crate) fn signalfd_update(fd: BorrowedFd<'_>, set: &SigSet) -> io::Result<()> {
    // SAFETY: `fd` is an open signalfd and `set` an initialised sigset.
    check(unsafe { libc::signalfd(fd.as_raw_fd(), &set.0, 0) } as libc::c_long)?;
    Ok(())
}

/// Size of one record read from a signalfd.
pub(crate) const SIGINFO_SIZE: usize = mem::size_of::<libc::signalfd_siginfo>();

/// A batch of `signalfd_siginfo` records to read into.
pub(crate) fn siginfo_batch<const N: usize>() -> [libc::signalfd_siginfo; N] {
    // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
    unsafe { mem::zeroed() }
}

/// Reads whole `signalfd_siginfo` records into `buf`; returns how many (0: none pending).
pub(crate) fn signalfd_read(
    fd: BorrowedFd<'_>,
    buf: &mut [libc::signalfd_siginfo],
) -> io::Result<usize> {
    // SAFETY: the pointer and byte length describe `buf`, which outlives the call; the kernel
    // writes whole records only.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            mem::size_of_val(buf),
        )
    };
    match check(n as libc::c_long) {
        Ok(n) => Ok(n as usize / SIGINFO_SIZE),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Takes one pending instance of `signo` without waiting; `false` if none was pending.
pub(crate) fn take_pending(signo: i32) -> bool {
    let set = SigSet::of(signo);
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `set` and `zero` are initialised and outlive the call; a null info is allowed.
    unsafe { libc::sigtimedwait(&set.0, std::ptr::null_mut(), &zero) == signo }
}

/// Sets the disposition of `signo` to "ignore".
pub(crate) fn ignore_signal(signo: i32) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is "no flags, empty mask"; SIG_IGN needs no handler function.
    unsafe {
        let mut action: libc::sigaction = mem::zeroed();
        action.sa_sigaction = libc::SIG_IGN;
        check(libc::sigaction(signo, &action, std::ptr::null_mut()) as libc::c_long)?;
    }
    Ok(())
}

/// What the process does with a signal that is not blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// `SIG_DFL`: the default action (terminate, core, stop, or ignore, per signal(7)).
    Default,
    /// `SIG_IGN`.
    Ignore,
    /// A handler function installed with `sigaction`.
    Handler,
}

/// The current disposition of `signo` (`sigaction` with no new action).
pub(crate) fn disposition(signo: i32) -> io::Result<Disposition> {
    // SAFETY: an all-zero sigaction is a valid value for the kernel to fill.
    let mut old: libc::sigaction = unsafe { mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`, which outlives the call.
    check(unsafe { libc::sigaction(signo, std::ptr::null(), &mut old) } as libc::c_long)?;
    Ok(match old.sa_sigaction {
        libc::SIG_DFL => Disposition::Default,
        libc::SIG_IGN => Disposition::Ignore,
        _ => Disposition::Handler,
    })
}

/// Whether the kernel reaps this process's children itself as they exit (`SIGCHLD` set to
/// `SIG_IGN`, or handled with `SA_NOCLDWAIT`): `waitid` then never sees their status.
pub(crate) fn children_reaped_by_kernel() -> io::Result<bool> {
    // SAFETY: an all-zero sigaction is a valid value for the kernel to fill.
    let mut old: libc::sigaction = unsafe { mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`, which outlives the call.
    check(unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) }.into())?;
    Ok(old.sa_sigaction == libc::SIG_IGN || old.sa_flags & libc::SA_NOCLDWAIT != 0)
}

/// A signal caught by the forwarding handler, as it travels through the forwarding pipe. One
/// record is written whole (it is far below `PIPE_BUF`), so a reader always gets whole records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CaughtSignal {
    pub(crate) signo: i32,
    pub(crate) code: i32,
    pub(crate) pid: u32,
    pub(crate) uid: u32,
    pub(crate) status: i32,
    _pad: i32,
    pub(crate) value: u64,
    /// When it was caught, on the [`signal_clock`].
    pub(crate) stamp: u64,
}

/// The process-wide clock that orders signal handlers and signal instances: a handler gets an
/// instance only if it was added (took its tick) before the instance arrived (was caught by
/// the forwarding handler, or read from a signalfd).
static SIGNAL_CLOCK: AtomicU64 = AtomicU64::new(0);

/// Instances lost: the forwarding handler caught them but the pipe was full, or a base's inbox
/// was (`count_dropped`).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The next tick of the signal clock (the first is 1). Async-signal-safe: one atomic add.
pub(crate) fn signal_clock() -> u64 {
    SIGNAL_CLOCK.fetch_add(1, Ordering::SeqCst) + 1
}

/// How many signal instances were lost because the forwarding pipe or a base's inbox was
/// full, since the process started.
pub(crate) fn signals_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Counts one instance lost to a full inbox.
pub(crate) fn count_dropped() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// How many signals the kernel queues for this process (`RLIMIT_SIGPENDING`, its soft limit):
/// the bound of what waits for a base in other bases' reads, as it is of what waits in the
/// kernel. `usize::MAX` when unlimited.
pub(crate) fn pending_signals_limit() -> usize {
    // SAFETY: an all-zero rlimit is a valid value for getrlimit to fill; it outlives the call.
    let mut limit: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: getrlimit writes into `limit`, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return usize::MAX;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// The size asked for the forwarding pipe: the default `fs.pipe-max-size`, the most an
/// unprivileged process may ask for. A 40-byte record never straddles a page, so it holds
/// 256 pages of 102 records: 26,112 instances waiting for a loop to read them.
const FORWARD_PIPE_BYTES: libc::c_int = 1 << 20;

/// The write end of the forwarding pipe, for the handler (-1: none).
static FORWARD_FD: AtomicI32 = AtomicI32::new(-1);
/// The process that installed the handler: a forked child must not write into the parent's
/// pipe, which it shares.
static FORWARD_PID: AtomicI32 = AtomicI32::new(0);

/// The forwarding pipe of the process that created it: (fork generation, pid, read end, write
/// end). The pid catches a child made by a raw `clone`/`fork` syscall, which runs no
/// `pthread_atfork` handler and would otherwise read the parent's pipe.
pub(crate) struct ForwardingPipe(Option<(u64, libc::pid_t, OwnedFd, OwnedFd)>);

static PIPE: Mutex<ForwardingPipe> = Mutex::new(ForwardingPipe(None));

/// Locks the forwarding pipe's state; held across `fork` by the registry's `pthread_atfork`
/// handlers, so that no other thread holds it in the child.
pub(crate) fn lock_forwarding_pipe() -> MutexGuard<'static, ForwardingPipe> {
    PIPE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The read end of this process's forwarding pipe, created on first use (and anew in a
/// forked child, whose copy of the parent's pipe would mix the two processes' signals).
pub(crate) fn forwarding_pipe() -> io::Result<RawFd> {
    let mut pipe = lock_forwarding_pipe();
    let generation = fork_generation();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if let Some((gen, owner, read, _)) = &pipe.0 {
        if (*gen, *owner) == (generation, pid) {
            return Ok(read.as_raw_fd());
        }
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }.into())?;
    // SAFETY: pipe2 succeeded: both fds are new and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ takes an int; on failure (a lower fs.pipe-max-size) the pipe keeps
    // its default 64 KiB, and only the bound on waiting instances is lower.
    if unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, FORWARD_PIPE_BYTES) } < 0 {
        log::debug!(
            "cannot grow the signal forwarding pipe: {}",
            io::Error::last_os_error()
        );
    }
    // The fd before the pid: in a child, the handler that sees its own pid must already see
    // its own pipe, never the parent's, which the next line closes here.
    FORWARD_FD.store(write.as_raw_fd(), Ordering::SeqCst);
    FORWARD_PID.store(pid, Ordering::SeqCst);
    let raw = read.as_raw_fd();
    pipe.0 = Some((generation, pid, read, write));
    Ok(raw)
}

/// Reads whole records from the forwarding pipe into `out`; returns how many (0: none).
pub(crate) fn read_caught(fd: RawFd, out: &mut [CaughtSignal]) -> usize {
    // SAFETY: `out` is writable for its byte length; CaughtSignal is plain old data.
    let n = unsafe { libc::read(fd, out.as_mut_ptr().cast(), mem::size_of_val(out)) };
    usize::try_from(n).map_or(0, |n| n / mem::size_of::<CaughtSignal>())
}

/// The handler installed for signals a base handles while their disposition was `SIG_DFL`:
/// it writes the signal into the forwarding pipe, which every base that handles signals
/// watches. It runs in whichever thread the kernel picked (one that does not block the signal)
/// and only makes async-signal-safe calls.
extern "C" fn forward(signo: libc::c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // SAFETY: __errno_location returns this thread's errno, valid for the thread's lifetime.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above; saved so the interrupted code sees its own errno.
    let saved = unsafe { *errno };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let fd = FORWARD_FD.load(Ordering::SeqCst);
    if pid != FORWARD_PID.load(Ordering::SeqCst) || fd < 0 || info.is_null() {
        // A forked child that shares the parent's pipe, or no pipe: take the default action,
        // as if aioloop had never been there (the signal is blocked while this runs, so the
        // re-raised instance is delivered on return).
        // SAFETY: sigaction and tgkill are async-signal-safe; the zeroed action is SIG_DFL.
        unsafe {
            let dfl: libc::sigaction = mem::zeroed();
            libc::sigaction(signo, &dfl, std::ptr::null_mut());
            libc::syscall(libc::SYS_tgkill, pid, libc::gettid(), signo);
        }
    } else {
        // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO; the sigchld/rt fields are
        // read as the union members for the signal's code, as signalfd does.
        let record = unsafe {
            let info = &*info;
            CaughtSignal {
                signo,
                code: info.si_code,
                pid: info.si_pid() as u32,
                uid: info.si_uid(),
                status: if signo == libc::SIGCHLD {
                    info.si_status()
                } else {
                    0
                },
                _pad: 0,
                value: info.si_value().sival_ptr as u64,
                stamp: signal_clock(),
            }
        };
        // SAFETY: a write of one whole record from the stack.
        let written = unsafe {
            libc::write(
                fd,
                (&record as *const CaughtSignal).cast(),
                mem::size_of_val(&record),
            )
        };
        if written < 0 {
            // The pipe is full: the instance is lost, and counted (`Metrics::signals_dropped`).
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
    // SAFETY: restoring the saved errno of this thread.
    unsafe { *errno = saved };
}

/// Installs the forwarding handler for `signo` if its disposition is `SIG_DFL`, and returns
/// whether the forwarding handler is now its disposition (it may be already: inherited across
/// `fork`, say). A program's own handler, or `SIG_IGN`, is left alone.
pub(crate) fn take_over_default(signo: i32) -> io::Result<bool> {
    match disposition(signo)? {
        Disposition::Default => {}
        Disposition::Handler if is_forwarding(signo) => {
            forwarding_pipe()?;
            return Ok(true);
        }
        _ => return Ok(false),
    }
    forwarding_pipe()?;
    // SAFETY: a zeroed sigaction is "no flags, empty mask"; `forward` has the SA_SIGINFO
    // signature and is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = mem::zeroed();
        action.sa_sigaction = forward as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        check(libc::sigaction(signo, &action, std::ptr::null_mut()).into())?;
    }
    Ok(true)
}

/// Whether the forwarding handler is the disposition of `signo`.
fn is_forwarding(signo: i32) -> bool {
    // SAFETY: a null new action only reads the current one into a zeroed sigaction, which
    // outlives the call.
    unsafe {
        let mut old: libc::sigaction = mem::zeroed();
        libc::sigaction(signo, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == forward as *const () as libc::sighandler_t
    }
}

/// Puts `SIG_DFL` back for `signo` if the forwarding handler is still its disposition.
pub(crate) fn restore_default(signo: i32) {
    if is_forwarding(signo) {
        // SAFETY: a zeroed sigaction is SIG_DFL with no flags and an empty mask.
        unsafe {
            let dfl: libc::sigaction = mem::zeroed();
            libc::sigaction(signo, &dfl, std::ptr::null_mut());
        }
    }
}

/// Makes `command`'s child start with an empty signal mask and every signal at its default
/// action, as a freshly booted program expects: between `fork` and `exec`, the child resets
/// what it inherited from the loop thread (signals blocked for the signalfd, `SIG_IGN` for
/// `SIGPIPE`...).
pub(crate) fn reset_signals_on_exec(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it makes only sigaction and sigprocmask calls, on stack values,
    // allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(|| {
            // The kernel's `struct sigaction`, all zero: SIG_DFL, no flags, empty mask; the raw
            // syscall, because glibc's sigaction refuses the signals it keeps for its threads.
            // The set size 8 is _NSIG / 8 on every architecture but MIPS.
            let dfl = [0u64; 4];
            for signo in 1..=64 {
                if signo != libc::SIGKILL && signo != libc::SIGSTOP {
                    libc::syscall(libc::SYS_rt_sigaction, signo, &dfl, 0usize, 8usize);
                }
            }
            let mut empty: libc::sigset_t = mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()).into())?;
            Ok(())
        })
    };
}
