//! Listening sockets for servers: a TCP listener with a backlog that fits a burst of clients,
//! and an accept loop that drains the queue fairly and survives running out of fds.
//!
//! Running out of fds (`EMFILE`, `ENFILE`) is where hand-written accept handlers fail. An
//! edge-triggered handler that returns on `EMFILE` never hears of the connections already
//! queued again, so the server serves nobody, even after every client has left; a
//! level-triggered one is called again at once, forever, and burns a core. The accept loop
//! here stops accepting instead, and retries on a back-off timer (10 ms, doubling up to
//! 500 ms): no CPU is spent while the process is at its limit, the queued clients wait in the
//! kernel's backlog rather than being dropped, and they are served within one back-off step
//! once fds are free again. libuv's alternative, a spare fd closed to accept and drop one
//! client, serves nobody either: it only turns waiting clients into refused ones.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};

use crate::base::EventBase;
use crate::error;
use crate::io::{Direction, Handlers, IoOptions};
use crate::sys;
use crate::timer::TimerId;

/// The first back-off after `EMFILE`; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Connections accepted in one go before other events get their turn.
const BATCH: usize = 64;

/// How [`tcp_listener`] binds and listens.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    backlog: i32,
    reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: libc::SOMAXCONN,
            reuse_port: false,
        }
    }
}

impl ListenOptions {
    /// A backlog of `SOMAXCONN` (4096), no `SO_REUSEPORT`.
    pub fn new() -> ListenOptions {
        ListenOptions::default()
    }

    /// How many connections the kernel queues before the server accepts them (capped by the
    /// `net.core.somaxconn` sysctl). Beyond it, new clients' SYNs are dropped and they retry
    /// after a second or more: `std` and mio listen with 128, which a burst of clients
    /// overflows.
    pub fn backlog(mut self, backlog: u32) -> ListenOptions {
        self.backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        self
    }

    /// Sets `SO_REUSEPORT`, so that several sockets (one per thread, each on its own
    /// [`EventBase`]) can listen on the same address, and the kernel spreads the incoming
    /// connections across them.
    pub fn reuse_port(mut self, reuse_port: bool) -> ListenOptions {
        self.reuse_port = reuse_port;
        self
    }
}

/// A non-blocking, close-on-exec TCP listener on `addr`, with `SO_REUSEADDR` and `options`.
/// Port 0 picks a free port: read it back with `local_addr`.
///
/// ```
/// use aioloop::{tcp_listener, ListenOptions};
///
/// let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), &ListenOptions::new())?;
/// assert_ne!(listener.local_addr()?.port(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
/// on errors that carry a sentence of context ([Errors](crate#errors)).
///
/// `AddrInUse` when another socket listens there (without `SO_REUSEPORT` on both), `EACCES`
/// for a port below 1024 without the privilege, `AddrNotAvailable` for an address that is not
/// this host's; each with the address in the message.
pub fn tcp_listener(addr: SocketAddr, options: &ListenOptions) -> io::Result<TcpListener> {
    let fd = sys::net::tcp_listen(addr, options.backlog, options.reuse_port)
        .map_err(|e| error::context(e, format!("cannot listen on {addr}")))?;
    Ok(TcpListener::from_std(std::net::TcpListener::from(fd)))
}

/// What the accept loop shares with its [`Acceptor`] handle.
#[derive(Debug)]
pub(crate) struct Listening {
    listener: RefCell<Option<OwnedFd>>,
    fd: RawFd,
    /// Accepting pauses while fewer fds than this are free ([`Acceptor::set_fd_reserve`]).
    reserve: Cell<u64>,
    /// The timer that will accept again, while backing off or after a full batch.
    retry: Cell<Option<TimerId>>,
    backoff: Cell<Duration>,
}

/// The accept loop of one listener, shared by its fd handler and its retry timers; `F` takes
/// each accepted connection and its peer's address (`None` for a Unix socket).
struct Accepting<F> {
    shared: Rc<Listening>,
    on_connection: RefCell<F>,
}

/// A listener being accepted on, from [`EventBase::accept_connections`]; pass it to
/// [`EventBase::stop_accepting`] to close it.
#[derive(Clone, Debug)]
pub struct Acceptor {
    pub(crate) shared: Rc<Listening>,
}

impl Acceptor {
    /// The address the listener is bound to (the real port, when it was bound to port 0).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `NotConnected` once accepting has stopped (the listener is closed).
    /// `InvalidInput` for a listener that is not TCP (a Unix socket).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.shared.listener.borrow().as_ref() {
            Some(listener) => std::net::TcpListener::from(listener.try_clone()?).local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the listener was closed by stop_accepting",
            )),
        }
    }

    /// Keeps `fds` file descriptors free for the connections already accepted (the files they
    /// serve, the logs they write): while fewer are free under `RLIMIT_NOFILE`, accepting
    /// pauses, and the clients wait in the kernel's backlog, as when the process is out of fds
    /// (see the module docs). 0, the default, accepts until `EMFILE`.
    ///
    /// The free count is the soft limit minus the lowest free fd number, checked once per
    /// batch of accepts and after each accept: fds are handed out lowest first, so this is
    /// exact as long as the process does not hold fds far above the others.
    pub fn set_fd_reserve(&self, fds: u32) {
        self.shared.reserve.set(u64::from(fds));
    }

    /// Whether the accept loop is backing off after running out of fds (or into its reserve).
    pub fn is_backing_off(&self) -> bool {
        self.shared.backoff.get() > MIN_BACKOFF
    }
}

impl AsRawFd for Acceptor {
    /// The listener's fd (closed once accepting stops), for
    /// [`set_fd_ref`](EventBase::set_fd_ref).
    fn as_raw_fd(&self) -> RawFd {
        self.shared.fd
    }
}

impl<S> EventBase<S> {
    /// Accepts every connection that reaches `listener`, and calls `on_connection` with each
    /// (a non-blocking, close-on-exec stream) and its peer's address.
    ///
    /// The base owns the listener until [`stop_accepting`](Self::stop_accepting). Its queue is
    /// drained in batches of 64, other events getting their turn in between. Errors that
    /// concern one connection (`ECONNABORTED`, `EPROTO`, ...) are skipped. Running out of fds
    /// or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) pauses accepting, and a timer
    /// retries after 10 ms, then 20 ms... up to 500 ms, without spinning, until connections
    /// can be accepted again: the queued clients wait in the kernel's backlog rather than
    /// being dropped, and are served within one back-off step once fds are free (where a
    /// hand-written edge-triggered handler that returned on `EMFILE` would never hear of them
    /// again, and a level-triggered one would spin). Any other error means the listener is
    /// broken: it is closed, and the run ends with that error
    /// ([`exit_with_error`](Self::exit_with_error)). If `on_connection` panics, the listener is
    /// closed too (as a panicking handler is removed) and the panic continues out of the run.
    ///
    /// ```
    /// use aioloop::{tcp_listener, EventBase, ListenOptions};
    ///
    /// let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), &ListenOptions::new())?;
    /// let mut base = EventBase::<u32>::new()?;
    /// let acceptor = base.accept_connections(listener, |base, accepted, _stream, _peer| {
    ///     *accepted += 1;
    ///     base.exit();
    /// })?;
    /// std::net::TcpStream::connect(acceptor.local_addr()?)?;
    /// let mut accepted = 0;
    /// base.run(&mut accepted)?;
    /// assert_eq!(accepted, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`set_io_handler`](Self::set_io_handler) (the listener's registration).
    pub fn accept_connections<F>(
        &mut self,
        listener: TcpListener,
        mut on_connection: F,
    ) -> io::Result<Acceptor>
    where
        F: FnMut(&mut EventBase<S>, &mut S, TcpStream, SocketAddr) + 'static,
    {
        let listener = OwnedFd::from(std::net::TcpListener::from(listener));
        self.accept_fds(listener, move |base, state, fd, peer| {
            let stream = TcpStream::from_std(std::net::TcpStream::from(fd));
            let peer = peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            on_connection(base, state, stream, peer)
        })
    }

    /// The accept loop of any listening stream socket (TCP or Unix): `on_connection` gets each
    /// accepted connection (non-blocking, close-on-exec) and its peer's IP address, if it has
    /// one.
    pub(crate) fn accept_fds<F>(
        &mut self,
        listener: OwnedFd,
        on_connection: F,
    ) -> io::Result<Acceptor>
    where
        F: FnMut(&mut EventBase<S>, &mut S, OwnedFd, Option<SocketAddr>) + 'static,
    {
        sys::net::set_nonblocking(listener.as_raw_fd())?;
        let fd = listener.as_raw_fd();
        let shared = Rc::new(Listening {
            listener: RefCell::new(Some(listener)),
            fd,
            reserve: Cell::new(0),
            retry: Cell::new(None),
            backoff: Cell::new(MIN_BACKOFF),
        });
        let accepting = Rc::new(Accepting {
            shared: shared.clone(),
            on_connection: RefCell::new(on_connection),
        });
        self.set_io_handler(
            &fd,
            Direction::Read,
            IoOptions::new(),
            move |base, state, _| accept_batch(base, state, &accepting),
        )?;
        Ok(Acceptor { shared })
    }

    /// Stops accepting on `acceptor` and closes its listener; returns `false` if it was
    /// already stopped. Connections still in the kernel's queue are refused (reset).
    pub fn stop_accepting(&mut self, acceptor: &Acceptor) -> bool {
        close_listener(self, &acceptor.shared)
    }
}

/// Removes the listener's handler and retry timer and closes it; `false` if already closed.
pub(crate) fn close_listener<S>(base: &mut EventBase<S>, shared: &Listening) -> bool {
    let Some(listener) = shared.listener.borrow_mut().take() else {
        return false;
    };
    base.remove_fd_handlers(&listener, Handlers::ALL);
    if let Some(timer) = shared.retry.take() {
        base.cancel_timer(timer);
    }
    true
}

/// Accepts up to a batch of connections, then leaves the rest for a zero-delay timer (so other
/// events run in between) or, out of fds, for a back-off timer.
fn accept_batch<S, F>(base: &mut EventBase<S>, state: &mut S, accepting: &Rc<Accepting<F>>)
where
    F: FnMut(&mut EventBase<S>, &mut S, OwnedFd, Option<SocketAddr>) + 'static,
{
    let shared = &accepting.shared;
    if shared.retry.get().is_some() {
        return; // a timer accepts next; the edge that called us changes nothing
    }
    let mut budget = match fd_budget(shared) {
        Ok(budget) => budget,
        Err(e) => return back_off(base, accepting, &e),
    };
    for _ in 0..BATCH {
        if let Some((limit, lowest)) = budget {
            if limit.saturating_sub(lowest) < shared.reserve.get() {
                let e = io::Error::other(format!(
                    "fewer than {} fds free (the reserve)",
                    shared.reserve.get()
                ));
                return back_off(base, accepting, &e);
            }
        }
        let accepted = match shared.listener.borrow().as_ref() {
            Some(listener) => sys::net::accept(listener.as_raw_fd()),
            None => return, // stopped
        };
        match accepted {
            Ok(fd) => {
                shared.backoff.set(MIN_BACKOFF);
                if let Some((_, lowest)) = &mut budget {
                    *lowest = (*lowest).max(fd.as_raw_fd() as u64 + 1);
                }
                let (fd, peer) = peer_of(fd);
                let stream = fd;
                let mut on_connection = accepting.on_connection.borrow_mut();
                // A panic closes the listener, as it removes a panicking handler.
                let cleanup = |base: &mut EventBase<S>| {
                    close_listener(base, shared);
                };
                base.guarded(|base| on_connection(base, state, stream, peer), cleanup);
            }
            Err(e) => match AcceptError::of(&e) {
                AcceptError::Drained => return,
                AcceptError::ThisConnection => {
                    log::debug!("accept on fd {}: {e}; skipped", shared.fd)
                }
                AcceptError::OutOfResources => return back_off(base, accepting, &e),
                AcceptError::Listener => return listener_failed(base, accepting, e),
            },
        }
        if base.exit_requested {
            return retry_after(base, accepting, Duration::ZERO);
        }
    }
    retry_after(base, accepting, Duration::ZERO);
}

/// The limit and the lowest free fd, when an fd reserve is set.
fn fd_budget(shared: &Listening) -> io::Result<Option<(u64, u64)>> {
    match shared.reserve.get() {
        0 => Ok(None),
        _ => sys::net::fd_budget(shared.fd).map(Some),
    }
}

/// The accepted connection and its peer's IP address (`None` for a Unix socket).
fn peer_of(fd: OwnedFd) -> (OwnedFd, Option<SocketAddr>) {
    let stream = std::net::TcpStream::from(fd);
    let peer = stream.peer_addr().ok();
    (OwnedFd::from(stream), peer)
}

/// Out of fds or memory (or under the reserve): accept again after the back-off delay.
fn back_off<S, F>(base: &mut EventBase<S>, accepting: &Rc<Accepting<F>>, e: &io::Error)
where
    F: FnMut(&mut EventBase<S>, &mut S, OwnedFd, Option<SocketAddr>) + 'static,
{
    let shared = &accepting.shared;
    let delay = shared.backoff.get();
    shared.backoff.set((delay * 2).min(MAX_BACKOFF));
    log::warn!("accept on fd {}: {e}; retrying in {delay:?}", shared.fd);
    retry_after(base, accepting, delay);
}

fn retry_after<S, F>(base: &mut EventBase<S>, accepting: &Rc<Accepting<F>>, delay: Duration)
where
    F: FnMut(&mut EventBase<S>, &mut S, OwnedFd, Option<SocketAddr>) + 'static,
{
    let again = accepting.clone();
    let timer = base.add_timer(delay, move |base, state, _| {
        again.shared.retry.set(None);
        accept_batch(base, state, &again);
    });
    // The listener's registration keeps the loop alive; its retries need not.
    base.set_timer_ref(timer, false);
    accepting.shared.retry.set(Some(timer));
}

fn listener_failed<S, F>(base: &mut EventBase<S>, accepting: &Accepting<F>, e: io::Error) {
    let fd = accepting.shared.fd;
    close_listener(base, &accepting.shared);
    log::error!("accept on fd {fd} failed: {e}; the listener was closed");
    let what = format!("accepting connections on fd {fd} failed; the listener was closed");
    base.exit_with_error(error::context(e, what));
}

/// What an `accept` error means for the accept loop.
enum AcceptError {
    /// The queue is empty (`EAGAIN`).
    Drained,
    /// The connection at the head of the queue failed; the next may not (`accept(2)`: Linux
    /// passes pending network errors of the new socket on to `accept`).
    ThisConnection,
    /// The process or the system is out of fds or memory.
    OutOfResources,
    /// The listener itself is broken.
    Listener,
}

impl AcceptError {
    fn of(e: &io::Error) -> AcceptError {
        if e.kind() == io::ErrorKind::WouldBlock {
            return AcceptError::Drained;
        }
        match e.raw_os_error().unwrap_or(0) {
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                AcceptError::OutOfResources
            }
            libc::EINTR
            | libc::ECONNABORTED
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ETIMEDOUT => AcceptError::ThisConnection,
            _ => AcceptError::Listener,
        }
    }
}
