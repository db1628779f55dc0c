//! aioloop: a single-threaded, callback-based event loop for Linux.
//!
//! One [`EventBase`] owns one epoll instance (through [`mio`](https://docs.rs/mio)) and carries every kind of
//! event as a readiness source:
//!
//! * **fd handlers** on any pollable fd, edge- or level-triggered, one-shot or persistent,
//!   with per-handler inactivity timeouts ([`EventBase::set_io_handler`]);
//! * **timers**, one-shot and repeating ([`EventBase::add_timer`]);
//! * **file I/O** through Linux kernel AIO, completions signalled on an eventfd
//!   ([`EventBase::read_at`], [`AioFile`]), with whatever would block the loop (a page-cache
//!   miss, FUSE or NFS, `open`, `stat`, directory listings: [`EventBase::open`]...) run on a
//!   few helper threads, so no file operation stalls the loop;
//! * **signals** through a signalfd ([`EventBase::add_signal_handler`]) and **child exits**
//!   through pidfds ([`EventBase::watch_child`]);
//! * **cross-thread posts** that wake the loop and run a closure on it ([`Remote`]);
//! * **connections the loop owns** ([`EventBase::add_conn`], [`EventBase::serve`]): the
//!   socket, a write queue with back-pressure by default, deadlines and a lingering close
//!   under one [`ConnId`], and [`EventBase::shut_down`] for a graceful end;
//! * **a daemon's toolkit**: [`tcp_listener`] and [`EventBase::accept_connections`] (which
//!   survives running out of fds), buffered socket writers ([`EventBase::add_writer`]),
//!   children with a clean signal state ([`EventBase::spawn_child`], [`ChildHandle`]), opens
//!   confined to a directory ([`EventBase::open_beneath`]), [`EventBase::run_blocking`] for
//!   any blocking work, [`EventBase::exit_with_error`], [`systemd`] and [`signals`].
//!
//! The design follows the Common Lisp IOLib *event-base* (`set-io-handler`, `add-timer`,
//! `event-dispatch`, `exit-event-loop`), with its known flaws fixed: stale events never reach a
//! handler that reused a slot or an fd number, one-shot handlers can re-register themselves,
//! equal deadlines fire in FIFO order, `exit` is immediate and does not leak into the next run.
//! [The architecture guide](guide::architecture) describes one iteration step by step, and
//! [the AIO guide](guide::aio) where each file request runs and in what order.
//!
//! Callbacks receive `&mut EventBase<S>` and the caller's `&mut S`:
//!
//! ```
//! use std::time::Duration;
//! use aioloop::{EventBase, Schedule};
//!
//! struct State { ticks: u32 }
//!
//! let mut base = EventBase::new()?;
//! base.add_repeating_timer(Duration::from_millis(1), Schedule::FixedRate, |base, st: &mut State, me| {
//!     st.ticks += 1;
//!     if st.ticks == 5 {
//!         base.cancel_timer(me);
//!         base.exit();
//!     }
//! });
//! let mut state = State { ticks: 0 };
//! base.run(&mut state)?;
//! assert_eq!(state.ticks, 5);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Start here
//!
//! Each of these runs as it stands (they are tested). Every callback gets the base and the
//! state, and name the state type once: `EventBase::<State>::new()`.
//!
//! **A TCP server**: the base owns each connection, its socket, write queue and deadlines
//! ([`EventBase::serve`]; [`EventBase::add_conn`] for a stream you connected yourself):
//!
//! ```
//! use aioloop::{tcp_listener, ConnEvent, ConnOptions, EventBase, ListenOptions};
//!
//! let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), &ListenOptions::new())?;
//! let addr = listener.local_addr()?;
//! let mut base = EventBase::<()>::new()?;
//! base.serve(listener, ConnOptions::new(), |base, _, conn, event| match event {
//!     ConnEvent::Data(bytes) => drop(base.conn_write(conn, bytes)), // echo
//!     ConnEvent::PeerShutdown => drop(base.conn_finish(conn)),
//!     ConnEvent::Closed(_) => base.exit(),
//!     _ => {}
//! })?;
//! # let client = std::thread::spawn(move || {
//! #     use std::io::{Read, Write};
//! #     let mut s = std::net::TcpStream::connect(addr).unwrap();
//! #     s.write_all(b"hi").unwrap();
//! #     s.shutdown(std::net::Shutdown::Write).unwrap();
//! #     let mut back = String::new();
//! #     s.read_to_string(&mut back).unwrap();
//! #     assert_eq!(back, "hi");
//! # });
//! base.run(&mut ())?;
//! # client.join().unwrap();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! **A file read** that never blocks the loop ([`EventBase::read_at`]; where it runs:
//! [the AIO guide](guide::aio)):
//!
//! ```
//! use aioloop::{AioFile, EventBase};
//!
//! let file = AioFile::open("Cargo.toml", false)?;
//! let mut base = EventBase::<String>::new()?;
//! base.read_at(&file, 0, vec![0; 64], |_, text, buf, n| {
//!     *text = String::from_utf8_lossy(&buf[..n.unwrap()]).into_owned();
//! })?;
//! base.set_exit_when_empty(true);
//! let mut text = String::new();
//! base.run(&mut text)?;
//! assert!(text.starts_with("[package]"));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! **A signal**, blocked first so that only the loop hears it ([`EventBase::add_signal_handler`],
//! [`signals`]):
//!
//! ```
//! use aioloop::{signals::SIGUSR1, EventBase};
//!
//! aioloop::block_signals(&[SIGUSR1])?; // before any thread starts
//! let mut base = EventBase::<u32>::new()?;
//! base.add_signal_handler(SIGUSR1, |base, got, _info| {
//!     *got += 1;
//!     base.exit();
//! })?;
//! std::process::Command::new("kill")
//!     .args(["-USR1", &std::process::id().to_string()])
//!     .status()?;
//! let mut got = 0;
//! base.run(&mut got)?;
//! assert_eq!(got, 1);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! **A child process**, watched through its pidfd ([`EventBase::spawn_child`]):
//!
//! ```
//! use std::process::Command;
//! use aioloop::EventBase;
//!
//! let mut base = EventBase::<Option<i32>>::new()?;
//! base.spawn_child(Command::new("sh").args(["-c", "exit 3"]), |_, code, exit| {
//!     *code = exit.status.code();
//! })?;
//! base.set_exit_when_empty(true);
//! let mut code = None;
//! base.run(&mut code)?;
//! assert_eq!(code, Some(3));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Errors
//!
//! Every fallible call returns an [`io::Error`](std::io::Error) (file transfers an
//! [`AioError`] or a [`TransferError`], which hand the buffer back with it). An error that the
//! crate can say more about carries a sentence of context in front of the OS error (which
//! path, which limit to raise) and keeps its [`ErrorKind`](std::io::ErrorKind); its
//! `raw_os_error()` is then `None`. [`os_error`] gives the errno of every error, with context
//! or without, and `source()` the OS error itself:
//!
//! ```
//! use aioloop::{os_error, Dir};
//!
//! let err = Dir::open("/no/such/dir").unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
//! assert!(err.to_string().contains("/no/such/dir"), "{err}");
//! assert_eq!(err.raw_os_error(), None);
//! assert_eq!(os_error(&err), Some(libc::ENOENT));
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "aioloop supports Linux only: it is built on epoll, eventfd, signalfd and kernel AIO"
);

// The modules that add methods to `EventBase` come in the order its page lists them:
// construction and running first, then by kind of event (the blank lines keep rustfmt from
// sorting them).
mod base;

mod io;

mod timer;

mod signal;

mod child;

mod conn;

mod accept;

mod writer;

mod remote;

mod aio;

mod fs;

mod pool;

pub mod systemd;

mod error;
mod metrics;
mod source;
#[allow(unsafe_code)]
mod sys;

/// The guides of `docs/`, as doc pages: how the loop works, and file I/O on it.
///
/// They name source files (`src/...`) and tests (`tests/...`) of the repository, which
/// prove what they say.
pub mod guide {
    #[doc = include_str!("../docs/architecture.md")]
    pub mod architecture {}
    #[doc = include_str!("../docs/aio.md")]
    pub mod aio {}
}

pub use accept::{tcp_listener, Acceptor, ListenOptions};
pub use aio::{AioError, AioFile, AioId, AioOptions, AlignedBuf, IoBuf, IoBufMut, TransferError};
pub use base::EventBase;
pub use child::{reset_signals_on_exec, ChildExit, ChildHandle};
pub use conn::{ConnEvent, ConnId, ConnOptions, ConnTimeout};
pub use error::os_error;
pub use fs::{Dir, DirEntry};
pub use io::{Direction, HandlerKind, Handlers, IoEvent, IoOptions, Readiness, Trigger};
pub use metrics::Metrics;
pub use pool::JobId;
pub use remote::Remote;
pub use signal::numbers as signals;
pub use signal::{block_signals, ignore_sigpipe, SignalHandlerId, SignalInfo};
pub use timer::{Schedule, TimerId};
pub use writer::{WriteStatus, WriterEvent, WriterId, WriterOptions};

/// Compiles the README's example as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The `mio` this crate is built on, for its socket types (`mio::net::TcpListener`, ...).
pub use mio;
