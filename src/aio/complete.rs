//! Completion: harvesting the eventfd and the ring, and calling the requests back.

use std::os::fd::AsFd;

use crate::base::EventBase;
use crate::sys::aio::AioEvent;

use super::route::combined_result;
use super::{AioId, OpState};
use crate::pool::{Job, Outcome, Output};

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
    ///
    /// A pass runs at most [`PASS_BUDGET`](crate::source::PASS_BUDGET) completions, whether
    /// they were there when it started (a thousand connections' reads, done at once) or their
    /// callbacks caused them (a chain of reads the page cache answers at once): the rest wait
    /// for the next iteration, in order, so they cannot hold the loop while events and due
    /// timers wait. A request's successors start only when its completion runs, so the cut
    /// reorders nothing.
    pub(crate) fn run_aio_completions(&mut self, state: &mut S) {
        for _ in 0..crate::source::PASS_BUDGET {
            let Some(event) = self.aio.ready.pop_front() else {
                return;
            };
            self.complete_aio(event, state);
            if self.exit_requested {
                return;
            }
        }
    }

    /// A helper finished an AIO request (or it was cancelled or refused before it ran): its
    /// result joins the completion queue, to be called back with the kernel's completions.
    pub(super) fn aio_done_on_helper(&mut self, data: u64, outcome: Outcome) {
        let res = match outcome {
            Outcome::Done(output) => output
                .downcast::<i64>()
                .map_or(-i64::from(libc::EIO), |r| *r),
            Outcome::Panicked => -i64::from(libc::EIO),
            Outcome::Cancelled => -i64::from(libc::ECANCELED),
            Outcome::Refused(e) => -i64::from(crate::os_error(&e).unwrap_or(libc::EIO)),
        };
        self.aio.ready.push_back(AioEvent {
            data,
            res,
            ..AioEvent::default()
        });
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
        if self.aio.ops[id.key as usize].state == OpState::InKernel {
            self.aio.in_flight -= 1;
            if !self.aio.queue.is_empty() {
                self.aio.needs_flush = true;
            }
            if self.retry_on_helper(id, event.res) {
                return;
            }
        }
        let op = self.aio.ops.remove(id.key as usize);
        let place = (op.file.identity(), op.ticket);
        // A part of a span leaves the order after its callback, which queues the next part
        // in its place.
        if op.span {
            self.aio.carry = Some(place);
        } else if op.ticket != 0 {
            self.file_request_finished(place.0, place.1);
        }
        self.metrics.aio_completions += 1;
        let res = match op.cancelled {
            true => -i64::from(libc::ECANCELED),
            false => combined_result(op.done, event.res),
        };
        log::debug!(
            "{} of {} at {} (request {id:?}) done by {:?} in {:?}: {res}",
            super::opcode_name(op.iocb.aio_lio_opcode),
            op.file.describe(),
            op.iocb.aio_offset,
            op.path,
            std::time::Duration::from_nanos(self.now.saturating_sub(op.made_at)),
        );
        let (complete, file, span) = (op.complete, op.file, op.span);
        let end_span = move |base: &mut Self| {
            if span {
                base.aio.carry = None;
                base.file_request_finished(place.0, place.1);
            }
        };
        self.guarded(|base| complete(base, state, res), end_span);
        end_span(self);
        self.let_go(file);
    }

    /// Drops a request's clone of its file. If it is the last one, that closes the fd, and
    /// the `close` of a FUSE or network file waits for its server (a flush): a helper does it.
    pub(super) fn let_go(&mut self, file: super::AioFile) {
        if file.is_local() || !self.pool.enabled() || !file.is_last_clone() {
            return;
        }
        let class = file.device();
        let job: Job = Box::new(move || {
            drop(file);
            Box::new(()) as Output
        });
        if let Err(e) = self.submit_job(class, job, Box::new(|_, _, _| {})) {
            log::warn!("closing a file on the loop thread: {e}");
        }
    }
}
