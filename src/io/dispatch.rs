//! Delivering harvested events and inactivity timeouts to fd handlers.

use std::os::fd::RawFd;
use std::time::Duration;

use mio::unix::SourceFd;

use super::register::handlers_of;
use super::table::IoCallback;
use super::token::decode;
use super::{HandlerKind, IoEvent, Readiness, KINDS};
use crate::base::EventBase;
use crate::timer::{self, TimerId};

impl<S> EventBase<S> {
    /// Delivers harvested event `index` to the handlers still owed it. Returns early, leaving
    /// the rest owed, if a callback asks the loop to exit.
    pub(crate) fn dispatch_io(&mut self, index: usize, state: &mut S) {
        let event = self.harvested[index];
        let (fd, gen) = decode(event.token);
        let batch_mark = self.fds.batch_mark;
        let Some(entry) = self.fds.current(fd, gen) else {
            self.harvested[index].todo = 0;
            return;
        };
        // A connection with nothing queued has only its read handler: straight to it.
        if let ([Some(read), None, None], u8::MAX) = (&entry.handlers, event.todo) {
            if let (Some(conn), true) = (read.conn, read.install < batch_mark) {
                self.harvested[index].todo = 0;
                if event.ready.concerns(HandlerKind::Read) {
                    self.conn_readable(conn, state, event.ready);
                }
                return;
            }
        }
        if event.todo == u8::MAX {
            self.harvested[index].todo =
                HandlerKind::Read.bit() | HandlerKind::Write.bit() | HandlerKind::Error.bit();
            if entry.has_level_handler_for(event.ready) {
                // Re-arm before the callbacks: epoll re-checks readiness when it next harvests,
                // so this reports the fd again next iteration only if it is still ready then.
                let (interest, token) = (entry.interest, event.token);
                if let Err(e) = self
                    .poll
                    .registry()
                    .reregister(&mut SourceFd(&fd), token, interest)
                {
                    log::warn!("fd {fd}: level re-arm failed ({e}); was it closed?");
                }
            }
        }
        for kind in KINDS {
            let todo = &mut self.harvested[index].todo;
            if *todo & kind.bit() == 0 {
                continue;
            }
            *todo &= !kind.bit();
            if event.ready.concerns(kind) {
                self.run_handler(fd, gen, kind, event.ready, state);
                if self.exit_requested {
                    return;
                }
            }
        }
    }

    fn run_handler(
        &mut self,
        fd: RawFd,
        gen: u32,
        kind: HandlerKind,
        ready: Readiness,
        state: &mut S,
    ) {
        let batch_mark = self.fds.batch_mark;
        let Some(entry) = self.fds.current(fd, gen) else {
            return;
        };
        let Some(handler) = entry.handlers[kind as usize].as_mut() else {
            return;
        };
        if handler.install >= batch_mark {
            return;
        }
        if handler.timer.is_some() {
            // The loop time of the poll that harvested the event: no clock read per event.
            handler.last_active = self.now;
        }
        if let Some(conn) = handler.conn {
            return self.conn_readable(conn, state, ready);
        }
        if handler.options.one_shot {
            return self.invoke(fd, kind, ready, state);
        }
        // Persistent, the common case: lend the callback out from here, without a second
        // look-up.
        let install = handler.install;
        if let Some(callback) = handler.callback.take() {
            let event = IoEvent { fd, kind, ready };
            self.lend(event, install, callback, state);
        }
    }

    /// Inactivity timeout of a handler: fire if it has been idle long enough, else re-arm for
    /// the remaining time (activity only records a timestamp; the heap is touched here, lazily).
    pub(crate) fn handler_timeout(
        &mut self,
        timer: TimerId,
        fd: RawFd,
        gen: u32,
        kind: HandlerKind,
        state: &mut S,
    ) {
        let now = self.clock.now();
        let Some(handler) = self
            .fds
            .current(fd, gen)
            .and_then(|e| e.handlers[kind as usize].as_mut())
        else {
            self.timers.remove(timer);
            return;
        };
        let timeout = handler.options.timeout.unwrap_or(Duration::MAX);
        let due = timer::deadline_after(handler.last_active, timeout);
        if due > now {
            self.timers.reschedule(timer, due);
            return;
        }
        handler.last_active = now;
        self.timers
            .reschedule(timer, timer::deadline_after(now, timeout));
        self.invoke(fd, kind, Readiness::TIMEOUT, state);
    }

    /// Calls the handler of `kind` on `fd`: a one-shot handler is removed first; a persistent
    /// one lends its callback out for the call and gets it back unless it was removed meanwhile.
    fn invoke(&mut self, fd: RawFd, kind: HandlerKind, ready: Readiness, state: &mut S) {
        let event = IoEvent { fd, kind, ready };
        let Some(handler) = self.fds.handler(fd, kind) else {
            return;
        };
        let (one_shot, install) = (handler.options.one_shot, handler.install);
        if one_shot {
            let callback = self.detach(fd, kind).and_then(|h| h.callback);
            self.sync_interest(fd);
            if let Some(mut callback) = callback {
                self.guarded(|base| callback(base, state, event), |_| {});
            }
            return;
        }
        let Some(callback) = self.fds.handler(fd, kind).and_then(|h| h.callback.take()) else {
            return;
        };
        self.lend(event, install, callback, state);
    }

    /// Calls a persistent handler's `callback`, taken out of the handler installed as
    /// `install`, and puts it back unless that handler was removed or replaced meanwhile.
    fn lend(&mut self, event: IoEvent, install: u64, mut callback: IoCallback<S>, state: &mut S) {
        let IoEvent { fd, kind, .. } = event;
        self.guarded(
            |base| callback(base, state, event),
            |base| {
                if base
                    .fds
                    .handler(fd, kind)
                    .is_some_and(|h| h.install == install)
                {
                    base.remove_fd_handlers(&fd, handlers_of(kind));
                }
            },
        );
        if let Some(handler) = self.fds.handler(fd, kind) {
            if handler.install == install {
                handler.callback = Some(callback);
            }
        }
    }
}
