//! The fd table: each fd's handlers and epoll registration, indexed by fd number.

use std::collections::HashMap;
use std::os::fd::RawFd;

use mio::{Interest, Token};

use super::token::{self, Layout};
use super::{HandlerKind, IoEvent, IoOptions, Readiness, Trigger, KINDS};
use crate::base::EventBase;
use crate::timer::{Tick, TimerId};

/// The callback of an fd handler.
pub(crate) type IoCallback<S> = Box<dyn FnMut(&mut EventBase<S>, &mut S, IoEvent)>;

pub(super) struct Handler<S> {
    /// `None` while the callback runs.
    pub(super) callback: Option<IoCallback<S>>,
    pub(super) options: IoOptions,
    /// Unique per installation; orders handlers against batches.
    pub(super) install: u64,
    /// When the last event was dispatched to it (or when it was installed).
    pub(super) last_active: Tick,
    pub(super) timer: Option<TimerId>,
    /// The connection this read handler belongs to: events go straight to it
    /// (`conn.rs`), without lending `callback` out.
    pub(super) conn: Option<crate::conn::ConnId>,
}

pub(super) struct FdEntry<S> {
    pub(super) handlers: [Option<Handler<S>>; 3],
    /// The interest currently registered with epoll.
    pub(super) interest: Interest,
    pub(super) refd: bool,
}

impl<S> FdEntry<S> {
    /// The epoll interest its read and write handlers need.
    pub(super) fn wanted(&self) -> Option<Interest> {
        let read = self.handlers[0].is_some().then_some(Interest::READABLE);
        let write = self.handlers[1].is_some().then_some(Interest::WRITABLE);
        match (read, write) {
            (Some(r), Some(w)) => Some(r | w),
            (r, w) => r.or(w),
        }
    }

    /// The trigger of its read or write handler, if it has one (both have the same).
    pub(super) fn trigger(&self) -> Option<Trigger> {
        self.handlers[..2]
            .iter()
            .flatten()
            .map(|h| h.options.trigger)
            .next()
    }

    pub(super) fn has_level_handler_for(&self, ready: Readiness) -> bool {
        KINDS.iter().any(|&kind| {
            self.handlers[kind as usize]
                .as_ref()
                .is_some_and(|h| h.options.trigger == Trigger::Level && ready.concerns(kind))
        })
    }
}

struct FdSlot<S> {
    /// Changes every time the slot's registration is dropped.
    gen: u32,
    entry: Option<Box<FdEntry<S>>>,
}

/// The fd handlers of one base, indexed by fd number.
pub(crate) struct FdTable<S> {
    slots: Vec<FdSlot<S>>,
    /// Generations whose registration could not be removed from epoll (the fd was closed
    /// first, and its file may live on elsewhere): never handed out again for that fd.
    retired: HashMap<RawFd, Vec<u32>>,
    pub(super) next_install: u64,
    /// `next_install` when the current batch was harvested.
    pub(super) batch_mark: u64,
    pub(super) handlers: usize,
    pub(super) refd: usize,
}

impl<S> FdTable<S> {
    pub(crate) fn new() -> Self {
        FdTable {
            slots: Vec::new(),
            retired: HashMap::new(),
            next_install: 0,
            batch_mark: 0,
            handlers: 0,
            refd: 0,
        }
    }

    /// Number of installed handlers (read, write and error).
    pub(crate) fn handlers(&self) -> usize {
        self.handlers
    }

    /// Number of registered fds that keep the loop alive.
    pub(crate) fn refd(&self) -> usize {
        self.refd
    }

    /// Called right before a poll: the batch it harvests reaches only handlers installed now.
    pub(crate) fn mark_batch(&mut self) {
        self.batch_mark = self.next_install;
    }

    pub(super) fn entry(&self, fd: RawFd) -> Option<&FdEntry<S>> {
        self.slots.get(fd as usize)?.entry.as_deref()
    }

    pub(super) fn entry_mut(&mut self, fd: RawFd) -> Option<&mut FdEntry<S>> {
        self.slots.get_mut(fd as usize)?.entry.as_deref_mut()
    }

    /// The entry of `fd` if its registration is still generation `gen`.
    pub(super) fn current(&mut self, fd: RawFd, gen: u32) -> Option<&mut FdEntry<S>> {
        let slot = self.slots.get_mut(fd as usize)?;
        (slot.gen == gen).then_some(())?;
        slot.entry.as_deref_mut()
    }

    pub(super) fn handler(&mut self, fd: RawFd, kind: HandlerKind) -> Option<&mut Handler<S>> {
        self.entry_mut(fd)?.handlers[kind as usize].as_mut()
    }

    pub(super) fn gen(&self, fd: RawFd) -> u32 {
        self.slots.get(fd as usize).map_or(0, |s| s.gen)
    }

    pub(super) fn token(&self, fd: RawFd) -> Token {
        token::token(fd, self.gen(fd))
    }

    pub(super) fn insert(&mut self, fd: RawFd, interest: Interest) {
        let index = fd as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || FdSlot {
                gen: 0,
                entry: None,
            });
        }
        self.slots[index].entry = Some(Box::new(FdEntry {
            handlers: [None, None, None],
            interest,
            refd: true,
        }));
        self.refd += 1;
    }

    /// Drops the registration record of `fd`; stale events for it will not match any more.
    pub(super) fn remove(&mut self, fd: RawFd) -> Option<Box<FdEntry<S>>> {
        let gen = self.gen(fd);
        let next = self.next_gen(fd, gen);
        let slot = self.slots.get_mut(fd as usize)?;
        let entry = slot.entry.take()?;
        slot.gen = next;
        self.refd -= usize::from(entry.refd);
        self.handlers -= entry.handlers.iter().flatten().count();
        Some(entry)
    }

    /// Records that the current registration of `fd` may outlive its removal: its generation
    /// must never be reused for that fd number, or its events would reach a later handler.
    pub(super) fn retire(&mut self, fd: RawFd) {
        let gen = self.gen(fd);
        log::debug!("fd {fd}: generation {gen} retired");
        self.retired.entry(fd).or_default().push(gen);
    }

    /// The generation after `gen` for `fd`, skipping retired ones.
    fn next_gen(&self, fd: RawFd, gen: u32) -> u32 {
        let max = Layout::NATIVE.max_gen();
        let step = |g: u32| if g == max { 0 } else { g + 1 };
        let Some(retired) = self.retired.get(&fd) else {
            return step(gen);
        };
        let mut next = step(gen);
        while retired.contains(&next) && next != gen {
            next = step(next);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_generations_are_skipped_when_the_counter_wraps() {
        let mut table = FdTable::<()>::new();
        table.insert(5, Interest::READABLE);
        table.retire(5); // generation 0 may still report events
        table.slots[5].gen = Layout::NATIVE.max_gen();
        table.remove(5);
        assert_eq!(table.gen(5), 1, "wrapped onto a retired generation");
        table.insert(5, Interest::READABLE);
        table.remove(5);
        assert_eq!(table.gen(5), 2);
    }
}
