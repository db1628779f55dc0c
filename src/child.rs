//! Child-process exits through `pidfd_open(2)` (Linux 5.3+).
//!
//! A pidfd refers to one process, not to a pid number, so a watch can never be confused by pid
//! reuse; it becomes readable when the process exits, and `waitid(P_PIDFD, ...)` reaps exactly
//! that child, never another one. No `SIGCHLD` handler is involved.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};

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
    /// ```
    /// use std::process::Command;
    /// use aioloop::EventBase;
    ///
    /// let mut base = EventBase::<Option<i32>>::new()?;
    /// let child = Command::new("sh").args(["-c", "exit 3"]).spawn()?;
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
    pub fn watch_child<F>(&mut self, child: Child, callback: F) -> io::Result<()>
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
    pub fn watch_pid<F>(&mut self, pid: u32, callback: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, ChildExit) + 'static,
    {
        self.watch_process(pid, None, callback)
    }

    fn watch_process<F>(&mut self, pid: u32, child: Option<Child>, callback: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, ChildExit) + 'static,
    {
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
        )
    }
}
