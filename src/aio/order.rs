//! The per-file order of requests: which request of a file may start while earlier ones of the
//! same file have not finished.
//!
//! Every request on an [`AioFile`](super::AioFile) (and its clones) is entered here when it is
//! issued, with what it touches ([`Access`]), and leaves when its result is known. A request
//! starts at once unless an earlier, unfinished request of the file conflicts with it; then it
//! is *held* and starts when the last such request finishes. Conflicts (`docs/aio.md` has the
//! table and the argument):
//!
//! * a write and any read or write of an overlapping range, in either order;
//! * an `O_APPEND` write and anything (its range is wherever the end of the file is then);
//! * a sync (`fsync`, `fdatasync`) and anything issued before it;
//! * a barrier (`set_len`, `fallocate`, `close`) and anything, in either order.
//!
//! Reads never conflict with reads, and requests issued after a sync do not wait for it. The
//! order holds whatever runs the request (the page cache on the loop thread, kernel AIO, a
//! helper), because nothing starts before the requests it depends on have finished.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use std::io;

use super::OpState;
use crate::base::EventBase;
use crate::pool::{Complete, Job, JobId};

/// What a request touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads the bytes `[start, end)`.
    Read(u64, u64),
    /// Writes the bytes `[start, end)` (`end` is `u64::MAX` for an `O_APPEND` write).
    Write(u64, u64),
    /// Flushes what was written before it.
    Sync,
    /// Changes the file as a whole (size, allocation) or ends it.
    Barrier,
}

impl Access {
    /// Whether `later`, issued after `self`, must wait for `self` to finish.
    fn holds_back(self, later: Access) -> bool {
        use Access::*;
        match (self, later) {
            (_, Sync | Barrier) | (Barrier, _) => true,
            (Sync, _) | (Read(..), Read(..)) => false,
            (Read(a, b) | Write(a, b), Write(c, d)) | (Write(a, b), Read(c, d)) => a < d && c < b,
        }
    }
}

/// What a held request is, so that it can be started when released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// An AIO request (slab key and generation as in `AioId`).
    Request(super::AioId),
    /// A job parked in the helper pool.
    Job(crate::pool::JobId),
}

struct Entry {
    ticket: u64,
    access: Access,
    start: Start,
    held: bool,
}

/// Hashes a file's identity, the address of its shared state: one multiplication, where
/// SipHash cost a quarter of a cached read.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // Fibonacci hashing; the allocation's low bits are always zero, the high ones spread.
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0.rotate_left(32)
    }
}

/// The unfinished requests of every file with any, in issue order.
#[derive(Default)]
pub(crate) struct Order {
    /// Lists of files that went idle stay (empty, their memory kept) until there are many:
    /// a file going idle and busy again, as at depth 1, touches the map once.
    files: HashMap<usize, Vec<Entry>, BuildHasherDefault<AddressHasher>>,
    /// Files whose list is not empty.
    busy: usize,
    next_ticket: u64,
}

impl Order {
    /// Whether `file` has no unfinished request.
    pub(crate) fn is_idle(&self, file: usize) -> bool {
        self.files.get(&file).map_or(true, Vec::is_empty)
    }

    /// A fresh ticket (never 0), for [`admit_ticket`](Self::admit_ticket).
    pub(crate) fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Enters a request on the file `file` (its identity); returns its ticket and whether it
    /// may start now (`false`: it is held until [`finish`](Self::finish) releases it).
    pub(crate) fn admit(&mut self, file: usize, access: Access, start: Start) -> (u64, bool) {
        let ticket = self.ticket();
        (ticket, self.admit_ticket(file, ticket, access, start))
    }

    /// As [`admit`](Self::admit), under a ticket taken before.
    pub(crate) fn admit_ticket(
        &mut self,
        file: usize,
        ticket: u64,
        access: Access,
        start: Start,
    ) -> bool {
        let entries = self.files.entry(file).or_default();
        let held = entries.iter().any(|e| e.access.holds_back(access));
        if entries.is_empty() {
            self.busy += 1;
        }
        entries.push(Entry {
            ticket,
            access,
            start,
            held,
        });
        !held
    }

    /// Enters the next part of a whole-span transfer in the place of its part `prev`, which is
    /// still listed (it finishes after its callback, which issued this one): requests issued
    /// after the span stay behind it. As [`admit`](Self::admit) if `prev` is not listed.
    pub(crate) fn admit_in_place_of(
        &mut self,
        file: usize,
        prev: u64,
        access: Access,
        start: Start,
    ) -> (u64, bool) {
        let ticket = self.ticket();
        let entries = self.files.entry(file).or_default();
        let Some(at) = entries.iter().position(|e| e.ticket == prev) else {
            return (ticket, self.admit_ticket(file, ticket, access, start));
        };
        let held = entries[..at].iter().any(|e| e.access.holds_back(access));
        let entry = Entry {
            ticket,
            access,
            start,
            held,
        };
        entries.insert(at, entry);
        (ticket, !held)
    }

    /// The request `ticket` of `file` has finished (or will never run): appends to `released`
    /// the held requests of the file that may start now.
    pub(crate) fn finish(&mut self, file: usize, ticket: u64, released: &mut Vec<Start>) {
        let Some(entries) = self.files.get_mut(&file) else {
            return;
        };
        let Some(at) = entries.iter().position(|e| e.ticket == ticket) else {
            return;
        };
        entries.remove(at);
        for i in at..entries.len() {
            if entries[i].held {
                let access = entries[i].access;
                if !entries[..i].iter().any(|e| e.access.holds_back(access)) {
                    entries[i].held = false;
                    released.push(entries[i].start);
                }
            }
        }
        if entries.is_empty() {
            self.busy -= 1;
            if self.files.len() > 2 * self.busy + 64 {
                self.files.retain(|_, entries| !entries.is_empty());
            }
        }
    }
}

impl<S> EventBase<S> {
    /// A ticket in the order of `file`'s requests, for [`ordered_job`](Self::ordered_job),
    /// whose callback must call [`file_request_finished`](Self::file_request_finished) with
    /// it.
    pub(crate) fn file_ticket(&mut self) -> u64 {
        self.aio.order.ticket()
    }

    /// Runs `job` in `file`'s helper class, in the file's request order as `access`.
    pub(crate) fn ordered_job(
        &mut self,
        (file, ticket): (&super::AioFile, u64),
        access: Access,
        job: Job,
        complete: Complete<S>,
    ) -> io::Result<JobId> {
        let id = self.park_job(file.device(), job, complete)?;
        let start = Start::Job(id);
        if (self.aio.order).admit_ticket(file.identity(), ticket, access, start) {
            self.release_job(id);
        }
        Ok(id)
    }

    /// The request `ticket` of the file `file` has its result: starts the requests of the file
    /// that waited for it and for nothing else.
    pub(crate) fn file_request_finished(&mut self, file: usize, ticket: u64) {
        let mut released = std::mem::take(&mut self.aio.released);
        self.aio.order.finish(file, ticket, &mut released);
        for start in released.drain(..) {
            match start {
                Start::Request(id) => {
                    let held = (self.aio.ops.get(id.key as usize))
                        .is_some_and(|op| op.gen == id.gen && op.state == OpState::Held);
                    if held {
                        self.route_new(id);
                    }
                }
                Start::Job(id) => self.release_job(id),
            }
        }
        self.aio.released = released;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::JobId;

    fn job(n: u32) -> Start {
        Start::Request(super::super::AioId { key: n, gen: 0 })
    }

    #[test]
    fn reads_run_together_and_a_write_waits_for_the_reads_it_overlaps() {
        let mut order = Order::default();
        let (r1, go1) = order.admit(1, Access::Read(0, 10), job(1));
        let (_, go2) = order.admit(1, Access::Read(5, 20), job(2));
        let (_, go3) = order.admit(1, Access::Write(10, 30), job(3));
        let (_, go4) = order.admit(1, Access::Write(30, 40), job(4));
        let (_, go5) = order.admit(2, Access::Write(0, 40), job(5));
        assert_eq!((go1, go2, go3, go4, go5), (true, true, false, true, true));
        let mut released = Vec::new();
        order.finish(1, r1, &mut released);
        assert!(released.is_empty(), "the second read still overlaps");
    }

    #[test]
    fn a_sync_waits_for_everything_before_it_and_holds_back_nothing_after_it() {
        let mut order = Order::default();
        let (w, _) = order.admit(1, Access::Write(0, 10), job(1));
        let (s, go_sync) = order.admit(1, Access::Sync, job(2));
        let (_, go_after) = order.admit(1, Access::Write(0, 10), job(3));
        assert!(!go_sync);
        assert!(!go_after, "it overlaps the first write");
        let mut released = Vec::new();
        order.finish(1, w, &mut released);
        assert_eq!(released, [job(2), job(3)]);
        released.clear();
        order.finish(1, s, &mut released);
        assert!(released.is_empty());
    }

    #[test]
    fn a_barrier_holds_back_everything_after_it_and_appends_overlap_everything() {
        let mut order = Order::default();
        let (a, _) = order.admit(1, Access::Write(0, u64::MAX), job(1));
        let (_, go_append) = order.admit(1, Access::Write(0, u64::MAX), job(2));
        assert!(!go_append);
        let barrier = Start::Job(JobId::for_test(7));
        let (_, go_barrier) = order.admit(1, Access::Barrier, barrier);
        let (_, go_read) = order.admit(1, Access::Read(1 << 40, 1 << 41), job(4));
        assert!(!go_barrier && !go_read);
        let mut released = Vec::new();
        order.finish(1, a, &mut released);
        assert_eq!(released, [job(2)], "in issue order, one at a time");
    }

    #[test]
    fn the_rest_of_a_span_keeps_its_place_ahead_of_later_requests() {
        let mut order = Order::default();
        let (first, _) = order.admit(1, Access::Read(0, 8192), job(1));
        let (_, go_write) = order.admit(1, Access::Write(4096, 8192), job(2));
        let (rest, go_rest) = order.admit_in_place_of(1, first, Access::Read(4096, 8192), job(3));
        assert!(!go_write && go_rest);
        let mut released = Vec::new();
        order.finish(1, first, &mut released);
        assert!(
            released.is_empty(),
            "the write waits for the rest of the read"
        );
        order.finish(1, rest, &mut released);
        assert_eq!(released, [job(2)]);
    }
}
