//! The far term: a hierarchical timing wheel of intrusive lists, threaded through the timers'
//! own entries (no node is allocated per timer).
//!
//! Level 0 has 4096 slots of 2^16 ns (65.5 µs), 268 ms in all; levels 1 to 6 have 64 slots each,
//! every level 64 times coarser, up to 2^64 ns. A timer due at `d` goes to the level of the
//! highest bit in which `d` differs from the wheel's `cursor` (compared in groups: bits 16–27
//! for level 0, then six bits a level), in the slot given by `d`'s bits of that group. So every
//! timer of a level is due after every timer of the levels below, and the earliest timer of
//! the wheel is in the lowest set slot of its lowest non-empty level, which two bitmap scans
//! find. Deadlines stay exact: a slot is a list, not a rounding.
//!
//! The cursor only moves to the start of that first slot, and the slot is then emptied at once
//! (its timers go to lower levels, or to the near-term heap for level 0). So at any time, every
//! timer due at a given instant is in the same list, in the order it was scheduled: a timer is
//! appended to its list's tail, and a list is moved in order. That is what keeps equal
//! deadlines first in, first out without storing a sequence number per timer.

use std::cell::Cell;

use super::table::Entry;
use super::{Tick, NEVER};

/// The end of a list, or no timer.
pub(super) const NIL: u32 = u32::MAX;

/// Level 0 slots are `2^W0_BITS` ns wide.
pub(super) const W0_BITS: u32 = 16;
const L0_BITS: u32 = 12;
const L0_SLOTS: usize = 1 << L0_BITS;
/// Bits below this are level 0's.
const L0_END: u32 = W0_BITS + L0_BITS;
const UP_BITS: u32 = 6;
const UP_SLOTS: usize = 1 << UP_BITS;
/// Levels above level 0: 28 + 6 × 6 = 64 bits.
const UPPER: usize = 6;
const WHEEL_LISTS: usize = L0_SLOTS + UPPER * UP_SLOTS;
/// Timers due at `NEVER`, which never fire.
pub(super) const NEVER_LIST: u16 = WHEEL_LISTS as u16;
/// Timers scheduled during a firing pass and already due: they wait for the next pass.
pub(super) const DEFERRED_LIST: u16 = NEVER_LIST + 1;
const LISTS: usize = WHEEL_LISTS + 2;
/// A first slot with at most this many timers is read through for the exact earliest
/// deadline (a lone far timer wakes the loop once, on time); a longer one answers its start.
const SCAN: usize = 8;
/// A remembered answer not known (no slot of the wheel starts at tick 0).
const UNKNOWN: Tick = 0;

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// The lists and their occupancy bitmaps.
pub(super) struct Wheel {
    /// Aligned to a level-0 slot; every timer in the wheel is due at or after `near_end()`.
    cursor: Tick,
    /// Allocated with the first timer (36 KiB), so an idle base costs nothing.
    lists: Vec<List>,
    /// One bit per level-0 slot, and one per word of those.
    l0_words: [u64; L0_SLOTS / 64],
    l0_summary: u64,
    upper: [u64; UPPER],
    /// When the first slot starts, as [`first`](Self::first) answered until the wheel's lists
    /// or cursor changed (`NEVER`: the wheel is empty), or [`UNKNOWN`]. The loop asks several
    /// times an iteration, and with only far timers nothing changes between iterations:
    /// remembered, each ask is a load. Also a bound never later than the first slot's start.
    first_start: Cell<Tick>,
    /// The first slot's list, when `first_start` is known and not `NEVER`.
    first_list: Cell<u16>,
    /// What [`next_deadline`](Self::next_deadline) answered, forgotten with it: `NEVER`
    /// for `None`, [`UNKNOWN`] when not known. (No timer of the wheel is due at 0 or `NEVER`.)
    next: Cell<Tick>,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel {
            cursor: 0,
            lists: Vec::new(),
            l0_words: [0; L0_SLOTS / 64],
            l0_summary: 0,
            upper: [0; UPPER],
            first_list: Cell::new(0),
            next: Cell::new(UNKNOWN),
            first_start: Cell::new(UNKNOWN),
        }
    }
}

impl Wheel {
    /// Timers due before this belong to the near-term heap, not the wheel.
    pub(super) fn near_end(&self) -> Tick {
        self.cursor.saturating_add(1 << W0_BITS)
    }

    /// Whether the wheel's levels are empty (the never and deferred lists aside).
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.l0_summary == 0 && self.upper.iter().all(|&b| b == 0)
    }

    /// Moves the cursor to the level-0 slot of `now`; only when the wheel and the near-term
    /// heap are empty, so that new timers are placed relative to the present.
    pub(super) fn rebase(&mut self, now: Tick) {
        debug_assert!(self.is_empty());
        self.cursor = now & !((1 << W0_BITS) - 1);
        self.forget();
    }

    /// Forgets what `first` and `next_deadline` answered: a list or the cursor changed.
    fn forget(&self) {
        self.next.set(UNKNOWN);
        self.first_start.set(UNKNOWN);
    }

    /// The list of a timer due at `deadline`, at or after `near_end()`.
    pub(super) fn list_for(&self, deadline: Tick) -> u16 {
        let diff = deadline ^ self.cursor;
        if diff >> L0_END == 0 {
            return ((deadline >> W0_BITS) as usize & (L0_SLOTS - 1)) as u16;
        }
        let top = 63 - diff.leading_zeros();
        let level = ((top - L0_END) / UP_BITS) as usize;
        let shift = L0_END + UP_BITS * level as u32;
        let slot = (deadline >> shift) as usize & (UP_SLOTS - 1);
        (L0_SLOTS + level * UP_SLOTS + slot) as u16
    }

    /// The first non-empty slot of the wheel and when it starts: no timer of the wheel is due
    /// before that.
    #[inline]
    pub(super) fn first(&self) -> Option<(u16, Tick)> {
        match self.first_start.get() {
            UNKNOWN => self.find_first(),
            NEVER => None,
            start => Some((self.first_list.get(), start)),
        }
    }

    /// Whether the first slot starts after `at` (or the wheel is empty): cheaper than `first`,
    /// it may answer `false` when it does not know.
    #[inline]
    pub(super) fn starts_after(&self, at: Tick) -> bool {
        self.first_start.get() > at
    }

    /// [`first`](Self::first), from the bitmaps, remembered.
    #[inline(never)]
    fn find_first(&self) -> Option<(u16, Tick)> {
        let first = self.scan_bitmaps();
        let (list, start) = first.unwrap_or((0, NEVER));
        self.first_list.set(list);
        self.first_start.set(start);
        first
    }

    fn scan_bitmaps(&self) -> Option<(u16, Tick)> {
        if self.l0_summary != 0 {
            let word = self.l0_summary.trailing_zeros() as usize;
            let slot = word * 64 + self.l0_words[word].trailing_zeros() as usize;
            let start = (self.cursor & !((1 << L0_END) - 1)) | ((slot as u64) << W0_BITS);
            return Some((slot as u16, start));
        }
        let (level, bits) = (self.upper.iter().enumerate()).find(|(_, &bits)| bits != 0)?;
        let slot = bits.trailing_zeros() as u64;
        let shift = L0_END + UP_BITS * level as u32;
        let above = shift + UP_BITS;
        let keep = if above >= 64 { 0 } else { !((1 << above) - 1) };
        let start = (self.cursor & keep) | (slot << shift);
        Some(((L0_SLOTS + level * UP_SLOTS + slot as usize) as u16, start))
    }

    /// No timer of the wheel is due before this; `None` if the wheel is empty. It is the
    /// earliest deadline, exact, when the first slot holds at most [`SCAN`] timers, else that
    /// slot's start (earlier), so that no caller reads through a long list.
    #[inline]
    pub(super) fn next_deadline<S>(&self, entries: &[Entry<S>]) -> Option<Tick> {
        match self.next.get() {
            UNKNOWN => self.find_next_deadline(entries),
            NEVER => None,
            next => Some(next),
        }
    }

    /// [`next_deadline`](Self::next_deadline), from the first slot's list, remembered.
    #[inline(never)]
    fn find_next_deadline<S>(&self, entries: &[Entry<S>]) -> Option<Tick> {
        let next = self.first().map(|(list, start)| {
            let mut key = self.head(list);
            let mut earliest = NEVER;
            for _ in 0..SCAN {
                if key == NIL {
                    return earliest;
                }
                let entry = &entries[key as usize];
                earliest = earliest.min(entry.deadline);
                key = entry.next;
            }
            if key == NIL {
                earliest
            } else {
                start
            }
        });
        self.next.set(next.unwrap_or(NEVER));
        next
    }

    /// Empties list `list`, the first non-empty slot, starting at `start`, and moves the cursor
    /// there; returns the list's first timer, for the caller to place every timer again.
    pub(super) fn advance_to(&mut self, list: u16, start: Tick) -> u32 {
        debug_assert!(start >= self.near_end());
        self.cursor = start;
        self.forget();
        let head = self.lists[list as usize].head;
        self.lists[list as usize] = EMPTY;
        self.unmark(list);
        head
    }

    /// The first timer of `list` (`NIL` if empty).
    #[inline]
    pub(super) fn head(&self, list: u16) -> u32 {
        self.lists.get(list as usize).map_or(NIL, |l| l.head)
    }

    /// Allocates the lists, if not yet done.
    pub(super) fn allocate(&mut self) {
        if self.lists.is_empty() {
            self.lists = vec![EMPTY; LISTS];
        }
    }

    /// Appends timer `key` to `list`.
    pub(super) fn push_back<S>(&mut self, entries: &mut [Entry<S>], list: u16, key: u32) {
        self.allocate();
        if (list as usize) < WHEEL_LISTS {
            self.forget();
        }
        let l = &mut self.lists[list as usize];
        let tail = l.tail;
        l.tail = key;
        if tail == NIL {
            l.head = key;
            self.mark(list);
        } else {
            entries[tail as usize].next = key;
        }
        let entry = &mut entries[key as usize];
        entry.prev = tail;
        entry.next = NIL;
        entry.place = list;
    }

    /// Takes timer `key` out of the list it is in.
    pub(super) fn unlink<S>(&mut self, entries: &mut [Entry<S>], key: u32) {
        let Entry {
            place, prev, next, ..
        } = entries[key as usize];
        if (place as usize) < WHEEL_LISTS {
            self.forget();
        }
        let l = &mut self.lists[place as usize];
        match prev {
            NIL => l.head = next,
            prev => entries[prev as usize].next = next,
        }
        match next {
            NIL => l.tail = prev,
            next => entries[next as usize].prev = prev,
        }
        if l.head == NIL {
            self.unmark(place);
        }
    }

    fn mark(&mut self, list: u16) {
        let list = list as usize;
        if list < L0_SLOTS {
            self.l0_words[list / 64] |= 1 << (list % 64);
            self.l0_summary |= 1 << (list / 64);
        } else if list < WHEEL_LISTS {
            let i = list - L0_SLOTS;
            self.upper[i / UP_SLOTS] |= 1 << (i % UP_SLOTS);
        }
    }

    fn unmark(&mut self, list: u16) {
        let list = list as usize;
        if list < L0_SLOTS {
            let word = &mut self.l0_words[list / 64];
            *word &= !(1 << (list % 64));
            if *word == 0 {
                self.l0_summary &= !(1 << (list / 64));
            }
        } else if list < WHEEL_LISTS {
            let i = list - L0_SLOTS;
            self.upper[i / UP_SLOTS] &= !(1 << (i % UP_SLOTS));
        }
    }
}
