//! The fd-handler API of the base: installing, removing and re-registering handlers.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use mio::unix::SourceFd;
use mio::Interest;

use super::table::{FdEntry, Handler, IoCallback};
use super::token::Layout;
use super::{Direction, HandlerKind, Handlers, IoEvent, IoOptions, KINDS};
use crate::base::EventBase;
use crate::error;
use crate::timer::{self, Action, Tick, TimerId};

fn check_fd(fd: RawFd) -> io::Result<()> {
    let max = Layout::NATIVE.max_fd();
    if fd < 0 || fd > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd {fd} is not a file descriptor number this build can watch (0..={max}; \
                 32-bit targets carry 20-bit fd numbers in their epoll tokens)"
            ),
        ));
    }
    Ok(())
}

/// One epoll registration per fd carries one trigger mode, so the read and write handlers of
/// an fd must agree on it: an edge handler would otherwise be re-told every readiness of the
/// fd each time the level handler's registration is re-armed.
fn check_trigger<S>(entry: Option<&FdEntry<S>>, fd: RawFd, options: &IoOptions) -> io::Result<()> {
    match entry.and_then(FdEntry::trigger) {
        Some(trigger) if trigger != options.trigger => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd {fd} already has a {trigger:?}-triggered handler; its read and write \
                 handlers share one epoll registration and must use the same trigger (remove \
                 the other handler first, or give both the same IoOptions trigger)"
            ),
        )),
        _ => Ok(()),
    }
}

/// Explains why epoll refused an fd.
fn registration_error(err: io::Error, fd: RawFd) -> io::Error {
    let what = match err.raw_os_error() {
        Some(libc::EPERM) => format!(
            "fd {fd} cannot be watched by epoll (EPERM): regular files and directories are \
             always ready; read files through the AIO API instead"
        ),
        Some(libc::EBADF) => format!("fd {fd} is not an open file descriptor (EBADF)"),
        Some(libc::EEXIST) => {
            format!("fd {fd} is already registered on this epoll instance outside aioloop (EEXIST)")
        }
        Some(libc::ENOSPC) => format!(
            "cannot watch fd {fd}: the per-user epoll watch limit is reached (ENOSPC); raise \
             /proc/sys/fs/epoll/max_user_watches"
        ),
        _ => format!("cannot register fd {fd} with epoll"),
    };
    error::context(err, what)
}

fn is_stale_registration(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF))
}

impl<S> EventBase<S> {
    /// Installs the `direction` handler of `fd`: `callback` runs when the fd is ready for it.
    ///
    /// `fd` is anything with a raw fd: a `RawFd`, a `mio::net::TcpStream`, a `std` socket, a
    /// pipe; register a socket that the callback itself owns by its number (`&sock.as_raw_fd()`).
    /// The base does not own it: keep it (in your state, say), and remove its handlers
    /// with [`remove_fd_handlers`](Self::remove_fd_handlers) **before** closing it, because
    /// epoll tracks open files, not fd numbers.
    ///
    /// Installing a handler makes the next poll report the fd's current readiness (epoll
    /// re-checks it on `EPOLL_CTL_ADD`/`MOD`): an edge-triggered handler installed on an fd
    /// that is already readable is called once without new data, and a handler removed and
    /// installed again is told again while the fd stays ready. A handler installed from a
    /// callback waits for that next poll; it never sees the rest of the current batch.
    ///
    /// An fd number is not an identity: once an fd is closed its number is reused by the next
    /// open, so state keyed by fd number must be dropped with the handlers (see
    /// [the architecture guide](crate::guide::architecture), "Tokens and stale events").
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// These leave the base unchanged:
    /// * `AlreadyExists`: the fd already has a handler for this direction;
    /// * `InvalidInput`: the fd's handler for the other direction uses the other [`Trigger`](crate::Trigger)
    ///   (one epoll registration per fd carries one trigger mode), or a negative fd;
    /// * `PermissionDenied` (EPERM): epoll cannot watch this kind of file (regular files);
    /// * EBADF: the fd is not open.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// use aioloop::{Direction, EventBase, IoOptions};
    ///
    /// let (mut a, b) = UnixStream::pair()?;
    /// b.set_nonblocking(true)?;
    /// let mut base = EventBase::<Vec<u8>>::new()?;
    /// // The closure owns `b`, so register by its raw fd number.
    /// let fd = b.as_raw_fd();
    /// base.set_io_handler(&fd, Direction::Read, IoOptions::new(), move |base, got, _ev| {
    ///     let mut buf = [0; 64];
    ///     // Edge-triggered: read until WouldBlock.
    ///     while let Ok(n @ 1..) = (&b).read(&mut buf) {
    ///         got.extend_from_slice(&buf[..n]);
    ///     }
    ///     base.exit();
    /// })?;
    /// a.write_all(b"hi")?;
    /// let mut got = Vec::new();
    /// base.run(&mut got)?;
    /// assert_eq!(got, b"hi");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_io_handler<F>(
        &mut self,
        fd: &impl AsRawFd,
        direction: Direction,
        options: IoOptions,
        callback: F,
    ) -> io::Result<()>
    where
        F: FnMut(&mut EventBase<S>, &mut S, IoEvent) + 'static,
    {
        let fd = fd.as_raw_fd();
        check_fd(fd)?;
        let kind = HandlerKind::from(direction);
        if kind == HandlerKind::Write
            && !self.writers.installing
            && self.writers.of_fd(fd).is_some()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("fd {fd} has a writer, which needs the write side to itself"),
            ));
        }
        // A writer's own write handler follows the trigger of the read handler, whatever it
        // was when the writer had to queue: it never makes this choice fail.
        let retrigger = self
            .writer_watching(fd)
            .filter(|_| kind == HandlerKind::Read && self.fd_trigger(fd) != Some(options.trigger));
        if let Some(writer) = retrigger {
            self.unwatch(writer);
        }
        let registered = check_trigger(self.fds.entry(fd), fd, &options)
            .and_then(|()| self.register_direction(fd, kind));
        if let Err(e) = registered {
            if let Some(writer) = retrigger {
                self.rewatch(writer);
            }
            return Err(e);
        }
        let now = self.clock.now();
        let timer = options.timeout.map(|timeout| {
            let gen = self.fds.gen(fd);
            let deadline = timer::deadline_after(now, timeout);
            self.timers
                .insert(deadline, false, Action::HandlerTimeout { fd, gen, kind })
        });
        self.install(fd, kind, options, now, timer, Box::new(callback));
        log::debug!("fd {fd}: {} handler installed ({options:?})", kind.name());
        if let Some(writer) = retrigger {
            self.rewatch(writer);
        }
        Ok(())
    }

    /// Installs the error handler of `fd`, called with [`Readiness::ERROR`](crate::Readiness::ERROR) when epoll reports
    /// `EPOLLERR`, after the read and write handlers have been told.
    ///
    /// The fd must already have a read or write handler: the error handler belongs to that
    /// registration, and is removed with the fd's last I/O handler. Handlers are **not**
    /// removed on error; decide in the callback (usually: remove all and close).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `NotFound` if the fd has no read or write handler; `AlreadyExists` if it has an error
    /// handler.
    pub fn set_error_handler<F>(&mut self, fd: &impl AsRawFd, callback: F) -> io::Result<()>
    where
        F: FnMut(&mut EventBase<S>, &mut S, IoEvent) + 'static,
    {
        let fd = fd.as_raw_fd();
        check_fd(fd)?;
        let Some(entry) = self.fds.entry(fd) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "fd {fd} has no read or write handler; install one with set_io_handler \
                     before its error handler"
                ),
            ));
        };
        if entry.handlers[HandlerKind::Error as usize].is_some() {
            return Err(already_exists(fd, HandlerKind::Error));
        }
        let now = self.clock.now();
        self.install(
            fd,
            HandlerKind::Error,
            IoOptions::new(),
            now,
            None,
            Box::new(callback),
        );
        log::debug!("fd {fd}: error handler installed");
        Ok(())
    }

    /// Removes the selected handlers of `fd` and returns whether any was removed.
    ///
    /// Safe from any callback, including the removed handler's own: a removed handler is never
    /// called again, not even for an event already harvested in the current batch. Removing the
    /// last read/write handler drops the fd's epoll registration and its error handler.
    ///
    /// Removing the write side ([`Handlers::WRITE`], [`Handlers::ALL`]) of an fd that has a
    /// writer ([`add_writer`](Self::add_writer)) ends that writer too, with what it still
    /// holds: its callback hears [`WriterEvent::Failed`](crate::WriterEvent::Failed)
    /// (`NotConnected`), from a zero-delay timer. A writer left behind would otherwise write
    /// to whatever file next gets the fd's number once it is closed.
    pub fn remove_fd_handlers(&mut self, fd: &impl AsRawFd, which: Handlers) -> bool {
        let fd = fd.as_raw_fd();
        let writer = self
            .writers
            .of_fd(fd)
            .filter(|_| which.contains(HandlerKind::Write));
        if let Some(writer) = writer {
            let e = io::Error::new(
                io::ErrorKind::NotConnected,
                format!("the handlers of fd {fd} were removed (remove_fd_handlers), and its writer with them"),
            );
            self.end_writer(writer, e);
        }
        self.remove_handlers(fd, which) || writer.is_some()
    }

    /// [`remove_fd_handlers`](Self::remove_fd_handlers) without ending the fd's writer: for
    /// the writer itself, and for owners that removed it first.
    pub(crate) fn remove_handlers(&mut self, fd: RawFd, which: Handlers) -> bool {
        let removed = KINDS.map(|kind| {
            which
                .contains(kind)
                .then(|| self.detach(fd, kind))
                .flatten()
        });
        let any = removed.iter().any(Option::is_some);
        if any {
            self.sync_interest(fd);
        }
        // Dropped only now, after the registration is gone: a callback may own the fd itself.
        drop(removed);
        any
    }

    /// Installs the edge-triggered read handler of a connection's fd: its events go straight
    /// to [`conn_readable`](crate::conn), the fastest path an event can take.
    pub(crate) fn set_conn_handler(
        &mut self,
        fd: RawFd,
        id: crate::conn::ConnId,
    ) -> io::Result<()> {
        self.set_io_handler(&fd, Direction::Read, IoOptions::new().edge(), |_, _, _| {})?;
        if let Some(handler) = self.fds.handler(fd, HandlerKind::Read) {
            handler.conn = Some(id);
        }
        Ok(())
    }

    /// The trigger of `fd`'s handlers, if it has any.
    pub(crate) fn fd_trigger(&self, fd: RawFd) -> Option<super::Trigger> {
        self.fds.entry(fd).and_then(FdEntry::trigger)
    }

    /// Whether `fd` has a handler of `kind`.
    pub fn has_fd_handler(&self, fd: &impl AsRawFd, kind: HandlerKind) -> bool {
        self.fds
            .entry(fd.as_raw_fd())
            .is_some_and(|e| e.handlers[kind as usize].is_some())
    }

    /// Chooses whether the handlers of `fd` keep the loop alive (default: yes). See
    /// [`set_exit_when_empty`](Self::set_exit_when_empty). Returns `false` if `fd` has no
    /// handler.
    pub fn set_fd_ref(&mut self, fd: &impl AsRawFd, refd: bool) -> bool {
        let Some(entry) = self.fds.entry_mut(fd.as_raw_fd()) else {
            return false;
        };
        let was = std::mem::replace(&mut entry.refd, refd);
        self.fds.refd = self.fds.refd + usize::from(refd) - usize::from(was);
        true
    }

    /// Makes sure `fd` is registered with epoll with interest for `kind`, with no handler of
    /// that kind yet. On error nothing is changed (a provably stale record may be dropped).
    fn register_direction(&mut self, fd: RawFd, kind: HandlerKind) -> io::Result<()> {
        let wanted = match kind {
            HandlerKind::Read => Interest::READABLE,
            _ => Interest::WRITABLE,
        };
        if let Some(entry) = self.fds.entry(fd) {
            // Also for a duplicate: the MOD is what tells a live registration from one that
            // vanished when its fd was closed behind our back (and the number reused).
            let taken = entry.handlers[kind as usize].is_some();
            let interest = entry.interest | wanted;
            let token = self.fds.token(fd);
            match self
                .poll
                .registry()
                .reregister(&mut SourceFd(&fd), token, interest)
            {
                Ok(()) if taken => return Err(already_exists(fd, kind)),
                Ok(()) => {
                    if let Some(entry) = self.fds.entry_mut(fd) {
                        entry.interest = interest;
                    }
                    return Ok(());
                }
                Err(e) if is_stale_registration(&e) => {
                    // The fd was closed behind our back (and maybe its number reused): the old
                    // registration is gone from epoll, so drop our record and start afresh.
                    log::warn!(
                        "fd {fd} was closed without remove_fd_handlers; dropping its handlers"
                    );
                    self.fds.retire(fd);
                    self.drop_entry(fd);
                }
                Err(e) => return Err(registration_error(e, fd)),
            }
        }
        let token = self.fds.token(fd);
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), token, wanted)
            .map_err(|e| registration_error(e, fd))?;
        self.fds.insert(fd, wanted);
        Ok(())
    }

    fn install(
        &mut self,
        fd: RawFd,
        kind: HandlerKind,
        options: IoOptions,
        now: Tick,
        timer: Option<TimerId>,
        callback: IoCallback<S>,
    ) {
        let install = self.fds.next_install;
        self.fds.next_install += 1;
        self.fds.handlers += 1;
        let entry = self.fds.entry_mut(fd).expect("registered by the caller");
        entry.handlers[kind as usize] = Some(Handler {
            callback: Some(callback),
            options,
            install,
            last_active: now,
            timer,
            conn: None,
        });
    }

    /// Takes a handler out of its entry and cancels its timeout, without touching epoll.
    pub(super) fn detach(&mut self, fd: RawFd, kind: HandlerKind) -> Option<Handler<S>> {
        let handler = self.fds.entry_mut(fd)?.handlers[kind as usize].take()?;
        self.fds.handlers -= 1;
        if let Some(timer) = handler.timer {
            self.timers.remove(timer);
        }
        log::debug!("fd {fd}: {} handler removed", kind.name());
        Some(handler)
    }

    /// Brings the epoll registration of `fd` in line with its remaining handlers.
    pub(super) fn sync_interest(&mut self, fd: RawFd) {
        let Some(entry) = self.fds.entry(fd) else {
            return;
        };
        match entry.wanted() {
            None => {
                if let Err(e) = self.poll.registry().deregister(&mut SourceFd(&fd)) {
                    log::debug!("fd {fd}: deregister failed ({e}); it was probably closed first");
                    self.fds.retire(fd);
                }
                // Dropped only after the registration is gone: a callback may own the fd.
                drop(self.drop_entry(fd));
            }
            Some(wanted) if wanted != entry.interest => {
                let token = self.fds.token(fd);
                if let Err(e) = self
                    .poll
                    .registry()
                    .reregister(&mut SourceFd(&fd), token, wanted)
                {
                    log::warn!("fd {fd}: cannot update epoll interest ({e}); was it closed?");
                }
                if let Some(entry) = self.fds.entry_mut(fd) {
                    entry.interest = wanted;
                }
            }
            Some(_) => {}
        }
    }

    /// Forgets every handler of `fd` and cancels their timeouts, without touching epoll.
    /// Returns the handlers, for the caller to drop once epoll is done with the fd.
    fn drop_entry(&mut self, fd: RawFd) -> Option<Box<FdEntry<S>>> {
        let entry = self.fds.remove(fd)?;
        for handler in entry.handlers.iter().flatten() {
            if let Some(timer) = handler.timer {
                self.timers.remove(timer);
            }
        }
        Some(entry)
    }
}

pub(super) fn handlers_of(kind: HandlerKind) -> Handlers {
    Handlers(kind.bit())
}

fn already_exists(fd: RawFd, kind: HandlerKind) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "fd {fd} already has a {} handler; remove it with remove_fd_handlers first",
            kind.name()
        ),
    )
}
