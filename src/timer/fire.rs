//! The firing pass: every timer due at the loop time, in deadline order.

use std::time::Duration;

use super::table::Fired;
use super::{RepeatCallback, Schedule, TimerId};
use crate::base::EventBase;

impl<S> EventBase<S> {
    /// Fires every timer due at the loop time that was scheduled before this pass began, in
    /// deadline order, first in first out for equal deadlines; stops early if a callback asks
    /// the loop to exit.
    pub(crate) fn fire_due_timers(&mut self, state: &mut S) {
        if self.timers.next_deadline().is_some_and(|at| at > self.now) {
            // Nothing due: no pass (an empty base still takes one, to rebase its wheel).
            return;
        }
        self.timers.begin_pass(self.now);
        while !self.exit_requested {
            let Some(id) = self.timers.pop_due() else {
                break;
            };
            self.fire_timer(id, state);
        }
        self.timers.end_pass();
    }

    fn fire_timer(&mut self, id: TimerId, state: &mut S) {
        let Some(fired) = self.timers.fire(id) else {
            return;
        };
        match fired {
            Fired::Once(callback) => {
                self.guarded(
                    |base| {
                        callback.call(base, state, id);
                    },
                    |_| {},
                );
            }
            Fired::Repeat(mut callback, period, schedule) => {
                self.guarded(
                    |base| callback(base, state, id),
                    |base| {
                        base.timers.remove(id);
                    },
                );
                self.finish_repeat(id, callback, period, schedule);
            }
            Fired::Timeout { fd, gen, kind } => self.handler_timeout(id, fd, gen, kind, state),
            Fired::Exit => self.exit_requested = true,
        }
    }

    /// Puts a repeating timer's callback back and schedules its next run, unless the callback
    /// cancelled the timer (the callback is then dropped) or rescheduled it itself.
    fn finish_repeat(
        &mut self,
        id: TimerId,
        callback: RepeatCallback<S>,
        period: Duration,
        schedule: Schedule,
    ) {
        if !self.timers.finish_repeat(id, callback) || !self.timers.is_firing(id) {
            return;
        }
        let deadline = self.timers.deadline(id).unwrap_or_default();
        let slack = self.wakeup.slack();
        let next = super::next_deadline(schedule, period, deadline, self.clock.now(), slack);
        self.timers.reschedule(id, next);
    }
}
