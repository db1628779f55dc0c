//! Child processes: spawning them with a clean signal state, watching their exits through
//! `pidfd_open(2)` (Linux 5.3+), and signalling them through the same pidfd.
//!
//! A pidfd refers to one process, not to a pid number, so neither a watch nor a signal can be
//! confused by pid reuse; it becomes readable when the process exits, and
//! `waitid(P_PIDFD, ...)` reaps exactly that child, never another one. No `SIGCHLD` handler is
//! involved.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
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
#[derive(Clone, Debug)]
pub struct ChildHandle {
    pid: u32,
    pidfd: Rc<OwnedFd>,
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
    /// `ESRCH` once the child has been reaped (its exit callback ran): nothing was sent, and
    /// no other process could have received it. `EINVAL` for a bad signal number.
    pub fn signal(&self, signo: i32) -> io::Result<()> {
        sys::pidfd_send_signal(self.pidfd.as_fd(), signo).map_err(|e| {
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

/// The wait status `waitpid` would have reported, from a `waitid` result.
fn exit_status(end: sys::ChildEnd) -> ExitStatus {
    let raw = match end.code {
        libc::CLD_EXITED => (end.status & 0xff) << 8,
        libc::CLD_DUMPED => end.status | 0x80,
        _ => end.status,
    };
    ExitStatus::from_raw(raw)
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
    /// else waits for it; take its stdin/stdout/stderr out first if you need them. The watch
    /// keeps the loop alive until the child exits.
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
    /// `ECHILD` if the process was already reaped; `ENOSYS` without `pidfd_open` (Linux older
    /// than 5.3, or a seccomp policy); `EMFILE` when out of fds.
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
    /// As for [`watch_child`](Self::watch_child); `ESRCH` if there is no such process.
    pub fn watch_pid<F>(&mut self, pid: u32, callback: F) -> io::Result<ChildHandle>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, ChildExit) + 'static,
    {
        self.watch_process(pid, None, callback)
    }

    /// Spawns `command` with a clean signal state ([`reset_signals_on_exec`]) and watches the
    /// child like [`watch_child`](Self::watch_child). The child's stdin, stdout and stderr
    /// are what `command` says (inherited by default); to keep pipes to it, spawn it yourself
    /// with [`reset_signals_on_exec`] and pass the `Child`'s pipes on before
    /// [`watch_child`](Self::watch_child).
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
    /// What `Command::spawn` reports (the program is missing, ...), with the program's name;
    /// then as for [`watch_child`](Self::watch_child).
    pub fn spawn_child<F>(&mut self, command: &mut Command, callback: F) -> io::Result<ChildHandle>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, ChildExit) + 'static,
    {
        let program = command.get_program().to_string_lossy().into_owned();
        let child = reset_signals_on_exec(command)
            .spawn()
            .map_err(|e| error::context(e, format!("cannot spawn {program}")))?;
        self.watch_child(child, callback)
    }

    /// Stops watching `child`: its exit callback will not run, and returns whether it was
    /// still watched (`false` once the callback ran or after an earlier unwatch). The child is
    /// left as it is, and not reaped when it exits: wait for it yourself (by
    /// [`pid`](ChildHandle::pid)), or it stays a zombie until this process exits.
    pub fn unwatch_child(&mut self, child: &ChildHandle) -> bool {
        self.remove_fd_handlers(&child.pidfd.as_raw_fd(), Handlers::ALL)
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
        let raw_pid = libc::pid_t::try_from(pid).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pid} is not a valid pid"),
            )
        })?;
        let pidfd = Rc::new(sys::pidfd_open(raw_pid).map_err(|e| open_error(e, pid))?);
        // WNOWAIT: only ask whether it is our child; reaping happens when the callback runs.
        sys::waitid_pidfd(pidfd.as_fd(), libc::WNOWAIT).map_err(|e| open_error(e, pid))?;
        let fd = pidfd.as_raw_fd();
        let handle = ChildHandle {
            pid,
            pidfd: pidfd.clone(),
        };
        let mut pending = Some((callback, child));
        self.set_io_handler(
            &fd,
            Direction::Read,
            IoOptions::new(),
            move |base, state, _| {
                let status = match sys::waitid_pidfd(pidfd.as_fd(), 0) {
                    Ok(Some(end)) => exit_status(end),
                    Ok(None) => return, // not exited yet: a spurious wake-up
                    Err(e) => {
                        log::error!("waitid for child {pid} failed: {e}; dropping its watch");
                        base.remove_fd_handlers(&fd, Handlers::ALL);
                        return;
                    }
                };
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
        Ok(handle)
    }
}
