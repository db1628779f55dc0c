//! What a daemon under systemd needs, without libsystemd: readiness and stopping notifications
//! (`sd_notify`), the watchdog keep-alive, and socket activation (`sd_listen_fds`).
//!
//! Each speaks the documented protocol directly: a datagram to the `AF_UNIX` socket named by
//! `NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`), and the fds from 3
//! on that `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` describe. Outside systemd (no such
//! variable) every call does nothing and says so, so a daemon calls them unconditionally.
//!
//! ```no_run
//! use aioloop::{systemd, EventBase};
//!
//! let mut base = EventBase::<()>::new()?;
//! let sockets = systemd::listen_fds()?; // empty unless socket-activated
//! # drop(sockets);
//! base.start_watchdog()?; // nothing unless WatchdogSec= is set
//! systemd::notify_ready()?;
//! base.run(&mut ())?;
//! systemd::notify_stopping()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::base::EventBase;
use crate::error;
use crate::sys::{self, Inherited};
use crate::timer::{Schedule, TimerId};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// Sends `state` (newline-separated `KEY=VALUE` assignments, such as `"READY=1"` or
/// `"STATUS=serving 12 clients"`) to the service manager. Returns `Ok(false)` when there is no
/// service manager to tell (`NOTIFY_SOCKET` unset).
///
/// # Errors
///
/// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
/// on errors that carry a sentence of context ([Errors](crate#errors)).
///
/// A `NOTIFY_SOCKET` that is neither an absolute path nor an `@` abstract name
/// (`InvalidInput`), or the error of sending the datagram, with the socket's name.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let name = socket.to_string_lossy();
    let addr = notify_address(&name)?;
    let sender = UnixDatagram::unbound()?;
    sender
        .send_to_addr(state.as_bytes(), &addr)
        .map_err(|e| error::context(e, format!("cannot notify systemd through {name}")))?;
    Ok(true)
}

/// The address `NOTIFY_SOCKET` names.
fn notify_address(name: &str) -> io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None if name.starts_with('/') => SocketAddr::from_pathname(name),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={name} is neither an absolute path nor an @abstract name"),
        )),
    }
}

/// Tells the service manager the daemon is ready (`READY=1`): for `Type=notify` services,
/// systemd starts the units ordered after this one only now.
///
/// # Errors
///
/// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
/// on errors that carry a sentence of context ([Errors](crate#errors)).
///
/// As for [`notify`].
pub fn notify_ready() -> io::Result<bool> {
    notify("READY=1")
}

/// Tells the service manager the daemon is shutting down (`STOPPING=1`).
///
/// # Errors
///
/// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
/// on errors that carry a sentence of context ([Errors](crate#errors)).
///
/// As for [`notify`].
pub fn notify_stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// The watchdog interval systemd expects keep-alives within (`WATCHDOG_USEC`, set by
/// `WatchdogSec=`), if it is meant for this process (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

impl<S> EventBase<S> {
    /// Starts the watchdog keep-alive when systemd asks for one ([`watchdog_interval`]): a
    /// timer sends `WATCHDOG=1` every half interval, as long as the loop runs, so a loop that
    /// hangs gets the service restarted. The timer does not keep the loop alive. Returns its
    /// id, or `None` without a watchdog.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// The first keep-alive is sent at once, and its error returned (see [`notify`]); later
    /// ones that fail are logged.
    pub fn start_watchdog(&mut self) -> io::Result<Option<TimerId>> {
        let Some(interval) = watchdog_interval() else {
            return Ok(None);
        };
        notify("WATCHDOG=1")?;
        let timer = self.add_repeating_timer(interval / 2, Schedule::FixedRate, |_, _, _| {
            if let Err(e) = notify("WATCHDOG=1") {
                log::error!("watchdog keep-alive failed: {e}");
            }
        });
        self.set_timer_ref(timer, false);
        Ok(Some(timer))
    }
}

/// A socket passed by systemd's socket activation ([`listen_fds`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct ListenFd {
    /// The socket, close-on-exec. Make a listener of it with
    /// `std::net::TcpListener::from(fd)` (then `mio::net::TcpListener::from_std`), after
    /// setting it non-blocking.
    pub fd: OwnedFd,
    /// Its name (`FileDescriptorName=`; the socket unit's name by default), if given.
    pub name: Option<String>,
}

/// Whether this program image handed the fds out already.
static HANDED_OVER: Mutex<bool> = Mutex::new(false);

/// The sockets systemd passed to this process (socket activation), in order; empty when it
/// passed none (`LISTEN_PID` unset or another process's).
///
/// Each fd becomes an `OwnedFd`, so ownership must be beyond doubt. The fds are taken over
/// (made close-on-exec and owned) by the first call that returns them; later calls in the same
/// program image return nothing. An fd that came from systemd was inherited through `exec`, so
/// it is open and not close-on-exec: one that is close-on-exec was opened (or taken over) by
/// this program image. If no announced fd looks inherited, the variables are stale, left from
/// an image that took the sockets before it re-executed itself with the same pid, or passed
/// on by mistake: the call returns nothing, and never takes a file the program owns. The
/// environment variables are left as they are (changing the environment of a multi-threaded
/// program is unsound).
///
/// # Errors
///
/// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
/// on errors that carry a sentence of context ([Errors](crate#errors)).
///
/// A malformed `LISTEN_FDS`; or, among announced fds that look inherited, one that is not open,
/// close-on-exec, or not a socket (systemd's `ListenFIFO=` and `ListenSpecial=` pass other
/// kinds: take those with [`listen_fds_unchecked`]). Nothing is taken then, nothing is closed,
/// and a later call fails the same way.
pub fn listen_fds() -> io::Result<Vec<ListenFd>> {
    let Some(count) = listen_fd_count()? else {
        return Ok(Vec::new());
    };
    let mut handed_over = HANDED_OVER.lock().unwrap_or_else(PoisonError::into_inner);
    if *handed_over {
        return Ok(Vec::new());
    }
    let announced = FIRST_FD..FIRST_FD + count;
    let kinds: Vec<Inherited> = announced.clone().map(sys::inherited).collect();
    let looks_inherited =
        |kind: &Inherited| !matches!(kind, Inherited::Closed | Inherited::CloseOnExec);
    if !kinds.iter().any(looks_inherited) {
        if count > 0 {
            log::warn!(
                "LISTEN_FDS={count} names no fd this process inherited: stale variables, ignored"
            );
        }
        *handed_over = true;
        return Ok(Vec::new());
    }
    if let Some((fd, kind)) = announced
        .clone()
        .zip(&kinds)
        .find(|(_, kind)| **kind != Inherited::Socket)
    {
        return Err(refusal(fd, *kind));
    }
    *handed_over = true;
    take(announced)
}

/// Like [`listen_fds`], but takes every announced fd whatever it is (a FIFO, a special file, a
/// socket) and whatever its flags, even after another call took them.
///
/// # Safety
///
/// Every fd that `LISTEN_FDS` announces must be owned by nothing else in the process: no
/// earlier call to [`listen_fds`] or to this function returned it, and no other code opened
/// or took it. An fd with two owners is closed under one of them.
///
/// # Errors
///
/// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
/// on errors that carry a sentence of context ([Errors](crate#errors)).
///
/// A malformed `LISTEN_FDS`, or an announced fd that is not open (`EBADF`); nothing is taken
/// then.
#[allow(unsafe_code)] // a contract on the caller only: the body is safe code
pub unsafe fn listen_fds_unchecked() -> io::Result<Vec<ListenFd>> {
    let Some(count) = listen_fd_count()? else {
        return Ok(Vec::new());
    };
    let mut handed_over = HANDED_OVER.lock().unwrap_or_else(PoisonError::into_inner);
    let announced = FIRST_FD..FIRST_FD + count;
    if let Some(fd) = announced
        .clone()
        .find(|&fd| sys::inherited(fd) == Inherited::Closed)
    {
        return Err(refusal(fd, Inherited::Closed));
    }
    *handed_over = true;
    take(announced)
}

/// Takes the fds `announced`, which the caller checked, with their names.
fn take(announced: std::ops::Range<RawFd>) -> io::Result<Vec<ListenFd>> {
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names
        .split(':')
        .map(|n| (!n.is_empty()).then(|| n.to_string()));
    let mut fds = Vec::with_capacity(announced.len());
    for fd in announced {
        // Cannot fail for an open fd; if it did, the fds taken so far still go back owned.
        match sys::take_inherited_fd(fd) {
            Ok(owned) => fds.push(ListenFd {
                fd: owned,
                name: names.next().flatten(),
            }),
            Err(e) => log::error!("cannot take fd {fd} from LISTEN_FDS: {e}"),
        }
    }
    Ok(fds)
}

/// Why `listen_fds` refuses the announced `fd`.
fn refusal(fd: RawFd, kind: Inherited) -> io::Error {
    let (errno, why) = match kind {
        Inherited::Closed => (libc::EBADF, "which is not open".to_string()),
        Inherited::CloseOnExec => (
            libc::EINVAL,
            "which is close-on-exec, so it was not inherited: this program opened it".to_string(),
        ),
        Inherited::NotSocket(mode) => (
            libc::ENOTSOCK,
            format!(
                "which is not a socket (file type {mode:#o}); if the socket unit passes FIFOs or \
                 special files on purpose, take them with systemd::listen_fds_unchecked"
            ),
        ),
        Inherited::Socket => (0, String::new()),
    };
    error::context(
        io::Error::from_raw_os_error(errno),
        format!("LISTEN_FDS announces fd {fd}, {why}; no fd was taken"),
    )
}

/// `LISTEN_FDS`, if `LISTEN_PID` is this process.
fn listen_fd_count() -> io::Result<Option<RawFd>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    if !ours {
        return Ok(None);
    }
    let count = std::env::var("LISTEN_FDS").unwrap_or_default();
    match count.parse::<RawFd>() {
        Ok(n) if (0..=65536).contains(&n) => Ok(Some(n)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("LISTEN_FDS={count:?} is not a number of fds"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_names_a_path_or_an_abstract_socket_and_nothing_else() {
        let path = notify_address("/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname().unwrap().to_str(),
            Some("/run/systemd/notify")
        );
        let abstract_name = notify_address("@sd-notify").unwrap();
        assert_eq!(abstract_name.as_abstract_name(), Some(&b"sd-notify"[..]));
        let err = notify_address("relative/path").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
