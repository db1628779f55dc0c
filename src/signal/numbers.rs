//! The signal numbers a daemon handles, so that no program needs the `libc` crate to name
//! them. Every function of aioloop that takes a signal takes its number (`i32`), as the kernel
//! does; real-time signals are [`sigrtmin`]`() + n`.
//!
//! ```
//! use aioloop::signals::{SIGHUP, SIGTERM};
//!
//! aioloop::block_signals(&[SIGTERM, SIGHUP])?;
//! # Ok::<(), std::io::Error>(())
//! ```

/// Hang-up: by convention, "reload your configuration" or "reopen your logs" for a daemon.
pub const SIGHUP: i32 = libc::SIGHUP;
/// Interrupt (Ctrl-C at a terminal).
pub const SIGINT: i32 = libc::SIGINT;
/// Quit (Ctrl-\ at a terminal); its default action dumps core.
pub const SIGQUIT: i32 = libc::SIGQUIT;
/// Termination request: what `kill`, systemd and container runtimes send to stop a daemon.
pub const SIGTERM: i32 = libc::SIGTERM;
/// Kill: cannot be caught, blocked or handled; only sent (to a child, say).
pub const SIGKILL: i32 = libc::SIGKILL;
/// User-defined signal 1 (often "dump your statistics").
pub const SIGUSR1: i32 = libc::SIGUSR1;
/// User-defined signal 2.
pub const SIGUSR2: i32 = libc::SIGUSR2;
/// A child stopped or exited (watch children with
/// [`EventBase::watch_child`](crate::EventBase::watch_child) instead).
pub const SIGCHLD: i32 = libc::SIGCHLD;
/// Write to a pipe or socket with no reader (see [`ignore_sigpipe`](crate::ignore_sigpipe)).
pub const SIGPIPE: i32 = libc::SIGPIPE;
/// Alarm clock (`alarm(2)`).
pub const SIGALRM: i32 = libc::SIGALRM;
/// The terminal window changed size.
pub const SIGWINCH: i32 = libc::SIGWINCH;
/// Continue a stopped process.
pub const SIGCONT: i32 = libc::SIGCONT;
/// Stop: cannot be caught, blocked or handled; only sent.
pub const SIGSTOP: i32 = libc::SIGSTOP;
/// Terminal stop (Ctrl-Z at a terminal).
pub const SIGTSTP: i32 = libc::SIGTSTP;

/// The first real-time signal available to programs (glibc reserves the first two or three
/// for its threads, so this is a function, not a constant).
pub fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}

/// The last real-time signal.
pub fn sigrtmax() -> i32 {
    libc::SIGRTMAX()
}
