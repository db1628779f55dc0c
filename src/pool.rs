//! The helper pool: a few threads for the file operations that would block the loop.
//!
//! Kernel AIO runs a buffered read inside `io_submit`, and so does every file system that does
//! not support `RWF_NOWAIT` (FUSE, NFS...); `open`, `stat` and directory listings have no AIO
//! at all. Such operations run here, on std threads that the base starts lazily (up to
//! [`AioOptions::helper_threads`](crate::AioOptions::helper_threads), 4 by default) with every
//! signal blocked, so that no process-directed signal is ever delivered to them.
//!
//! A job is a closure that owns everything it touches (or, for AIO requests re-run here,
//! points into memory the base keeps alive: see `aio/helper.rs`), and returns a boxed output.
//! Its callback stays on the loop thread, in the pool's table. A finished job goes into a
//! shared list and, if the list was empty, writes the pool's eventfd, which the loop harvests
//! as [`Source::Helpers`](crate::source::Source): callbacks always run on the loop thread.
//!
//! Jobs wait in a bounded queue; beyond it they wait in a backlog on the loop side. A job still
//! queued can be cancelled (it never runs); a running one cannot. Dropping the base never waits
//! for a helper: a helper stuck in a hung FUSE read keeps running, detached, and its output is
//! dropped whenever it finishes.

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::Interest;
use slab::Slab;

use crate::base::EventBase;
use crate::source::Source;
use crate::sys::{self, SigSet};

/// What a job returns, downcast by its callback.
pub(crate) type Output = Box<dyn Any + Send>;
/// Work for a helper thread.
pub(crate) type Job = Box<dyn FnOnce() -> Output + Send>;
/// The loop-side end of a job: its output, or `None` if it was cancelled before it ran.
pub(crate) type Complete<S> = Box<dyn FnOnce(&mut EventBase<S>, &mut S, Option<Output>)>;

/// Who is told when a job finishes.
enum Waiter<S> {
    /// An AIO request re-run on a helper (its `aio_data`): the output is the `res` of its
    /// completion, which joins the AIO completion queue.
    Aio(u64),
    /// Any other job: a callback.
    Callback(Complete<S>),
}

/// Identifies a job in the pool's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JobId {
    key: usize,
    gen: u32,
}

struct Queued {
    id: JobId,
    job: Job,
    queued_at: Instant,
}

struct Finished {
    id: JobId,
    /// `None`: cancelled before it ran.
    output: Option<Output>,
    queued_for: Duration,
    ran_for: Duration,
    /// Run by a helper (counted in the helper metrics), not on the loop thread.
    on_helper: bool,
}

/// What the loop and its helpers share.
struct Shared {
    state: Mutex<State>,
    job_ready: Condvar,
    finished: Mutex<Vec<Finished>>,
    eventfd: OwnedFd,
}

struct State {
    queue: VecDeque<Queued>,
    idle: usize,
    closed: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks (jobs run outside them), so a poisoned one is still
    // consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The next job for a helper; `None` once the pool is closed.
    fn next_job(&self) -> Option<Queued> {
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return None;
            }
            if let Some(job) = state.queue.pop_front() {
                return Some(job);
            }
            state.idle += 1;
            state = self
                .job_ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        }
    }

    fn finish(&self, finished: Finished) {
        let was_empty = {
            let mut list = lock(&self.finished);
            list.push(finished);
            list.len() == 1
        };
        if was_empty {
            sys::eventfd_add(self.eventfd.as_fd(), 1);
        }
    }
}

/// A helper thread: runs jobs until the pool is closed.
fn helper(shared: Arc<Shared>) {
    while let Some(Queued { id, job, queued_at }) = shared.next_job() {
        let started = Instant::now();
        let output = panic::catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|_| {
            log::error!("a helper job panicked");
            Box::new(io::Error::other("the helper job panicked"))
        });
        shared.finish(Finished {
            id,
            output: Some(output),
            queued_for: started - queued_at,
            ran_for: started.elapsed(),
            on_helper: true,
        });
    }
}

/// Settings of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolLimits {
    /// Helper threads at most; 0 runs jobs on the loop thread instead (blocking it).
    pub(crate) threads: usize,
    /// Jobs handed to the helpers at once; more wait in the loop's backlog.
    pub(crate) queue: usize,
}

/// The helper pool of one base.
pub(crate) struct Pool<S> {
    shared: Option<Arc<Shared>>,
    threads: usize,
    limits: PoolLimits,
    table: Slab<(u32, Waiter<S>)>,
    /// Jobs beyond the queue bound, not handed to the helpers yet.
    backlog: VecDeque<Queued>,
    /// Jobs handed to the helpers and not harvested yet.
    handed_out: usize,
    /// Finished jobs whose callbacks have not run.
    owed: VecDeque<Finished>,
    next_gen: u32,
}

impl<S> Pool<S> {
    pub(crate) fn new() -> Self {
        Pool {
            shared: None,
            threads: 0,
            limits: PoolLimits {
                threads: 4,
                queue: 256,
            },
            table: Slab::new(),
            backlog: VecDeque::new(),
            handed_out: 0,
            owed: VecDeque::new(),
            next_gen: 0,
        }
    }

    pub(crate) fn set_limits(&mut self, limits: PoolLimits) {
        self.limits = limits;
    }

    /// Whether jobs run on helper threads (rather than inline on the loop thread).
    pub(crate) fn enabled(&self) -> bool {
        self.limits.threads > 0
    }

    /// Jobs whose callbacks have not run (they keep the loop alive).
    pub(crate) fn pending(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn owes_work(&self) -> bool {
        !self.owed.is_empty()
    }

    /// Enters `waiter` in the table under a fresh id.
    fn register(&mut self, waiter: Waiter<S>) -> JobId {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        JobId {
            key: self.table.insert((gen, waiter)),
            gen,
        }
    }

    /// Hands `queued` to the helpers, or to the backlog when the queue is full.
    fn dispatch(&mut self, queued: Queued) -> io::Result<()> {
        if self.handed_out >= self.limits.queue {
            self.backlog.push_back(queued);
            return Ok(());
        }
        let shared = self.shared.as_ref().expect("created by the caller").clone();
        let spawn = {
            let mut state = lock(&shared.state);
            state.queue.push_back(queued);
            state.idle == 0 && self.threads < self.limits.threads
        };
        self.handed_out += 1;
        shared.job_ready.notify_one();
        if spawn {
            spawn_helper(shared)?;
            self.threads += 1;
        }
        Ok(())
    }

    /// Moves finished jobs into `owed`, and backlog jobs into the freed queue places.
    fn harvest(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        sys::eventfd_take(shared.eventfd.as_fd());
        let finished = std::mem::take(&mut *lock(&shared.finished));
        self.handed_out -= finished.len();
        self.owed.extend(finished);
        while self.handed_out < self.limits.queue {
            let Some(queued) = self.backlog.pop_front() else {
                break;
            };
            if let Err(e) = self.dispatch(queued) {
                log::error!("cannot start a helper thread: {e}");
                break;
            }
        }
    }

    /// Takes a job that has not started out of the backlog or the queue; `false` if it is
    /// running, finished or unknown.
    pub(crate) fn cancel(&mut self, id: JobId) -> bool {
        let taken = match self.backlog.iter().position(|q| q.id == id) {
            Some(at) => self.backlog.remove(at),
            None => self.take_queued(id),
        };
        let Some(queued) = taken else {
            return false;
        };
        self.owed.push_back(Finished {
            id,
            output: None,
            queued_for: queued.queued_at.elapsed(),
            ran_for: Duration::ZERO,
            on_helper: true,
        });
        true
    }

    /// Takes a job out of the shared queue if no helper has taken it yet.
    fn take_queued(&mut self, id: JobId) -> Option<Queued> {
        let shared = self.shared.as_ref()?;
        let mut state = lock(&shared.state);
        let at = state.queue.iter().position(|q| q.id == id)?;
        self.handed_out -= 1;
        state.queue.remove(at)
    }
}

impl<S> Drop for Pool<S> {
    fn drop(&mut self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let queued = {
            let mut state = lock(&shared.state);
            state.closed = true;
            std::mem::take(&mut state.queue)
        };
        shared.job_ready.notify_all();
        let running = self
            .handed_out
            .saturating_sub(queued.len() + lock(&shared.finished).len());
        if running > 0 {
            log::debug!("event base dropped with {running} helper jobs running: detached");
        }
    }
}

/// Starts a helper thread with every signal blocked: it inherits the mask of the thread that
/// creates it, so the mask is filled around the spawn.
fn spawn_helper(shared: Arc<Shared>) -> io::Result<()> {
    let old = sys::thread_sigmask(libc::SIG_SETMASK, &SigSet::full())?;
    let spawned = std::thread::Builder::new()
        .name("aioloop-helper".into())
        .spawn(move || helper(shared));
    if let Err(e) = sys::thread_sigmask(libc::SIG_SETMASK, &old) {
        log::error!("cannot restore the loop thread's signal mask: {e}");
    }
    spawned.map(drop)
}

impl<S> EventBase<S> {
    /// Runs `job` on a helper thread (or, with helpers disabled, right here on the loop
    /// thread) and `complete` on the loop thread with its output.
    pub(crate) fn run_on_helper(&mut self, job: Job, complete: Complete<S>) -> io::Result<JobId> {
        self.submit_job(job, Waiter::Callback(complete))
    }

    /// Runs an AIO request's `job` on a helper thread; its output (an `i64` result) completes
    /// the request whose `aio_data` is `data`.
    pub(crate) fn run_aio_on_helper(&mut self, job: Job, data: u64) -> io::Result<JobId> {
        self.submit_job(job, Waiter::Aio(data))
    }

    fn submit_job(&mut self, job: Job, waiter: Waiter<S>) -> io::Result<JobId> {
        self.ensure_pool()?;
        let pool = &mut self.pool;
        let id = pool.register(waiter);
        let queued = Queued {
            id,
            job,
            queued_at: Instant::now(),
        };
        if !pool.enabled() {
            let output = (queued.job)();
            pool.owed.push_back(Finished {
                id,
                output: Some(output),
                queued_for: Duration::ZERO,
                ran_for: queued.queued_at.elapsed(),
                on_helper: true,
            });
            return Ok(id);
        }
        if let Err(e) = pool.dispatch(queued) {
            pool.table.remove(id.key);
            return Err(crate::error::context(e, "cannot start a helper thread"));
        }
        Ok(id)
    }

    /// Calls `complete` with `output` later in this iteration, like a finished job's: for work
    /// the loop thread did itself without blocking (an answer from the kernel's caches).
    pub(crate) fn complete_soon(&mut self, output: Output, complete: Complete<S>) {
        let pool = &mut self.pool;
        let id = pool.register(Waiter::Callback(complete));
        pool.owed.push_back(Finished {
            id,
            output: Some(output),
            queued_for: Duration::ZERO,
            ran_for: Duration::ZERO,
            on_helper: false,
        });
    }

    /// Creates the shared state and registers its eventfd, on first use.
    fn ensure_pool(&mut self) -> io::Result<()> {
        if self.pool.shared.is_some() || !self.pool.enabled() {
            return Ok(());
        }
        let eventfd = sys::eventfd()
            .map_err(|e| crate::error::context(e, "cannot create the helper pool's eventfd"))?;
        self.poll.registry().register(
            &mut SourceFd(&eventfd.as_raw_fd()),
            Source::Helpers.token(),
            Interest::READABLE,
        )?;
        self.pool.shared = Some(Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                idle: 0,
                closed: false,
            }),
            job_ready: Condvar::new(),
            finished: Mutex::new(Vec::new()),
            eventfd,
        }));
        Ok(())
    }

    pub(crate) fn harvest_helpers(&mut self) {
        self.pool.harvest();
    }

    /// Runs the callbacks of finished jobs; stops early on `exit`.
    pub(crate) fn run_helper_completions(&mut self, state: &mut S) {
        while let Some(finished) = self.pool.owed.pop_front() {
            let id = finished.id;
            let known = self
                .pool
                .table
                .get(id.key)
                .is_some_and(|(gen, _)| *gen == id.gen);
            if !known {
                continue;
            }
            let (_, waiter) = self.pool.table.remove(id.key);
            if finished.on_helper {
                self.metrics.helper_jobs += 1;
                self.metrics.helper_queue_time += finished.queued_for;
                self.metrics.helper_run_time += finished.ran_for;
                log::debug!(
                    "helper job {id:?} done: queued {:?}, ran {:?}",
                    finished.queued_for,
                    finished.ran_for
                );
            }
            let output = finished.output;
            match waiter {
                Waiter::Aio(data) => self.aio_done_on_helper(data, output),
                Waiter::Callback(complete) => {
                    self.guarded(|base| complete(base, state, output), |_| {})
                }
            }
            if self.exit_requested {
                return;
            }
        }
    }
}
