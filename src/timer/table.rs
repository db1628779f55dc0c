//! The timers of a base: one flat table of 40-byte entries, each a timer's deadline, its links
//! in the wheel's lists (or its place in the near-term heap), the generation of its id, and its
//! callback inline; plus where each timer is scheduled.
//!
//! A timer is in exactly one place:
//!
//! * the near-term heap ([`Near`]) if it is due before the wheel's first slot: exact order;
//! * a list of the wheel ([`Wheel`]) if it is due later;
//! * the never list if it is due at [`NEVER`];
//! * the deferred list if it was scheduled during a firing pass for a time the pass has
//!   reached: it waits for the next pass, so a zero-delay re-arm cannot livelock the loop;
//! * nowhere while its callback runs (`FIRING`), until it is rescheduled or removed.
//!
//! Removing a timer unlinks it at once and puts its entry on a free list, so a cancelled timer
//! leaves nothing behind (no tombstones, which is how calloop's heap grew without bound under
//! add/cancel churn before its PR #238).

use std::time::Duration;

use slab::Slab;

use super::near::Near;
use super::wheel::{Wheel, DEFERRED_LIST, NEVER_LIST, NIL, W0_BITS};
use super::{Action, OnceCallback, RepeatCallback, Schedule, Tick, TimerId, NEVER};
use crate::io::HandlerKind;

/// `Entry::place` of a timer in the near-term heap (its position is in `prev`).
pub(super) const NEAR: u16 = u16::MAX - 1;
/// `Entry::place` of a timer whose callback runs.
const FIRING: u16 = u16::MAX - 2;
/// `Entry::place` of a free entry (`next` links the free list).
const FREE: u16 = u16::MAX;

/// How far past the loop time the wheel's cursor may move to fill the near-term heap: one
/// level-0 slot, so the heap holds about two slots' worth of timers at most.
const HORIZON: Tick = 1 << W0_BITS;

/// What a timer does when it fires.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `payload` is the callback.
    Once,
    /// `payload` is the key of its [`Repeat`] in `Timers::repeats`.
    Repeat,
    /// `payload` is the fd and the generation of its table entry.
    Timeout(HandlerKind),
    Exit,
}

/// A timer. Laid out so that what the wheel reads when it moves a slot (`deadline`, `next`)
/// comes first, in one cache line for seven entries in eight.
#[repr(C)]
pub(crate) struct Entry<S> {
    /// The deadline it was last scheduled for (kept while it fires, for drift-free repeats).
    pub(crate) deadline: Tick,
    /// Next in its list, or in the free list.
    pub(super) next: u32,
    /// Previous in its list, or its position in the near-term heap.
    pub(super) prev: u32,
    /// The generation of its id; bumped when the timer goes, so old ids stay invalid.
    gen: u32,
    /// Its list, or `NEAR`, `FIRING` or `FREE`.
    pub(super) place: u16,
    kind: Kind,
    refd: bool,
    payload: OnceCallback<S>,
}

/// A repeating timer's schedule and callback (the callback is `None` while it runs).
struct Repeat<S> {
    period: Duration,
    schedule: Schedule,
    callback: Option<RepeatCallback<S>>,
}

/// A timer that fired, as `Timers::fire` hands it out.
pub(crate) enum Fired<S> {
    /// A one-shot timer, already removed.
    Once(OnceCallback<S>),
    /// A repeating timer, out of the schedule until `Timers::finish_repeat`.
    Repeat(RepeatCallback<S>, Duration, Schedule),
    /// An fd handler's inactivity timeout, out of the schedule until rescheduled or removed.
    Timeout {
        fd: i32,
        gen: u32,
        kind: HandlerKind,
    },
    /// An `exit_after` timer, already removed.
    Exit,
}

/// The timers of one base.
pub(crate) struct Timers<S> {
    entries: Vec<Entry<S>>,
    /// Head of the list of free entries.
    free: u32,
    live: usize,
    refd: usize,
    repeats: Slab<Repeat<S>>,
    wheel: Wheel,
    near: Near,
    /// The time the current firing pass fires up to.
    pass: Option<Tick>,
}

impl<S> Timers<S> {
    pub(crate) fn new() -> Self {
        Timers {
            entries: Vec::new(),
            free: NIL,
            live: 0,
            refd: 0,
            repeats: Slab::new(),
            wheel: Wheel::default(),
            near: Near::default(),
            pass: None,
        }
    }

    /// Number of live timers (user timers, handler timeouts and exit timers).
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Number of timers that keep the loop alive.
    pub(crate) fn refd(&self) -> usize {
        self.refd
    }

    /// Makes room for `additional` more timers than are live, so that adding them allocates
    /// nothing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let spare = self.entries.len() - self.live;
        self.entries.reserve(additional.saturating_sub(spare));
        self.wheel.allocate();
    }

    /// Adds a timer due at `deadline` and returns its id.
    pub(crate) fn insert(&mut self, deadline: Tick, refd: bool, action: Action<S>) -> TimerId {
        let (kind, payload) = match action {
            Action::Once(callback) => (Kind::Once, callback),
            Action::Repeat {
                period,
                schedule,
                callback,
            } => {
                let key = self.repeats.insert(Repeat {
                    period,
                    schedule,
                    callback: Some(callback),
                });
                (Kind::Repeat, OnceCallback::word(key as u64))
            }
            Action::HandlerTimeout { fd, gen, kind } => (
                Kind::Timeout(kind),
                OnceCallback::word(u64::from(fd as u32) | u64::from(gen) << 32),
            ),
            Action::Exit => (Kind::Exit, OnceCallback::word(0)),
        };
        let key = self.allocate(Entry {
            deadline,
            next: NIL,
            prev: NIL,
            gen: 0,
            place: FIRING,
            kind,
            refd,
            payload,
        });
        self.live += 1;
        self.refd += usize::from(refd);
        self.schedule(key, deadline);
        TimerId {
            key,
            gen: self.entries[key as usize].gen,
        }
    }

    /// Puts `entry` in a free entry (keeping that entry's generation) and returns its key.
    fn allocate(&mut self, mut entry: Entry<S>) -> u32 {
        if self.free == NIL {
            let key = u32::try_from(self.entries.len())
                .ok()
                .filter(|&k| k != NIL)
                .expect("more than 4 billion timers");
            self.entries.push(entry);
            return key;
        }
        let key = self.free;
        let slot = &mut self.entries[key as usize];
        self.free = slot.next;
        entry.gen = slot.gen;
        *slot = entry;
        key
    }

    /// The key of a live timer.
    fn key(&self, id: TimerId) -> Option<u32> {
        let entry = self.entries.get(id.key as usize)?;
        (entry.gen == id.gen && entry.place != FREE).then_some(id.key)
    }

    /// Whether `id` names a live timer.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: TimerId) -> bool {
        self.key(id).is_some()
    }

    /// The deadline a live timer is (or, while it fires, was) scheduled for.
    pub(crate) fn deadline(&self, id: TimerId) -> Option<Tick> {
        self.key(id).map(|k| self.entries[k as usize].deadline)
    }

    /// Removes a timer (scheduled or firing); returns whether it was live.
    pub(crate) fn remove(&mut self, id: TimerId) -> bool {
        let Some(key) = self.key(id) else {
            return false;
        };
        self.unschedule(key);
        let entry = &mut self.entries[key as usize];
        // Dropped last, once the table is consistent: the callback's captures run user code.
        let payload = std::mem::replace(&mut entry.payload, OnceCallback::word(0));
        let (kind, refd) = (entry.kind, entry.refd);
        entry.place = FREE;
        entry.gen = entry.gen.wrapping_add(1);
        // A generation is never used twice: an entry whose generations are spent retires.
        if entry.gen != u32::MAX {
            entry.next = self.free;
            self.free = key;
        }
        self.live -= 1;
        self.refd -= usize::from(refd);
        let repeat = (kind == Kind::Repeat).then(|| {
            let slot = payload.as_word().unwrap_or_default() as usize;
            self.repeats.remove(slot)
        });
        drop(payload);
        drop(repeat);
        true
    }

    /// Moves a live timer (scheduled or firing) to a new deadline, behind every timer already
    /// scheduled for the same deadline.
    pub(crate) fn reschedule(&mut self, id: TimerId, deadline: Tick) -> bool {
        let Some(key) = self.key(id) else {
            return false;
        };
        self.unschedule(key);
        self.schedule(key, deadline);
        true
    }

    /// Whether the timer is out of the schedule because its callback runs.
    pub(crate) fn is_firing(&self, id: TimerId) -> bool {
        self.key(id)
            .is_some_and(|k| self.entries[k as usize].place == FIRING)
    }

    /// Marks a timer as keeping the loop alive, or not.
    pub(crate) fn set_ref(&mut self, id: TimerId, refd: bool) -> bool {
        let Some(key) = self.key(id) else {
            return false;
        };
        let was = std::mem::replace(&mut self.entries[key as usize].refd, refd);
        self.refd = self.refd + usize::from(refd) - usize::from(was);
        true
    }

    /// Puts timer `key` (out of any place) where a timer due at `deadline` belongs.
    fn schedule(&mut self, key: u32, deadline: Tick) {
        self.entries[key as usize].deadline = deadline;
        if deadline == NEVER {
            self.wheel.push_back(&mut self.entries, NEVER_LIST, key);
        } else if self.pass.is_some_and(|reached| deadline <= reached) {
            self.wheel.push_back(&mut self.entries, DEFERRED_LIST, key);
        } else {
            self.place(key, deadline);
        }
    }

    /// Puts timer `key` in the near-term heap or the wheel, by its deadline.
    fn place(&mut self, key: u32, deadline: Tick) {
        if deadline < self.wheel.near_end() {
            self.near.push(&mut self.entries, key, deadline);
        } else {
            let list = self.wheel.list_for(deadline);
            self.wheel.push_back(&mut self.entries, list, key);
        }
    }

    /// Takes timer `key` out of wherever it is scheduled.
    fn unschedule(&mut self, key: u32) {
        match self.entries[key as usize].place {
            FIRING => {}
            NEAR => {
                let pos = self.entries[key as usize].prev;
                self.near.remove(&mut self.entries, pos);
            }
            _ => self.wheel.unlink(&mut self.entries, key),
        }
        self.entries[key as usize].place = FIRING;
    }

    /// Empties the wheel's first slot if it starts by `until`: its timers go to lower levels or
    /// to the near-term heap, in the order they are listed. Returns `false` if it did not (the
    /// wheel is empty, or its first slot starts later).
    #[inline]
    fn refill(&mut self, until: Tick) -> bool {
        match self.wheel.first() {
            Some((list, start)) if start <= until => {
                self.empty_slot(list, start);
                true
            }
            _ => false,
        }
    }

    /// Empties wheel slot `list`, the first, which starts at `start`.
    #[inline(never)]
    fn empty_slot(&mut self, list: u16, start: Tick) {
        let mut key = self.wheel.advance_to(list, start);
        while key != NIL {
            let entry = &self.entries[key as usize];
            let (next, deadline) = (entry.next, entry.deadline);
            self.place(key, deadline);
            key = next;
        }
    }

    /// Fills the near-term heap, if empty, from the wheel's slots that start by the horizon of
    /// loop time `now`. The cursor never runs further ahead of the loop than that: were it to
    /// move to a far timer, every timer added for earlier would go to the heap until that one
    /// fired (an hour, for a daemon's hourly timer), at a heap's `O(log n)` cost.
    #[inline]
    fn fill_near(&mut self, now: Tick) {
        let horizon = now.saturating_add(HORIZON);
        // Mostly the heap has timers, or the wheel's first slot starts beyond the horizon.
        if self.near.is_empty() && !self.wheel.starts_after(horizon) {
            self.fill_near_from(horizon);
        }
    }

    #[inline(never)]
    fn fill_near_from(&mut self, horizon: Tick) {
        while self.near.is_empty() && self.refill(horizon) {}
    }

    /// [`next_deadline`](Self::next_deadline) at loop time `now`, with the near-term heap
    /// filled for the next pass, so that it is exact unless the earliest timer is far.
    pub(crate) fn next_deadline_mut(&mut self, now: Tick) -> Option<Tick> {
        self.end_pass();
        self.fill_near(now);
        self.next_deadline()
    }

    /// When the loop must wake next for its timers; `None` if no timer can ever fire. It is
    /// the earliest deadline, exact, unless the near-term heap is empty and the wheel's first
    /// slot holds more than a few timers (see `Wheel::next_deadline`): then it is the slot's
    /// start, earlier, and the pass there moves the slot down (one early wake-up per wheel
    /// level at most), so that no poll reads through a long list. Remembered by the wheel, it
    /// costs a few loads while the wheel does not change.
    #[inline]
    pub(crate) fn next_deadline(&self) -> Option<Tick> {
        // Only an open pass defers timers; ending it places them.
        if self.pass.is_some() {
            let deferred = self.wheel.head(DEFERRED_LIST);
            if deferred != NIL {
                // Left by a pass a panic cut short: due already.
                return Some(self.entries[deferred as usize].deadline);
            }
        }
        if let Some((deadline, _)) = self.near.peek() {
            return Some(deadline);
        }
        self.wheel.next_deadline(&self.entries)
    }

    /// Starts a firing pass that fires, through [`pop_due`](Self::pop_due), every timer due at
    /// `now` and scheduled before the pass. Timers scheduled during the pass for `now` or
    /// earlier wait for the next one.
    pub(crate) fn begin_pass(&mut self, now: Tick) {
        self.end_pass();
        if self.near.is_empty() && self.wheel.is_empty() {
            self.wheel.rebase(now);
        }
        self.pass = Some(now);
    }

    /// The next timer of the pass, in deadline order (first in, first out for equal
    /// deadlines); it stays firing until it is rescheduled or removed.
    pub(crate) fn pop_due(&mut self) -> Option<TimerId> {
        let reached = self.pass?;
        loop {
            if let Some((deadline, key)) = self.near.peek() {
                if deadline > reached {
                    return None;
                }
                self.unschedule(key);
                let gen = self.entries[key as usize].gen;
                return Some(TimerId { key, gen });
            }
            if !self.refill(reached) {
                return None;
            }
        }
    }

    /// Ends the firing pass, if one is open: timers it deferred join the schedule, and the
    /// near-term heap is refilled as the next poll would, so that `next_deadline` between runs
    /// (an embedding loop's `next_timeout`) reads at most the first few timers of a far wheel
    /// slot.
    #[inline]
    pub(crate) fn end_pass(&mut self) {
        let Some(reached) = self.pass.take() else {
            return;
        };
        if self.wheel.head(DEFERRED_LIST) != NIL {
            self.place_deferred();
        }
        self.fill_near(reached);
    }

    /// Schedules the timers a pass deferred.
    #[inline(never)]
    fn place_deferred(&mut self) {
        loop {
            let key = self.wheel.head(DEFERRED_LIST);
            if key == NIL {
                break;
            }
            self.wheel.unlink(&mut self.entries, key);
            let deadline = self.entries[key as usize].deadline;
            self.place(key, deadline);
        }
    }

    /// Takes a firing timer's action out (see [`Fired`]). One-shot and exit timers are removed.
    pub(crate) fn fire(&mut self, id: TimerId) -> Option<Fired<S>> {
        let key = self.key(id)?;
        let entry = &mut self.entries[key as usize];
        let word = entry.payload.as_word().unwrap_or_default();
        match entry.kind {
            Kind::Once => {
                let callback = std::mem::replace(&mut entry.payload, OnceCallback::word(0));
                self.remove(id);
                Some(Fired::Once(callback))
            }
            Kind::Repeat => {
                let repeat = &mut self.repeats[word as usize];
                let callback = repeat.callback.take()?;
                Some(Fired::Repeat(callback, repeat.period, repeat.schedule))
            }
            Kind::Timeout(kind) => Some(Fired::Timeout {
                fd: word as u32 as i32,
                gen: (word >> 32) as u32,
                kind,
            }),
            Kind::Exit => {
                self.remove(id);
                Some(Fired::Exit)
            }
        }
    }

    /// Gives a repeating timer its callback back after a run; returns whether the timer is
    /// still live (else the callback is dropped).
    pub(crate) fn finish_repeat(&mut self, id: TimerId, callback: RepeatCallback<S>) -> bool {
        let Some(key) = self.key(id) else {
            return false;
        };
        let entry = &self.entries[key as usize];
        if let (Kind::Repeat, Some(slot)) = (entry.kind, entry.payload.as_word()) {
            self.repeats[slot as usize].callback = Some(callback);
        }
        true
    }

    /// Entry and near-term heap capacities, for the churn test.
    #[cfg(test)]
    fn capacities(&self) -> (usize, usize) {
        (self.entries.capacity(), self.near.capacity())
    }
}

#[cfg(test)]
mod tests;
