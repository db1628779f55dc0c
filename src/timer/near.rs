//! The exact near term: an indexed 4-ary min-heap of the timers due before the wheel's first
//! slot, ordered by `(deadline, seq)`.
//!
//! It holds one level-0 slot of the wheel (65 µs of deadlines) and whatever is added for
//! earlier than that; the wheel's cursor never runs more than one slot ahead of the loop time,
//! so that is at most the timers due within about 131 µs, plus any overdue ones: it stays small
//! and in cache whatever the number of timers. `seq` is given as timers enter it, in the order
//! the wheel keeps (scheduling order among equal deadlines), so equal deadlines leave it first
//! in, first out.

use super::table::{Entry, NEAR};
use super::Tick;

/// Children per node: a 4-ary heap is half as deep as a binary one, and a node's children
/// share a cache line or two.
const ARITY: usize = 4;

#[derive(Clone, Copy)]
struct Node {
    deadline: Tick,
    seq: u64,
    key: u32,
}

impl Node {
    fn before(&self, other: &Node) -> bool {
        (self.deadline, self.seq) < (other.deadline, other.seq)
    }
}

/// The near-term heap. A timer in it has `place == NEAR` and its heap position in `prev`.
#[derive(Default)]
pub(super) struct Near {
    heap: Vec<Node>,
    next_seq: u64,
}

impl Near {
    pub(super) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest deadline and its timer.
    pub(super) fn peek(&self) -> Option<(Tick, u32)> {
        self.heap.first().map(|n| (n.deadline, n.key))
    }

    /// Adds timer `key`, due at `deadline`, behind every timer already here for that deadline.
    pub(super) fn push<S>(&mut self, entries: &mut [Entry<S>], key: u32, deadline: Tick) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = &mut entries[key as usize];
        entry.place = NEAR;
        self.heap.push(Node { deadline, seq, key });
        self.sift_up(entries, self.heap.len() - 1);
    }

    /// Takes the timer at heap position `pos` out.
    pub(super) fn remove<S>(&mut self, entries: &mut [Entry<S>], pos: u32) {
        let pos = pos as usize;
        self.heap.swap_remove(pos);
        if pos < self.heap.len() {
            entries[self.heap[pos].key as usize].prev = pos as u32;
            let pos = self.sift_up(entries, pos);
            self.sift_down(entries, pos);
        }
        if self.heap.is_empty() && self.heap.capacity() > 4096 {
            // After a burst (a stall that made a million timers due at once), give it back.
            self.heap = Vec::new();
        }
    }

    /// Moves the node at `pos` up to its place; returns where it landed.
    fn sift_up<S>(&mut self, entries: &mut [Entry<S>], mut pos: usize) -> usize {
        let node = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            if !node.before(&self.heap[parent]) {
                break;
            }
            self.place(entries, pos, self.heap[parent]);
            pos = parent;
        }
        self.place(entries, pos, node);
        pos
    }

    /// Moves the node at `pos` down to its place, its earliest child moving up each level.
    fn sift_down<S>(&mut self, entries: &mut [Entry<S>], mut pos: usize) {
        let node = self.heap[pos];
        let len = self.heap.len();
        loop {
            let first = pos * ARITY + 1;
            if first >= len {
                break;
            }
            let mut earliest = first;
            for child in first + 1..(first + ARITY).min(len) {
                if self.heap[child].before(&self.heap[earliest]) {
                    earliest = child;
                }
            }
            if !self.heap[earliest].before(&node) {
                break;
            }
            self.place(entries, pos, self.heap[earliest]);
            pos = earliest;
        }
        self.place(entries, pos, node);
    }

    /// Puts `node` at `pos` and tells its entry.
    fn place<S>(&mut self, entries: &mut [Entry<S>], pos: usize, node: Node) {
        self.heap[pos] = node;
        entries[node.key as usize].prev = pos as u32;
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.heap.capacity()
    }
}
