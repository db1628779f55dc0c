//! Completion: harvesting the eventfd and the ring, and calling the requests back.

use std::os::fd::AsFd;

use crate::base::EventBase;
use crate::sys::aio::AioEvent;

use super::AioId;

impl<S> EventBase<S> {
    /// The eventfd fired: reset it, then drain the ring — in that order, so a completion
    /// landing meanwhile re-arms the eventfd instead of being missed. The callbacks run later
    /// in the iteration, as owed work.
    pub(crate) fn harvest_aio(&mut self) {
        if let Some(ctx) = &self.aio.context {
            crate::sys::eventfd_take(ctx.eventfd.as_fd());
        }
        self.aio.reap();
    }

    /// Runs the callbacks of reaped completions; stops early (keeping the rest) on `exit`.
    pub(crate) fn run_aio_completions(&mut self, state: &mut S) {
        while let Some(event) = self.aio.ready.pop_front() {
            self.complete_aio(event, state);
            if self.exit_requested {
                return;
            }
        }
    }

    fn complete_aio(&mut self, event: AioEvent, state: &mut S) {
        let id = AioId::from_data(event.data);
        let known = self
            .aio
            .ops
            .get(id.key as usize)
            .is_some_and(|op| op.gen == id.gen);
        if !known {
            log::error!(
                "AIO completion for an unknown request {id:?} (res {})",
                event.res
            );
            return;
        }
        let op = self.aio.ops.remove(id.key as usize);
        if op.submitted {
            self.aio.in_flight -= 1;
        }
        if !self.aio.queue.is_empty() {
            self.aio.needs_flush = true;
        }
        self.metrics.aio_completions += 1;
        let complete = op.complete;
        self.guarded(|base| complete(base, state, event.res), |_| {});
    }
}
