//! Child processes: spawning them with a clean signal state, watching their exits through
//! `pidfd_open(2)` (Linux 5.3+), and signalling them through the same pidfd.
//!
//! A pidfd refers to one process, not to a pid number, so neither a watch nor a signal can be
//! confused by pid reuse; it becomes readable when the process exits, and
//! `waitid(P_PIDFD, ...)` reaps exactly that child, never another one. No `SIGCHLD` handler is
//! involved.
//!
//! A base reaps what it watches: a watch dropped with its base (or removed by fd number)
//! before its child exited reaps the child at once if it has exited, and otherwise hands a
//! duplicate of the pidfd to a small thread that waits for the exit and reaps it (if no thread
//! can start, that is logged and the child stays a zombie once it exits). Only
//! [`EventBase::unwatch_child`] gives the child back to the caller, unreaped.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus};
use std::rc::Rc;

use crate::base::EventBase;
use crate::error;
use crate::io::{Direction, Handlers, IoOptions};
use crate::sys;

/// How a watched child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildExit {
    /// The child's process id.
    pub pid: u32,
    /// Its exit code or the signal that killed it (`ExitStatusExt::signal`).
    pub status: ExitStatus,
}

/// A watched child process, from [`EventBase::spawn_child`], [`EventBase::watch_child`] or
/// [`EventBase::watch_pid`]: its pid, a way to signal it, and the key to stop watching it
/// ([`EventBase::unwatch_child`]).
///
/// It holds the child's pidfd (shared with the watch), so [`signal`](Self::signal) reaches that
/// process and never another that reuses its pid after it was reaped: the race that `kill(pid)`
/// has. Clones share the pidfd, which closes with the last clone and the watch.
///
/// A handle from [`spawn_child`](EventBase::spawn_child) also holds the parent's ends of the
/// pipes asked for with `Stdio::piped()`, until taken ([`take_stdin`](Self::take_stdin)...);
/// those not taken close with the last clone, as a `std::process::Child`'s do, so a child
/// reading its stdin sees its end.
#[derive(Clone, Debug)]
pub struct ChildHandle {
    pid: u32,
    watched: Rc<Watched>,
    /// Held by the handles only: the watch keeps no pipe open.
    stdio: Rc<RefCell<Stdio>>,
}

/// What a watch and its handles share.
#[derive(Debug)]
struct Watched {
    pidfd: OwnedFd,
    /// Whether the watch still answers for reaping the child: cleared once its callback
    /// reaped it, or by `unwatch_child`.
    reaps: Cell<bool>,
}

/// The parent's ends of a spawned child's pipes, non-blocking.
#[derive(Debug, Default)]
struct Stdio {
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl ChildHandle {
    /// The child's process id (for logs, `/proc/PID`; send signals with
    /// [`signal`](Self::signal)).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signo` ([`signals`](crate::signals)) to the child, through its pidfd
    /// (`pidfd_send_signal(2)`).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `ESRCH` once the child has been reaped (its exit callback ran): nothing was sent, and
    /// no other process could have received it. `EINVAL` for a bad signal number.
    pub fn signal(&self, signo: i32) -> io::Result<()> {
        sys::pidfd_send_signal(self.watched.pidfd.as_fd(), signo).map_err(|e| {
            let what = match e.raw_os_error() {
                Some(libc::ESRCH) => format!(
                    "cannot send signal {signo} to child {}: it has exited and been reaped",
                    self.pid
                ),
                _ => format!("cannot send signal {signo} to child {}", self.pid),
            };
            error::context(e, what)
        })
    }

    /// Takes the write end of the child's stdin pipe, if [`spawn_child`](EventBase::spawn_child)
    /// made one (`Stdio::piped()`) and no clone of this handle took it yet. It is non-blocking
    /// and close-on-exec: watch it with [`set_io_handler`](EventBase::set_io_handler), or give
    /// it to a writer ([`add_writer`](EventBase::add_writer)); drop it to close the child's stdin.
    pub fn take_stdin(&self) -> Option<ChildStdin> {
        self.stdio.borrow_mut().stdin.take()
    }

    /// Takes the read end of the child's stdout pipe, as [`take_stdin`](Self::take_stdin) does
    /// for stdin: non-blocking and close-on-exec, for an fd handler that reads until
    /// `WouldBlock`.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        self.stdio.borrow_mut().stdout.take()
    }

    /// Takes the read end of the child's stderr pipe, as [`take_stdout`](Self::take_stdout).
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        self.stdio.borrow_mut().stderr.take()
    }
}

/// Held by a watch's callback: if the callback goes (with its base, say) while it still
/// answers for the child, the child is reaped now if it has exited, or on a thread once it
/// does, so that it never stays a zombie.
struct Reaper {
    pid: u32,
    watched: Rc<Watched>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if !self.watched.reaps.replace(false) {
            return;
        }
        let pid = self.pid;
        match sys::waitid_pidfd(self.watched.pidfd.as_fd(), 0) {
            Ok(Some(_)) => log::debug!("child {pid} reaped as its watch was dropped"),
            Ok(None) => reap_later(pid, self.watched.pidfd.as_fd()),
            // ECHILD: not our child any more (a forked child dropping its parent's base).
            Err(e) => log::debug!("child {pid} not reaped with its watch: {e}"),
        }
    }
}

/// Reaps child `pid` on a thread of its own once it exits. The thread blocks every signal (it
/// inherits the mask of the thread that creates it, so the mask is filled around the spawn):
/// with its small stack it must never run a handler of the program's.
fn reap_later(pid: u32, pidfd: std::os::fd::BorrowedFd<'_>) {
    let spawned = sys::dup_cloexec(pidfd).and_then(|pidfd| {
        let old = sys::thread_sigmask(libc::SIG_SETMASK, &sys::SigSet::full())?;
        let spawned = std::thread::Builder::new()
            .name("aioloop-reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || match sys::reap_pidfd(pidfd.as_fd()) {
                Ok(()) => log::debug!("child {pid} reaped after its watch was dropped"),
                Err(e) => log::error!("cannot reap child {pid}: {e}"),
            });
        if let Err(e) = sys::thread_sigmask(libc::SIG_SETMASK, &old) {
            log::error!("cannot restore the thread's signal mask: {e}");
        }
        spawned
    });
    if let Err(e) = spawned {
        log::error!(
            "child {pid} outlives its watch and nothing will reap it (it stays a zombie once \
             it exits): cannot start a reaper thread: {e}"
        );
    }
}

/// Makes the children that `command` spawns start with an empty signal mask and every signal
/// at its default action, and returns `command`.
///
/// A child inherits its parent thread's signal mask and ignored signals, and
/// `std::process::Command` resets neither: spawned from a loop thread that handles `SIGTERM`,
/// a child would start with `SIGTERM` blocked and ignore every `kill`. The reset runs in the
/// child between `fork` and `exec` (async-signal-safe calls only), like libuv's; it is what
/// [`EventBase::spawn_child`] does. Use this when you spawn yourself, to keep the `Child`'s
/// pipes. Dispositions a program set on purpose for its children (`SIG_IGN` for `SIGHUP`, as
/// `nohup` does) are reset too.
///
/// ```
/// use std::process::{Command, Stdio};
///
/// let mut command = Command::new("true");
/// let child = aioloop::reset_signals_on_exec(&mut command)
///     .stdout(Stdio::piped())
///     .spawn()?;
/// # drop(child);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn reset_signals_on_exec(command: &mut Command) -> &mut Command {
    sys::reset_signals_on_exec(command);
    command
}

/// Kills and reaps a child that `spawn_child` cannot hand out: nobody would hear of it, so it
/// must not run on unwatched.
fn end_unwatched(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The wait status `waitpid` would have reported, from a `waitid` result.
fn exit_status(end: sys::ChildEnd) -> ExitStatus {
    let raw = match end.code {
        libc::CLD_EXITED => (end.status & 0xff) << 8,
        libc::CLD_DUMPED => end.status | 0x80,
        _ => end.status,
    };
    ExitStatus::from_raw(raw)
}

/// Refuses to watch children while the kernel reaps them itself: their exit status is lost,
/// and a watch would never report it.
fn refuse_if_children_reaped_by_kernel() -> io::Result<()> {
    if !sys::children_reaped_by_kernel()? {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SIGCHLD is ignored (SIG_IGN or SA_NOCLDWAIT), so the kernel reaps children as they exit \
         and their status is lost: give SIGCHLD its default disposition to watch children",
    ))
}

fn open_error(err: io::Error, pid: u32) -> io::Error {
    let what = match err.raw_os_error() {
        Some(libc::ENOSYS) => "pidfd_open is unavailable (ENOSYS): watching children needs Linux \
                               5.3 or newer, or a seccomp policy that allows it"
            .to_string(),
        Some(libc::ESRCH) => format!("there is no process {pid} (ESRCH)"),
        Some(libc::ECHILD) => format!(
            "process {pid} is not an unreaped child of this process (ECHILD): only its parent \
             can wait for it, and only once"
        ),
        _ => format!("cannot watch process {pid}"),
    };
    error::context(err, what)
}

impl<S> EventBase<S> {
    /// Calls `callback` once `child` has exited, with its exact status, and reaps it.
    ///
    /// Works for a child that has already exited. The base takes the `Child` so that nothing
    /// else waits for it; take its stdin/stdout/stderr out first if you need them (or spawn
    /// with [`spawn_child`](Self::spawn_child), which keeps them in the handle). The watch
    /// keeps the loop alive until the child exits.
    ///
    /// The base reaps what it watches: dropped before the child exits, it reaps the child at
    /// once if it has exited, and otherwise a small thread (`aioloop-reaper`) waits for the
    /// exit and reaps it (if no thread can start, that is logged as an error and the child
    /// stays a zombie once it exits); the callback is not called. Only
    /// [`unwatch_child`](Self::unwatch_child) leaves the child to the caller.
    ///
    /// Spawn the child with [`reset_signals_on_exec`], or use
    /// [`spawn_child`](Self::spawn_child), or it inherits this thread's blocked signals.
    ///
    /// ```
    /// use std::process::Command;
    /// use aioloop::EventBase;
    ///
    /// let mut base = EventBase::<Option<i32>>::new()?;
    /// let child = aioloop::reset_signals_on_exec(Command::new("sh").args(["-c", "exit 3"])).spawn()?;
    /// base.watch_child(child, |_, code, exit| *code = exit.status.code())?;
    /// base.set_exit_when_empty(true);
    /// let mut code = None;
    /// base.run(&mut code)?;
    /// assert_eq!(code, Some(3));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `ECHILD` if the process was already reaped; `ENOSYS` without `pidfd_open` (Linux older
    /// than 5.3, or a seccomp policy); `EMFILE` when out of fds; `Unsupported` while `SIGCHLD`
    /// is ignored (`SIG_IGN` or `SA_NOCLDWAIT`), which makes the kernel discard exit statuses.
    pub fn watch_child<F>(&mut self, child: Child, callback: F) -> io::Result<ChildHandle>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, ChildExit) + 'static,
    {
        self.watch_process(child.id(), Some(child), callback)
    }

    /// Like [`watch_child`](Self::watch_child), for a child known by pid (spawned without
    /// `std::process`). It must be an unreaped child of this process: anything else is refused
    /// with `ECHILD` rather than watched wrongly.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`watch_child`](Self::watch_child); `ESRCH` if there is no such process.
    pub fn watch_pid<F>(&mut self, pid: u32, callback: F) -> io::Result<ChildHandle>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, ChildExit) + 'static,
    {
        self.watch_process(pid, None, callback)
    }

    /// Spawns `command` with a clean signal state ([`reset_signals_on_exec`]) and watches the
    /// child like [`watch_child`](Self::watch_child). The child's stdin, stdout and stderr
    /// are what `command` says (inherited by default). The parent's ends of the pipes asked
    /// for with `Stdio::piped()` are made non-blocking (they are close-on-exec already) and
    /// wait in the handle: take them with [`take_stdin`](ChildHandle::take_stdin),
    /// [`take_stdout`](ChildHandle::take_stdout) and [`take_stderr`](ChildHandle::take_stderr),
    /// and watch them with [`set_io_handler`](Self::set_io_handler).
    ///
    /// ```
    /// use std::io::Read;
    /// use std::process::{Command, Stdio};
    /// use std::os::fd::AsRawFd;
    /// use aioloop::{Direction, EventBase, Handlers, IoOptions};
    ///
    /// let mut base = EventBase::<Vec<u8>>::new()?;
    /// let mut command = Command::new("echo");
    /// command.arg("hello").stdout(Stdio::piped());
    /// let child = base.spawn_child(&mut command, |_, _, _| {})?;
    /// let mut stdout = child.take_stdout().unwrap();
    /// let fd = stdout.as_raw_fd();
    /// base.set_io_handler(&fd, Direction::Read, IoOptions::new(), move |base, out, _| loop {
    ///     let mut chunk = [0; 512];
    ///     match stdout.read(&mut chunk) {
    ///         Ok(0) => {
    ///             base.remove_fd_handlers(&fd, Handlers::ALL); // EOF: the child closed it
    ///             return;
    ///         }
    ///         Ok(n) => out.extend_from_slice(&chunk[..n]),
    ///         Err(_) => return, // WouldBlock: wait for the next event
    ///     }
    /// })?;
    /// base.set_exit_when_empty(true);
    /// let mut out = Vec::new();
    /// base.run(&mut out)?;
    /// assert_eq!(out, b"hello\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// ```
    /// use std::process::Command;
    /// use aioloop::{signals::SIGTERM, EventBase};
    ///
    /// let mut base = EventBase::<Option<i32>>::new()?;
    /// let child = base.spawn_child(Command::new("sleep").arg("60"), |_, killed_by, exit| {
    ///     use std::os::unix::process::ExitStatusExt;
    ///     *killed_by = exit.status.signal();
    /// })?;
    /// child.signal(SIGTERM)?;
    /// base.set_exit_when_empty(true);
    /// let mut killed_by = None;
    /// base.run(&mut killed_by)?;
    /// assert_eq!(killed_by, Some(SIGTERM));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// What `Command::spawn` reports (the program is missing, ...), with the program's name;
    /// then as for [`watch_child`](Self::watch_child). While `SIGCHLD` is ignored nothing is
    /// spawned (`Unsupported`). A child spawned but not watched (the pidfd could not be opened,
    /// `EMFILE`...) is killed and reaped before the error returns.
    pub fn spawn_child<F>(&mut self, command: &mut Command, callback: F) -> io::Result<ChildHandle>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, ChildExit) + 'static,
    {
        let program = command.get_program().to_string_lossy().into_owned();
        refuse_if_children_reaped_by_kernel()
            .map_err(|e| error::context(e, format!("cannot spawn {program}")))?;
        let mut child = reset_signals_on_exec(command)
            .spawn()
            .map_err(|e| error::context(e, format!("cannot spawn {program}")))?;
        let stdio = Stdio {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        };
        let nonblocking = [
            stdio.stdin.as_ref().map(AsFd::as_fd),
            stdio.stdout.as_ref().map(AsFd::as_fd),
            stdio.stderr.as_ref().map(AsFd::as_fd),
        ]
        .into_iter()
        .flatten()
        .try_for_each(sys::set_nonblocking);
        if let Err(e) = nonblocking {
            end_unwatched(child);
            return Err(error::context(
                e,
                format!("cannot make the pipes to {program} non-blocking"),
            ));
        }
        // The `Child` stays here until the watch is in place, to be ended if it cannot be.
        match self.watch_process(child.id(), None, callback) {
            Ok(handle) => {
                *handle.stdio.borrow_mut() = stdio;
                Ok(handle)
            }
            Err(e) => {
                end_unwatched(child);
                Err(e)
            }
        }
    }

    /// Stops watching `child`: its exit callback will not run, and returns whether it was
    /// still watched (`false` once the callback ran or after an earlier unwatch). The child is
    /// left as it is, and not reaped when it exits: wait for it yourself (by
    /// [`pid`](ChildHandle::pid)), or it stays a zombie until this process exits.
    pub fn unwatch_child(&mut self, child: &ChildHandle) -> bool {
        // The pidfd lives as long as the handle, so its number names this watch or nothing.
        child.watched.reaps.set(false);
        self.remove_fd_handlers(&child.watched.pidfd.as_raw_fd(), Handlers::ALL)
    }

    fn watch_process<F>(
        &mut self,
        pid: u32,
        child: Option<Child>,
        callback: F,
    ) -> io::Result<ChildHandle>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, ChildExit) + 'static,
    {
        refuse_if_children_reaped_by_kernel().map_err(|e| open_error(e, pid))?;
        let raw_pid = libc::pid_t::try_from(pid).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pid} is not a valid pid"),
            )
        })?;
        let pidfd = sys::pidfd_open(raw_pid).map_err(|e| open_error(e, pid))?;
        // WNOWAIT: only ask whether it is our child; reaping happens when the callback runs.
        sys::waitid_pidfd(pidfd.as_fd(), libc::WNOWAIT).map_err(|e| open_error(e, pid))?;
        let fd = pidfd.as_raw_fd();
        let watched = Rc::new(Watched {
            pidfd,
            reaps: Cell::new(false),
        });
        let handle = ChildHandle {
            pid,
            watched: watched.clone(),
            stdio: Rc::default(),
        };
        let reaper = Reaper { pid, watched };
        let mut pending = Some((callback, child));
        self.set_io_handler(
            &fd,
            Direction::Read,
            IoOptions::new(),
            move |base, state, _| {
                let status = match sys::waitid_pidfd(reaper.watched.pidfd.as_fd(), 0) {
                    Ok(Some(end)) => exit_status(end),
                    Ok(None) => return, // not exited yet: a spurious wake-up
                    Err(e) => {
                        log::error!("waitid for child {pid} failed: {e}; dropping its watch");
                        reaper.watched.reaps.set(false);
                        base.remove_fd_handlers(&fd, Handlers::ALL);
                        return;
                    }
                };
                reaper.watched.reaps.set(false);
                // The pidfd (owned by this closure) closes once the base drops the closure, after
                // the registration is gone.
                base.remove_fd_handlers(&fd, Handlers::ALL);
                if let Some((callback, child)) = pending.take() {
                    drop(child);
                    log::debug!("child {pid} exited: {status}");
                    callback(base, state, ChildExit { pid, status });
                }
            },
        )?;
        // Only now: a watch that could not be installed leaves the `Child` to nobody, as
        // before, rather than reaping behind the caller's error.
        handle.watched.reaps.set(true);
        Ok(handle)
    }
}
