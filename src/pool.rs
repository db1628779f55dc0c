//! The helper pool: an executor that runs blocking jobs on a few threads and calls back on the
//! loop thread. It knows jobs, classes and callbacks; nothing of files or AIO.
//!
//! Threads are plain std threads, started as jobs need them (up to
//! [`AioOptions::helper_threads`](crate::AioOptions::helper_threads), 4 by default) with every
//! signal blocked, so that no process-directed signal is ever delivered to them.
//!
//! **Scheduling is done on the loop side.** A job is handed to the helpers only when a helper
//! is free to take it at once; until then it waits in the loop's FIFO, where a cancel is a
//! plain removal. Each job has a [`Class`] (the device of the file it touches, say), and the
//! jobs of one class hold at most `per_class` helpers at once: a file system that hangs keeps
//! that many helpers, never all of them, and the next jobs of other classes go past its
//! waiting ones.
//!
//! **A job is either refused or run, never both.** A job is handed over only after a thread
//! to run it exists; if no thread can be started and none runs, the job is refused (at
//! submission, the caller gets the error; later, its callback gets [`Outcome::Refused`]) and
//! never runs. If threads already run, it waits for one of them.
//!
//! A finished job goes into a shared list and, if the list was empty, writes the pool's
//! eventfd, which the loop harvests as [`Source::Helpers`](crate::source::Source). Dropping the
//! base never waits for a helper: one stuck in a hung FUSE read keeps running, detached, and
//! its output is dropped whenever it finishes.

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
/// The loop-side end of a job.
pub(crate) type Complete<S> = Box<dyn FnOnce(&mut EventBase<S>, &mut S, Outcome)>;
/// What competes for helpers together: jobs of one class hold at most `per_class` helpers.
pub(crate) type Class = u64;

/// How a job ended.
pub(crate) enum Outcome {
    /// It ran and returned this.
    Done(Output),
    /// It panicked (on a helper: the panic was caught there).
    Panicked,
    /// Cancelled before it started: it never ran.
    Cancelled,
    /// No thread could be started to run it: it never ran.
    Refused(io::Error),
}

/// Identifies a job on the helper threads ([`EventBase::run_blocking`], [`EventBase::stat`]
/// and the other file-system operations), for [`EventBase::cancel_job`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobId {
    key: u32,
    gen: u32,
}

#[cfg(test)]
impl JobId {
    pub(crate) fn for_test(key: u32) -> JobId {
        JobId { key, gen: 0 }
    }
}

struct Queued {
    id: JobId,
    class: Class,
    job: Job,
    queued_at: Instant,
}

/// Where a job of the table is.
enum Stage {
    /// Submitted, but held back by its submitter until [`Pool::release`].
    Parked(Queued),
    /// In the loop's FIFO, waiting for a free helper.
    Waiting,
    /// Handed to the helpers: running, or about to be.
    HandedOut,
    /// Finished (or cancelled, or answered on the loop thread); its callback has not run.
    Finished,
}

struct Entry<S> {
    gen: u32,
    class: Class,
    stage: Stage,
    complete: Complete<S>,
}

struct Finished {
    id: JobId,
    outcome: Outcome,
    queued_for: Duration,
    ran_for: Duration,
    /// Run by a helper (counted in the helper metrics and in the hand-out counts).
    on_helper: bool,
}

/// What the loop and its helpers share.
struct Shared {
    state: Mutex<State>,
    job_ready: Condvar,
    finished: Mutex<Vec<Finished>>,
    eventfd: OwnedFd,
    /// `sys::fork_generation()` of the process that made it.
    fork_generation: u64,
}

struct State {
    /// Jobs handed over: never more than the helpers that are free, so none waits here long.
    queue: VecDeque<Queued>,
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
            state = self
                .job_ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
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

/// Runs `job`, catching a panic.
fn run(job: Job) -> Outcome {
    match panic::catch_unwind(AssertUnwindSafe(job)) {
        Ok(output) => Outcome::Done(output),
        Err(_) => {
            log::error!("a helper job panicked");
            Outcome::Panicked
        }
    }
}

/// A helper thread: runs jobs until the pool is closed.
fn helper(shared: Arc<Shared>) {
    while let Some(Queued {
        id, job, queued_at, ..
    }) = shared.next_job()
    {
        let started = Instant::now();
        let outcome = run(job);
        shared.finish(Finished {
            id,
            outcome,
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
    /// Helpers the jobs of one class may hold at once (at least 1).
    pub(crate) per_class: usize,
}

/// The helper pool of one base.
pub(crate) struct Pool<S> {
    shared: Option<Arc<Shared>>,
    /// Threads started (they live until the pool is dropped).
    threads: usize,
    limits: PoolLimits,
    table: Slab<Entry<S>>,
    /// Jobs waiting for a free helper, in submission order.
    waiting: VecDeque<Queued>,
    /// Jobs handed to the helpers and not harvested yet.
    handed_out: usize,
    /// Of those, how many per class (few classes are ever busy at once).
    busy: Vec<(Class, usize)>,
    /// Finished jobs whose callbacks have not run.
    owed: VecDeque<Finished>,
    next_gen: u32,
    /// Whether the failure to start a thread was logged already.
    spawn_failure_logged: bool,
}

impl<S> Pool<S> {
    pub(crate) fn new() -> Self {
        Pool {
            shared: None,
            threads: 0,
            limits: PoolLimits {
                threads: 4,
                per_class: 3,
            },
            table: Slab::new(),
            waiting: VecDeque::new(),
            handed_out: 0,
            busy: Vec::new(),
            owed: VecDeque::new(),
            next_gen: 0,
            spawn_failure_logged: false,
        }
    }

    pub(crate) fn set_limits(&mut self, limits: PoolLimits) {
        self.limits = PoolLimits {
            threads: limits.threads,
            per_class: limits.per_class.max(1),
        };
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

    /// Enters a job in the table under a fresh id.
    fn register(&mut self, class: Class, stage: Stage, complete: Complete<S>) -> JobId {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        let key = self.table.insert(Entry {
            gen,
            class,
            stage,
            complete,
        });
        JobId {
            key: key as u32,
            gen,
        }
    }

    fn entry(&mut self, id: JobId) -> Option<&mut Entry<S>> {
        (self.table.get_mut(id.key as usize)).filter(|e| e.gen == id.gen)
    }

    fn busy(&mut self, class: Class) -> &mut usize {
        let at = match self.busy.iter().position(|&(c, _)| c == class) {
            Some(at) => at,
            None => {
                self.busy.push((class, 0));
                self.busy.len() - 1
            }
        };
        &mut self.busy[at].1
    }

    fn busy_of(&self, class: Class) -> usize {
        (self.busy.iter())
            .find(|&&(c, _)| c == class)
            .map_or(0, |&(_, n)| n)
    }

    /// Hands waiting jobs to free helpers, in order, skipping those whose class holds its
    /// share already; starts threads as needed, up to the limit.
    fn fill(&mut self) {
        let mut at = 0;
        while at < self.waiting.len() && self.handed_out < self.limits.threads {
            if self.busy_of(self.waiting[at].class) >= self.limits.per_class {
                at += 1;
                continue;
            }
            if self.handed_out >= self.threads {
                if let Err(e) = self.spawn() {
                    if self.threads > 0 {
                        break; // the running threads will take it
                    }
                    // No thread runs, none can start: the job would never run. Refuse it.
                    let queued = self.waiting.remove(at).expect("index checked");
                    self.finished_unrun(queued, Outcome::Refused(e));
                    continue;
                }
            }
            let queued = self.waiting.remove(at).expect("index checked");
            self.hand_out(queued);
        }
    }

    fn hand_out(&mut self, queued: Queued) {
        let id = queued.id;
        *self.busy(queued.class) += 1;
        self.handed_out += 1;
        if let Some(entry) = self.entry(id) {
            entry.stage = Stage::HandedOut;
        }
        let shared = self.shared.as_ref().expect("a thread runs");
        lock(&shared.state).queue.push_back(queued);
        shared.job_ready.notify_one();
    }

    /// Starts one more helper thread.
    fn spawn(&mut self) -> io::Result<()> {
        let shared = self.shared.clone().expect("created with the first job");
        match spawn_helper(shared) {
            Ok(()) => {
                self.threads += 1;
                self.spawn_failure_logged = false;
                Ok(())
            }
            Err(e) => {
                if !self.spawn_failure_logged {
                    log::warn!(
                        "cannot start a helper thread ({e}); {} running take the jobs",
                        self.threads
                    );
                    self.spawn_failure_logged = true;
                }
                Err(e)
            }
        }
    }

    /// A job that will not run: its callback is owed with `outcome`.
    fn finished_unrun(&mut self, queued: Queued, outcome: Outcome) {
        if let Some(entry) = self.entry(queued.id) {
            entry.stage = Stage::Finished;
        }
        self.owed.push_back(Finished {
            id: queued.id,
            outcome,
            queued_for: queued.queued_at.elapsed(),
            ran_for: Duration::ZERO,
            on_helper: false,
        });
    }

    /// Moves finished jobs into `owed`, and waiting jobs onto the freed helpers.
    fn harvest(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        sys::eventfd_take(shared.eventfd.as_fd());
        let finished = std::mem::take(&mut *lock(&shared.finished));
        for done in finished {
            self.handed_out -= 1;
            if let Some(class) = self.entry(done.id).map(|e| e.class) {
                *self.busy(class) -= 1;
            }
            if let Some(entry) = self.entry(done.id) {
                entry.stage = Stage::Finished;
            }
            self.owed.push_back(done);
        }
        self.busy.retain(|&(_, n)| n > 0);
        self.fill();
    }

    /// Takes a job that has not started out of the pool: it never runs, and its callback gets
    /// [`Outcome::Cancelled`]. `false` if it runs, has finished, or is unknown.
    pub(crate) fn cancel(&mut self, id: JobId) -> bool {
        let Some(entry) = self.entry(id) else {
            return false;
        };
        let class = entry.class;
        let taken = match entry.stage {
            Stage::Parked(_) => match std::mem::replace(&mut entry.stage, Stage::Waiting) {
                Stage::Parked(queued) => Some(queued),
                _ => unreachable!("matched above"),
            },
            Stage::Waiting => {
                let at = self.waiting.iter().position(|q| q.id == id);
                at.and_then(|at| self.waiting.remove(at))
            }
            Stage::HandedOut => {
                let taken = self.take_handed_out(id);
                if taken.is_some() {
                    self.handed_out -= 1;
                    *self.busy(class) -= 1;
                }
                taken
            }
            Stage::Finished => None,
        };
        let Some(queued) = taken else {
            return false;
        };
        self.finished_unrun(queued, Outcome::Cancelled);
        self.fill();
        true
    }

    /// Takes a handed-out job back if no helper has picked it up yet.
    fn take_handed_out(&mut self, id: JobId) -> Option<Queued> {
        let shared = self.shared.as_ref()?;
        let mut state = lock(&shared.state);
        let at = state.queue.iter().position(|q| q.id == id)?;
        state.queue.remove(at)
    }
}

impl<S> Drop for Pool<S> {
    fn drop(&mut self) {
        let Some(shared) = &self.shared else {
            return;
        };
        // In a forked child, another thread of the parent may have held these locks at the
        // fork, and no helper runs here: touch nothing.
        if sys::fork_generation() != self.fork_generation() {
            return;
        }
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

impl<S> Pool<S> {
    fn fork_generation(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.fork_generation)
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
    /// thread: a panic then unwinds from here, and nothing stays behind) and `complete` on the
    /// loop thread with its outcome.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// The job is refused, and never runs, when no helper runs and none can be started (or
    /// the helpers' eventfd cannot be made), or in a process forked from the base's.
    pub(crate) fn submit_job(
        &mut self,
        class: Class,
        job: Job,
        complete: Complete<S>,
    ) -> io::Result<JobId> {
        let id = self.park_job(class, job, complete)?;
        if let Err(e) = self.start_job(id) {
            self.pool.table.remove(id.key as usize);
            return Err(crate::error::context(e, "cannot start a helper thread"));
        }
        Ok(id)
    }

    /// Enters `job` without starting it: it waits for [`release_job`](Self::release_job),
    /// and can be cancelled meanwhile.
    pub(crate) fn park_job(
        &mut self,
        class: Class,
        job: Job,
        complete: Complete<S>,
    ) -> io::Result<JobId> {
        self.check_process()?;
        self.ensure_pool()?;
        let pool = &mut self.pool;
        // The id `register` is about to give.
        let id = JobId {
            key: pool.table.vacant_key() as u32,
            gen: pool.next_gen,
        };
        let queued = Queued {
            id,
            class,
            job,
            queued_at: Instant::now(),
        };
        let registered = pool.register(class, Stage::Parked(queued), complete);
        debug_assert_eq!(registered, id);
        Ok(id)
    }

    /// Starts a parked job (nothing if it was cancelled meanwhile). With helpers off it runs
    /// here. A job refused because no thread runs and none can start never runs: its
    /// callback gets [`Outcome::Refused`].
    pub(crate) fn release_job(&mut self, id: JobId) {
        if let Err(e) = self.start_job(id) {
            let pool = &mut self.pool;
            let Stage::Parked(queued) = std::mem::replace(
                &mut pool.entry(id).expect("refused jobs stay").stage,
                Stage::Finished,
            ) else {
                unreachable!("a refused job stays parked")
            };
            pool.finished_unrun(queued, Outcome::Refused(e));
        }
    }

    /// Starts a parked job, as [`release_job`](Self::release_job); a job refused stays parked
    /// and the error is returned.
    fn start_job(&mut self, id: JobId) -> io::Result<()> {
        let pool = &mut self.pool;
        let Some(entry) = pool.entry(id) else {
            return Ok(());
        };
        let Stage::Parked(_) = entry.stage else {
            return Ok(());
        };
        if pool.enabled() && pool.threads == 0 {
            // Refused if no thread can run it.
            pool.spawn()?;
        }
        let entry = pool.entry(id).expect("checked above");
        let Stage::Parked(queued) = std::mem::replace(&mut entry.stage, Stage::Waiting) else {
            unreachable!("checked above")
        };
        if !pool.enabled() {
            let output = match panic::catch_unwind(AssertUnwindSafe(queued.job)) {
                Ok(output) => output,
                Err(panic) => {
                    // It unwinds from here, as documented; no entry may outlive it.
                    pool.table.remove(id.key as usize);
                    panic::resume_unwind(panic)
                }
            };
            if let Some(entry) = pool.entry(id) {
                entry.stage = Stage::Finished;
            }
            pool.owed.push_back(Finished {
                id,
                outcome: Outcome::Done(output),
                queued_for: Duration::ZERO,
                ran_for: queued.queued_at.elapsed(),
                on_helper: true,
            });
            return Ok(());
        }
        pool.waiting.push_back(queued);
        pool.fill();
        Ok(())
    }

    /// Calls `complete` with `output` later in this iteration, like a finished job's: for work
    /// the loop thread did itself without blocking (an answer from the kernel's caches).
    pub(crate) fn complete_soon(&mut self, output: Output, complete: Complete<S>) -> JobId {
        let pool = &mut self.pool;
        let id = pool.register(0, Stage::Finished, complete);
        pool.owed.push_back(Finished {
            id,
            outcome: Outcome::Done(output),
            queued_for: Duration::ZERO,
            ran_for: Duration::ZERO,
            on_helper: false,
        });
        id
    }

    /// Runs the blocking function `op` on a helper thread, and `callback` with its result on
    /// the loop thread: for any work that would stall the loop (a DNS lookup, compressing a
    /// file, a library call that blocks), like libuv's `uv_queue_work`. Returns a [`JobId`]:
    /// [`cancel_job`](Self::cancel_job) cancels the job while no helper has started it.
    ///
    /// `op` shares the helpers with file operations: one that never returns keeps a helper
    /// forever (the base does not wait for it when dropped). `run_blocking` jobs hold at most
    /// [`helpers_per_device`](crate::AioOptions::helpers_per_device) helpers at once, so that
    /// file operations find one (with the default share, when there is more than one
    /// helper). A panic in `op` reaches `callback` as an error. With
    /// helpers off (`AioOptions::helper_threads(0)`), `op` runs on the loop thread, inside
    /// this call, and a panic in it unwinds from here, leaving nothing behind.
    ///
    /// ```
    /// use aioloop::EventBase;
    ///
    /// let mut base = EventBase::<u64>::new()?;
    /// base.run_blocking(|| Ok((1..=20u64).product::<u64>()), |_, out, result| {
    ///     *out = result.unwrap();
    /// })?;
    /// base.set_exit_when_empty(true);
    /// let mut out = 0;
    /// base.run(&mut out)?;
    /// assert_eq!(out, 2_432_902_008_176_640_000);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// Only if no helper runs and none can be started (`EAGAIN` at a thread limit, or `EMFILE`
    /// for the helpers' eventfd): then `op` never runs. While a helper runs, a job that cannot
    /// get a new one waits for it instead.
    pub fn run_blocking<T, Op, F>(&mut self, op: Op, callback: F) -> io::Result<JobId>
    where
        T: Send + 'static,
        Op: FnOnce() -> io::Result<T> + Send + 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
    {
        self.blocking_in(USER_JOBS, op, callback)
    }

    /// [`run_blocking`](Self::run_blocking) in the fairness class `class`.
    pub(crate) fn blocking_in<T, Op, F>(
        &mut self,
        class: Class,
        op: Op,
        callback: F,
    ) -> io::Result<JobId>
    where
        T: Send + 'static,
        Op: FnOnce() -> io::Result<T> + Send + 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
    {
        let job: Job = Box::new(move || Box::new(op()) as Output);
        self.submit_job(class, job, completion(callback))
    }

    /// Calls `callback` with `answer` later in this iteration, as if a helper had found it:
    /// for an operation the kernel's caches answered on the loop thread.
    pub(crate) fn answer_soon<T, F>(&mut self, answer: io::Result<T>, callback: F) -> JobId
    where
        T: Send + 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
    {
        self.metrics.fs_cached_ops += 1;
        self.complete_soon(Box::new(answer), completion(callback))
    }

    /// Cancels a job (a [`run_blocking`](Self::run_blocking) job, or a file-system operation
    /// such as [`stat`](Self::stat) or [`rename`](Self::rename)) that no helper has started:
    /// it never runs, and its callback gets an error whose `raw_os_error()` is
    /// `Some(libc::ECANCELED)`, in this or the next iteration. Returns `true` then.
    ///
    /// Returns `false` if the job is running (a thread cannot be stopped safely in the middle
    /// of a system call: it reports its real result), has finished, or is unknown. A job waits
    /// for a free helper, and for its file system's share of them (see
    /// [`AioOptions::helpers_per_device`](crate::AioOptions::helpers_per_device)), so a timer
    /// that cancels it bounds how long it may wait.
    pub fn cancel_job(&mut self, id: JobId) -> bool {
        self.pool.cancel(id)
    }

    /// Refuses work in a process forked from the base's: the pool's locks and threads belong
    /// to the parent.
    fn check_process(&self) -> io::Result<()> {
        match self.pool.shared.as_ref() {
            Some(shared) if shared.fork_generation != sys::fork_generation() => {
                Err(io::Error::other(
                    "this event base belongs to the parent process: create a new base in the \
                     forked child",
                ))
            }
            _ => Ok(()),
        }
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
                closed: false,
            }),
            job_ready: Condvar::new(),
            finished: Mutex::new(Vec::new()),
            eventfd,
            fork_generation: sys::fork_generation(),
        }));
        Ok(())
    }

    pub(crate) fn harvest_helpers(&mut self) {
        self.pool.harvest();
    }

    /// Runs the callbacks of finished jobs; stops early on `exit`. As for AIO completions, a
    /// pass runs those finished when it starts, and those its callbacks add only up to
    /// [`PASS_BUDGET`](crate::source::PASS_BUDGET) in all.
    pub(crate) fn run_helper_completions(&mut self, state: &mut S) {
        for _ in 0..self.pool.owed.len().max(crate::source::PASS_BUDGET) {
            let Some(finished) = self.pool.owed.pop_front() else {
                return;
            };
            let id = finished.id;
            if self.pool.entry(id).is_none() {
                continue;
            }
            let entry = self.pool.table.remove(id.key as usize);
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
            let (complete, outcome) = (entry.complete, finished.outcome);
            self.guarded(|base| complete(base, state, outcome), |_| {});
            if self.exit_requested {
                return;
            }
        }
    }
}

/// The class of [`run_blocking`](EventBase::run_blocking) jobs.
const USER_JOBS: Class = u64::MAX;

/// The loop-side end of a job whose output is an `io::Result<T>`: hands it to `callback`.
pub(crate) fn completion<S, T, F>(callback: F) -> Complete<S>
where
    T: Send + 'static,
    F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
{
    Box::new(move |base, state, outcome| callback(base, state, result_of(outcome)))
}

/// The result a job whose output is an `io::Result<T>` reports.
pub(crate) fn result_of<T: 'static>(outcome: Outcome) -> io::Result<T> {
    match outcome {
        Outcome::Done(output) => match output.downcast::<io::Result<T>>() {
            Ok(result) => *result,
            Err(_) => Err(io::Error::other("the helper job returned a foreign type")),
        },
        Outcome::Panicked => Err(io::Error::other("the helper job panicked")),
        Outcome::Cancelled => Err(io::Error::from_raw_os_error(libc::ECANCELED)),
        Outcome::Refused(e) => Err(crate::error::context(e, "cannot start a helper thread")),
    }
}
