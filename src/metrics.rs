//! Counters that describe what a base has been doing.

use std::time::Duration;

/// A snapshot of a base's counters, from [`EventBase::metrics`](crate::EventBase::metrics).
///
/// Counting costs a few integer additions per iteration; nothing here allocates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Loop iterations run (each polls at most once).
    pub iterations: u64,
    /// `epoll_wait` calls made.
    pub polls: u64,
    /// Callbacks run: fd handlers and their timeouts, timers, signal handlers, AIO completions,
    /// child watches and cross-thread posts.
    pub callbacks: u64,
    /// Total time spent inside `epoll_wait` (blocked or not).
    pub poll_time: Duration,
    /// The longest time the loop thread went without polling during a run: from a poll's
    /// return (or the start of the run) to the next poll (or the end of the run), spent
    /// running callbacks, submitting requests and anything else that held the thread. This is
    /// the loop's worst stall, what every timer and socket on it waited at most on top of its
    /// own delay; a file operation that blocked the loop shows up here. Time between runs does
    /// not count.
    pub longest_hold: Duration,
    /// fd handlers installed now (read, write and error handlers each count).
    pub fd_handlers: usize,
    /// Timers pending now, including handler inactivity timeouts and `exit_after` timers.
    pub timers: usize,
    /// AIO requests handed to the kernel and not completed yet.
    pub aio_in_flight: usize,
    /// `io_submit` calls made.
    pub aio_submit_calls: u64,
    /// Total time spent inside `io_submit`. With helpers off, this is where buffered reads and
    /// writes (and every request on FUSE, NFS...) happen, on the loop thread.
    pub aio_submit_time: Duration,
    /// AIO requests completed (their callbacks were called), by any path.
    pub aio_completions: u64,
    /// Buffered reads served from the page cache on the loop thread (one `preadv2` with
    /// `RWF_NOWAIT`: a copy, no kernel AIO, no helper).
    pub aio_cached_reads: u64,
    /// AIO requests that kernel AIO stopped under `RWF_NOWAIT` because going on would block
    /// (`EAGAIN`, or a short count from a buffered read or any write, where the kernel may have
    /// stopped at what would block), and whose rest then ran on a helper thread.
    pub aio_nowait_retries: u64,
    /// AIO requests run on a helper thread because their file system cannot run them without
    /// blocking: known from `statfs` (FUSE, NFS...), or learned from an `EOPNOTSUPP` answer to
    /// `RWF_NOWAIT`, after which the file's later requests in that direction go straight to
    /// helpers.
    pub aio_on_helpers: u64,
    /// File-system operations the kernel's caches answered on the loop thread, without a
    /// helper: `open_beneath` of a path all in the dentry cache (`RESOLVE_CACHED`), and
    /// `file_metadata` of a file on a local file system.
    pub fs_cached_ops: u64,
    /// Jobs the helper threads finished (AIO requests and metadata operations).
    pub helper_jobs: u64,
    /// Total time helper jobs waited in the queue before a helper took them.
    pub helper_queue_time: Duration,
    /// Total time helpers spent running jobs.
    pub helper_run_time: Duration,
    /// Signal instances lost, process-wide since the start: taken by a thread that does not
    /// block them, while the forwarding pipe that carries such instances to the loops was
    /// full (about 26,000 instances waiting unread), or forwarded to a base that does not run
    /// while as many as the kernel queues (`RLIMIT_SIGPENDING`) waited for it already (see
    /// "Signals and child processes" in [the architecture guide](crate::guide::architecture)).
    pub signals_dropped: u64,
}
