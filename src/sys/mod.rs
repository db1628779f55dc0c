//! The thin layer of raw Linux syscalls that mio does not wrap. Each function is one syscall
//! (or one libc call), returns `io::Result`, and owns every fd it creates as an `OwnedFd`.
//! The only module with `unsafe` (besides the buffer contract in `aio/buf.rs`): `signal.rs`
//! holds the signal calls and the forwarding handler, `aio.rs` and `aio_ring.rs` the kernel AIO
//! ABI and its completion ring, `small_fn.rs` the timers' callbacks stored without a box.

pub(crate) mod aio;
pub(crate) mod aio_ring;
pub(crate) mod net;
mod signal;
pub(crate) mod small_fn;

pub(crate) use signal::*;

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Turns a `-1`-on-error return value into an `io::Result`.
pub(crate) fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `pidfd_open(2)`: a close-on-exec fd that becomes readable when process `pid` exits.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`: sends `signo` to the process of `pidfd`, never to another one that
/// reuses its pid.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signo: i32) -> io::Result<()> {
    // SAFETY: the syscall takes an fd, a signal number, a null siginfo and zero flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signo,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    check(ret).map(drop)
}

/// How a child ended, as `waitid` reports it: `si_code` (`CLD_EXITED`, `CLD_KILLED`,
/// `CLD_DUMPED`) and `si_status` (the exit code or the signal).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChildEnd {
    pub(crate) code: i32,
    pub(crate) status: i32,
}

/// `waitid(P_PIDFD, fd, ..., WEXITED | WNOHANG | extra)`: the child's end, if it has exited.
pub(crate) fn waitid_pidfd(fd: BorrowedFd<'_>, extra: libc::c_int) -> io::Result<Option<ChildEnd>> {
    // SAFETY: an all-zero siginfo_t is valid; waitid fills it, leaving si_pid 0 if the child
    // has not exited yet.
    let mut info: libc::siginfo_t = unsafe { mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | extra;
    // SAFETY: `info` outlives the call; P_PIDFD takes the fd as the id.
    check(unsafe {
        libc::waitid(
            libc::P_PIDFD,
            fd.as_raw_fd() as libc::id_t,
            &mut info,
            flags,
        )
    } as libc::c_long)?;
    // SAFETY: waitid succeeded, so the child fields of the union are the ones written.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    Ok((pid != 0).then_some(ChildEnd {
        code: info.si_code,
        status,
    }))
}

/// A non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags and returns a new fd or -1.
    let fd =
        check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) } as libc::c_long)?;
    // SAFETY: the fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads (and so resets) an eventfd's counter; 0 if it was already zero.
pub(crate) fn eventfd_take(fd: BorrowedFd<'_>) -> u64 {
    let mut count = 0u64;
    // SAFETY: an 8-byte read into a u64 that outlives the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    if n == 8 {
        count
    } else {
        0
    }
}

/// Adds `n` to an eventfd's counter, waking whoever polls it. A full counter (which needs
/// 2^64 - 2 unread wake-ups) already wakes its poller, so the error is ignored.
pub(crate) fn eventfd_add(fd: BorrowedFd<'_>, n: u64) {
    // SAFETY: an 8-byte write from a u64 that outlives the call.
    unsafe { libc::write(fd.as_raw_fd(), (&n as *const u64).cast(), 8) };
}

/// A number that changes in a child process after every `fork` (through `pthread_atfork`), so
/// an object can tell whether it is still in the process that created it without a syscall.
pub(crate) fn fork_generation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Once;

    static GENERATION: AtomicU64 = AtomicU64::new(0);
    static REGISTER: Once = Once::new();

    extern "C" fn in_child() {
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }

    REGISTER.call_once(|| {
        // SAFETY: registers a child handler that only does an atomic add, which is
        // async-signal-safe as a fork child handler must be; no prepare or parent handler.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        if rc != 0 {
            log::error!("pthread_atfork failed ({rc}): a forked child cannot be detected");
        }
    });
    GENERATION.load(Ordering::Relaxed)
}

/// The process a base belongs to: its fork generation and its pid. The generation catches a
/// `fork` without a syscall; the pid catches a child made by a raw `clone`/`fork` syscall,
/// which runs no `pthread_atfork` handler.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner {
    generation: u64,
    pid: libc::pid_t,
}

impl Owner {
    /// The calling process.
    pub(crate) fn current() -> Owner {
        Owner {
            generation: fork_generation(),
            pid: getpid(),
        }
    }

    /// Whether the calling process is this one (not a child forked from it).
    pub(crate) fn is_current(&self) -> bool {
        self.generation == fork_generation() && self.pid == getpid()
    }
}

/// `getpid(2)`, asked of the kernel every time (glibc no longer caches it).
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Registers `pthread_atfork` handlers. Each must be safe to run in a child of a
/// multi-threaded process: they only lock, unlock and move what the prepare handler locked.
pub(crate) fn at_fork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> io::Result<()> {
    // SAFETY: registers three plain functions that live for the whole program.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    match rc {
        0 => Ok(()),
        rc => Err(io::Error::from_raw_os_error(rc)),
    }
}

/// Makes `fd` non-blocking (`O_NONBLOCK`), keeping its other status flags.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = file_status_flags(fd)?;
    // SAFETY: F_SETFL takes an int of status flags.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }.into())?;
    Ok(())
}

/// A close-on-exec duplicate of `fd`.
pub(crate) fn dup_cloexec(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd (the lowest from 3 on) or -1.
    let new = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) }.into())?;
    // SAFETY: the fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new as RawFd) })
}

/// Waits until the child of the pidfd `fd` exits, and reaps it (`waitid(P_PIDFD)` without
/// `WNOHANG`, retried on `EINTR`).
pub(crate) fn reap_pidfd(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is valid for waitid to fill; it outlives the call.
        let mut info: libc::siginfo_t = unsafe { mem::zeroed() };
        // SAFETY: P_PIDFD takes the fd as the id; `info` outlives the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        match check(rc.into()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result.map(drop),
        }
    }
}

/// What an fd that `LISTEN_FDS` announces turns out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inherited {
    /// Not open.
    Closed,
    /// Open and close-on-exec: it cannot have come through `exec`, so this program image
    /// opened it (or took it over already).
    CloseOnExec,
    /// Inherited, but not a socket; the `S_IFMT` bits of its mode.
    NotSocket(u32),
    /// An inherited socket.
    Socket,
}

/// Looks at `fd` without taking it: open? close-on-exec? a socket?
pub(crate) fn inherited(fd: RawFd) -> Inherited {
    // SAFETY: F_GETFD only reads the fd's flags, and fails with EBADF if it is not open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Inherited::Closed;
    }
    if flags & libc::FD_CLOEXEC != 0 {
        return Inherited::CloseOnExec;
    }
    // SAFETY: an all-zero stat is valid for fstat to fill; it outlives the call.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: fstat of an open fd into `st`.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Inherited::Closed;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => Inherited::Socket,
        kind => Inherited::NotSocket(kind),
    }
}

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock of `std::time::Instant` and of timerfds.
#[inline]
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A non-blocking, close-on-exec timerfd on `CLOCK_MONOTONIC`, disarmed.
pub(crate) fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes a clock id and flags and returns a new fd or -1.
    let fd = check(
        unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        }
        .into(),
    )?;
    // SAFETY: the fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Arms a timerfd to expire once at the absolute `CLOCK_MONOTONIC` time `at_ns` (disarms it
/// for `None`). Arming resets its expiry count, so it is readable again only after `at_ns`.
pub(crate) fn timerfd_arm(fd: BorrowedFd<'_>, at_ns: Option<u64>) -> io::Result<()> {
    // An absolute time of zero would disarm the timer: the earliest real deadline is 1 ns.
    let ns = at_ns.map_or(0, |ns| ns.max(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        },
    };
    // SAFETY: `spec` is a valid itimerspec that outlives the call; the old value is not asked.
    check(
        unsafe {
            libc::timerfd_settime(
                fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        }
        .into(),
    )?;
    Ok(())
}

/// Whether `fd` is on a file system known not to support `RWF_NOWAIT` (FUSE, NFS, CIFS/SMB,
/// 9P, Ceph, AFS...), whose kernel AIO reads and writes run inside `io_submit`. Unknown file
/// systems answer `false`: a first request then finds out (`EOPNOTSUPP`).
pub(crate) fn fs_lacks_nowait(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: an all-zero statfs is a valid value for the kernel to fill.
    let mut st: libc::statfs = unsafe { mem::zeroed() };
    // SAFETY: `st` outlives the call.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    // FUSE, NFS, CIFS, SMB2, 9P, Ceph, AFS (statfs(2) magic numbers).
    const LACK_NOWAIT: [u32; 7] = [
        0x6573_5546,
        0x0000_6969,
        0xff53_4d42,
        0xfe53_4d42,
        0x0102_1997,
        0x00c3_6400,
        0x6b41_4653,
    ];
    LACK_NOWAIT.contains(&(st.f_type as u32))
}

/// `fallocate(2)`: allocates (or, with `mode` flags, punches or zeroes) a range of a file.
pub(crate) fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = match (i64::try_from(offset), i64::try_from(len)) {
        (Ok(o), Ok(l)) => (o, l),
        _ => return Err(io::ErrorKind::InvalidInput.into()),
    };
    // SAFETY: fallocate takes an fd and plain integers.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset, len) }.into())?;
    Ok(())
}

/// The file status flags of `fd` (`fcntl(F_GETFL)`: `O_DIRECT`, `O_NONBLOCK`, ...).
pub(crate) fn file_status_flags(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no pointer argument.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) } as libc::c_long)?;
    Ok(flags as libc::c_int)
}

/// `statx(STATX_DIOALIGN)`: the O_DIRECT alignment of `fd`'s memory buffers and of its file
/// offsets and lengths, or `None` if the file system does not report it.
pub(crate) fn dio_alignment(fd: BorrowedFd<'_>) -> Option<(usize, usize)> {
    // SAFETY: an all-zero statx is a valid value for the kernel to fill.
    let mut stx: libc::statx = unsafe { mem::zeroed() };
    // SAFETY: the empty path with AT_EMPTY_PATH names `fd` itself; `stx` outlives the call.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    let reported = rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0;
    reported.then_some((
        stx.stx_dio_mem_align as usize,
        stx.stx_dio_offset_align as usize,
    ))
}

/// `statx` of `fd` itself with `AT_STATX_DONT_SYNC`: what the kernel holds, never asking a
/// FUSE or network server (which may stall). `mask` names the fields wanted beyond the basics.
fn statx_held(fd: BorrowedFd<'_>, mask: u32) -> io::Result<libc::statx> {
    // SAFETY: an all-zero statx is a valid value for the kernel to fill.
    let mut stx: libc::statx = unsafe { mem::zeroed() };
    // SAFETY: the empty path with AT_EMPTY_PATH names `fd` itself; `stx` outlives the call.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            mask,
            &mut stx,
        )
    };
    check(rc.into())?;
    Ok(stx)
}

/// The device of the file system `fd` is on (from what the kernel holds: see [`statx_held`]),
/// or 0 if unknown.
pub(crate) fn device_of(fd: BorrowedFd<'_>) -> u64 {
    statx_held(fd, 0).map_or(0, |stx| libc::makedev(stx.stx_dev_major, stx.stx_dev_minor))
}

/// The type bits of the mode (`S_IFMT`), the device and the inode number of `fd`'s file,
/// which never change for an inode (from what the kernel holds: see [`statx_held`]).
pub(crate) fn kind_and_identity(fd: BorrowedFd<'_>) -> io::Result<(u32, u64, u64)> {
    let stx = statx_held(fd, libc::STATX_TYPE | libc::STATX_INO)?;
    let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    Ok((u32::from(stx.stx_mode) & libc::S_IFMT, dev, stx.stx_ino))
}

/// `send(2)` of `bytes` on the socket `fd` with `MSG_NOSIGNAL` (see [`sendmsg`]): the count
/// written.
pub(crate) fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `bytes`, which outlives the call.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// `write(2)` of `bytes` to `fd`: the count written.
pub(crate) fn write(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `bytes`, which outlives the call.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// `sendmsg(2)` of `slices` on the socket `fd` with `MSG_NOSIGNAL`, so that a peer that went
/// away gives `EPIPE` rather than a `SIGPIPE` that kills the process: the count written.
pub(crate) fn sendmsg(fd: RawFd, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // `IoSlice` is ABI-compatible with `struct iovec` on Unix; the kernel only reads them.
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len() as _;
    // SAFETY: `msg` names the slices, which outlive the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// `writev(2)` of `slices` to `fd`: the count written.
pub(crate) fn writev(fd: RawFd, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix, and the slices outlive
    // the call; the count fits an int (at most `IOVECS`).
    let n = unsafe { libc::writev(fd, slices.as_ptr().cast(), slices.len() as libc::c_int) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// Takes ownership of `fd`, an fd this process inherited at `exec` (systemd's socket
/// activation), after checking it is open, and makes it close-on-exec.
///
/// The caller guarantees that nothing else in the process owns `fd` (see
/// `systemd::listen_fds`, which hands each inherited fd out once, and only fds that came
/// through `exec`).
pub(crate) fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the fd's flags, and fails with EBADF if it is not open.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) }.into())?;
    // SAFETY: F_SETFD sets the fd's flags; the fd is open (checked above).
    check(
        unsafe { libc::fcntl(fd, libc::F_SETFD, flags as libc::c_int | libc::FD_CLOEXEC) }.into(),
    )?;
    // SAFETY: the fd is open, and by the caller's guarantee owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(2)` of `path` relative to the directory `dir`, with `flags` (plus `O_CLOEXEC`) and
/// `resolve` (`RESOLVE_*`): a new fd.
pub(crate) fn openat2(
    dir: BorrowedFd<'_>,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero open_how is valid (no flags, no mode, no resolve restrictions).
    let mut how: libc::open_how = unsafe { mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: `path` is a C string and `how` an open_how of the size passed, both outliving
    // the call; the syscall returns a new fd or -1.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: the fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
