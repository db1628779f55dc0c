//! The indexed 4-ary min-heap of a base's deadlines, ordered by `(deadline, seq)`.

use slab::Slab;

use super::{Action, Tick, TimerId, NEVER};

/// A timer: its action and where it sits in the heap.
pub(crate) struct Entry<S> {
    pub(crate) unique: u64,
    /// The deadline it was last scheduled for (kept while it fires, for drift-free repeats).
    pub(crate) deadline: Tick,
    /// Index in the heap, or `DETACHED` while the timer is firing.
    heap_pos: usize,
    pub(crate) refd: bool,
    pub(crate) action: Action<S>,
}

const DETACHED: usize = usize::MAX;

/// Children per node: a 4-ary heap is half as deep as a binary one, and a node's children
/// share a cache line or two, so a pop touches fewer lines.
const ARITY: usize = 4;

#[derive(Clone, Copy)]
struct Node {
    deadline: Tick,
    seq: u64,
    key: usize,
}

impl Node {
    fn before(&self, other: &Node) -> bool {
        (self.deadline, self.seq) < (other.deadline, other.seq)
    }
}

/// The timers of one base.
pub(crate) struct Timers<S> {
    entries: Slab<Entry<S>>,
    heap: Vec<Node>,
    next_seq: u64,
    next_unique: u64,
    refd: usize,
}

impl<S> Timers<S> {
    pub(crate) fn new() -> Self {
        Timers {
            entries: Slab::new(),
            heap: Vec::new(),
            next_seq: 0,
            next_unique: 0,
            refd: 0,
        }
    }

    /// Number of live timers (user timers, handler timeouts and exit timers).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Number of timers that keep the loop alive.
    pub(crate) fn refd(&self) -> usize {
        self.refd
    }

    /// The sequence number the next scheduling will get: timers scheduled from now on compare
    /// greater than or equal to it.
    pub(crate) fn seq_mark(&self) -> u64 {
        self.next_seq
    }

    /// Adds a timer due at `deadline` and returns its id.
    pub(crate) fn insert(&mut self, deadline: Tick, refd: bool, action: Action<S>) -> TimerId {
        let unique = self.next_unique;
        self.next_unique += 1;
        let key = self.entries.insert(Entry {
            unique,
            deadline,
            heap_pos: DETACHED,
            refd,
            action,
        });
        self.refd += usize::from(refd);
        self.schedule(key, deadline);
        TimerId { key, unique }
    }

    /// The entry of a live timer.
    pub(crate) fn get_mut(&mut self, id: TimerId) -> Option<&mut Entry<S>> {
        self.entries
            .get_mut(id.key)
            .filter(|e| e.unique == id.unique)
    }

    pub(crate) fn get(&self, id: TimerId) -> Option<&Entry<S>> {
        self.entries.get(id.key).filter(|e| e.unique == id.unique)
    }

    /// Whether `id` names a live timer.
    pub(crate) fn contains(&self, id: TimerId) -> bool {
        self.get(id).is_some()
    }

    /// Removes a timer (scheduled or firing) and returns its entry.
    pub(crate) fn remove(&mut self, id: TimerId) -> Option<Entry<S>> {
        if !self.contains(id) {
            return None;
        }
        let pos = self.entries[id.key].heap_pos;
        if pos != DETACHED {
            self.heap_remove(pos);
        }
        let entry = self.entries.remove(id.key);
        self.refd -= usize::from(entry.refd);
        Some(entry)
    }

    /// Moves a live timer (scheduled or firing) to a new deadline, behind every timer already
    /// scheduled for the same deadline.
    pub(crate) fn reschedule(&mut self, id: TimerId, deadline: Tick) -> bool {
        if !self.contains(id) {
            return false;
        }
        let pos = self.entries[id.key].heap_pos;
        if pos != DETACHED {
            self.heap_remove(pos);
        }
        self.schedule(id.key, deadline);
        true
    }

    /// Whether the timer is out of the heap because it is firing now.
    pub(crate) fn is_detached(&self, id: TimerId) -> bool {
        self.get(id).is_some_and(|e| e.heap_pos == DETACHED)
    }

    /// Marks a timer as keeping the loop alive, or not.
    pub(crate) fn set_ref(&mut self, id: TimerId, refd: bool) -> bool {
        let Some(entry) = self.get_mut(id) else {
            return false;
        };
        let was = std::mem::replace(&mut entry.refd, refd);
        self.refd = self.refd + usize::from(refd) - usize::from(was);
        true
    }

    /// The earliest deadline, if any timer can ever fire.
    pub(crate) fn next_deadline(&self) -> Option<Tick> {
        self.heap
            .first()
            .map(|n| n.deadline)
            .filter(|&d| d != NEVER)
    }

    /// Takes the earliest timer out of the heap if it is due at `now` and was scheduled before
    /// `seq_mark`. The timer stays in the slab, detached, until it is rescheduled or removed.
    pub(crate) fn pop_due(&mut self, now: Tick, seq_mark: u64) -> Option<TimerId> {
        let root = *self.heap.first()?;
        if root.deadline > now || root.seq >= seq_mark {
            return None;
        }
        self.heap_remove(0);
        Some(TimerId {
            key: root.key,
            unique: self.entries[root.key].unique,
        })
    }

    fn schedule(&mut self, key: usize, deadline: Tick) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = &mut self.entries[key];
        entry.deadline = deadline;
        entry.heap_pos = self.heap.len();
        self.heap.push(Node { deadline, seq, key });
        self.sift_up(self.heap.len() - 1);
    }

    fn heap_remove(&mut self, pos: usize) {
        let removed = self.heap.swap_remove(pos);
        self.entries[removed.key].heap_pos = DETACHED;
        if pos < self.heap.len() {
            self.entries[self.heap[pos].key].heap_pos = pos;
            let pos = self.sift_up(pos);
            self.sift_down(pos);
        }
    }

    /// Moves the node at `pos` up to its place; returns where it landed. Parents move down
    /// into the hole it leaves, so each level costs one position update, not two.
    fn sift_up(&mut self, mut pos: usize) -> usize {
        let node = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            if !node.before(&self.heap[parent]) {
                break;
            }
            self.place(pos, self.heap[parent]);
            pos = parent;
        }
        self.place(pos, node);
        pos
    }

    /// Moves the node at `pos` down to its place, its earliest child moving up each level.
    fn sift_down(&mut self, mut pos: usize) {
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
            self.place(pos, self.heap[earliest]);
            pos = earliest;
        }
        self.place(pos, node);
    }

    /// Puts `node` at `pos` and tells its entry.
    fn place(&mut self, pos: usize, node: Node) {
        self.heap[pos] = node;
        self.entries[node.key].heap_pos = pos;
    }

    /// Heap capacity and slab capacity, for the churn test.
    #[cfg(test)]
    fn capacities(&self) -> (usize, usize) {
        (self.heap.capacity(), self.entries.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::{deadline_after, next_deadline, Schedule};
    use std::time::Duration;

    fn once() -> Action<()> {
        Action::Exit
    }

    fn drain(timers: &mut Timers<()>, now: Tick) -> Vec<TimerId> {
        let mark = timers.seq_mark();
        let mut out = Vec::new();
        while let Some(id) = timers.pop_due(now, mark) {
            timers.remove(id);
            out.push(id);
        }
        out
    }

    #[test]
    fn equal_deadlines_pop_in_insertion_order() {
        let mut timers = Timers::new();
        let ids: Vec<_> = (0..100).map(|_| timers.insert(5, true, once())).collect();
        assert_eq!(drain(&mut timers, 5), ids);
    }

    #[test]
    fn deadlines_pop_in_order_after_random_cancels() {
        let mut timers = Timers::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut live = Vec::new();
        for _ in 0..2000 {
            let d = rand() % 500;
            live.push((d, timers.insert(d, true, once())));
            if rand() % 3 == 0 {
                let victim = live.swap_remove((rand() % live.len() as u64) as usize);
                assert!(timers.remove(victim.1).is_some());
            }
        }
        let popped = drain(&mut timers, NEVER - 1);
        assert_eq!(popped.len(), live.len());
        let deadline_of = |id: &TimerId| live.iter().find(|(_, l)| l == id).unwrap().0;
        assert!(popped
            .windows(2)
            .all(|w| deadline_of(&w[0]) <= deadline_of(&w[1])));
    }

    #[test]
    fn timers_scheduled_during_a_pass_wait_for_the_next_pass() {
        let mut timers = Timers::new();
        timers.insert(0, true, once());
        let mark = timers.seq_mark();
        let first = timers.pop_due(10, mark).unwrap();
        timers.reschedule(first, 0);
        assert_eq!(timers.pop_due(10, mark), None);
        assert_eq!(timers.pop_due(10, timers.seq_mark()), Some(first));
    }

    #[test]
    fn cancelled_ids_stay_invalid_after_slot_reuse() {
        let mut timers = Timers::new();
        let old = timers.insert(1, true, once());
        timers.remove(old);
        let new = timers.insert(1, true, once());
        assert!(timers.remove(old).is_none());
        assert!(timers.contains(new));
    }

    #[test]
    fn add_cancel_churn_keeps_memory_bounded() {
        let mut timers = Timers::new();
        let keep: Vec<_> = (0..10).map(|i| timers.insert(i, true, once())).collect();
        for i in 0..1_000_000u64 {
            let id = timers.insert(i % 1000, true, once());
            timers.remove(id);
        }
        assert_eq!(timers.len(), keep.len());
        let (heap, slab) = timers.capacities();
        assert!(heap <= 16 && slab <= 16, "heap {heap}, slab {slab}");
    }

    #[test]
    fn never_deadline_is_not_a_wakeup() {
        let mut timers = Timers::new();
        timers.insert(deadline_after(7, Duration::MAX), true, once());
        assert_eq!(timers.next_deadline(), None);
        assert_eq!(timers.pop_due(NEVER - 1, timers.seq_mark()), None);
    }

    #[test]
    fn fixed_rate_skips_missed_periods_and_keeps_phase() {
        let p = Duration::from_nanos(100);
        assert_eq!(next_deadline(Schedule::FixedRate, p, 1000, 1050), 1100);
        assert_eq!(next_deadline(Schedule::FixedRate, p, 1000, 1570), 1600);
        assert_eq!(next_deadline(Schedule::FixedRate, p, 1000, 1600), 1700);
        assert_eq!(next_deadline(Schedule::FixedDelay, p, 1000, 1570), 1670);
        assert_eq!(
            next_deadline(Schedule::FixedRate, Duration::MAX, 1000, 1570),
            NEVER
        );
        assert_eq!(
            next_deadline(Schedule::FixedRate, Duration::ZERO, 1000, 1570),
            1570
        );
    }
}
