//! Cross-thread wake-ups: other threads post closures that run on the loop thread.
//!
//! All [`Remote`] handles of a base share a queue and one `mio::Waker` (an eventfd). A post
//! wakes the loop only when it finds the queue empty, so a burst of posts costs one wake-up.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use mio::{Registry, Waker};

use crate::base::EventBase;
use crate::source::Source;

type Post<S> = Box<dyn FnOnce(&mut EventBase<S>, &mut S) + Send>;

pub(crate) struct Shared<S> {
    /// `None` once the base is dropped.
    queue: Mutex<Option<VecDeque<Post<S>>>>,
    waker: Waker,
}

impl<S> Shared<S> {
    pub(crate) fn new(registry: &Registry) -> io::Result<Arc<Self>> {
        let waker = Waker::new(registry, Source::Posts.token()).map_err(|e| {
            crate::error::context(e, "cannot create the cross-thread waker eventfd")
        })?;
        Ok(Arc::new(Shared {
            queue: Mutex::new(Some(VecDeque::new())),
            waker,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Option<VecDeque<Post<S>>>> {
        // Only push and pop run under the lock, never user code, so poisoning cannot leave the
        // queue half-changed.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pop(&self) -> Option<Post<S>> {
        self.lock().as_mut()?.pop_front()
    }

    fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, VecDeque::len)
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the event loop: {e}");
        }
    }

    /// Called when the base is dropped: later posts fail, queued ones are dropped.
    pub(crate) fn close(&self) {
        let queued = self.lock().take();
        drop(queued);
    }
}

/// A `Send + Clone` handle that runs closures on a base's thread; see [`EventBase::remote`].
///
/// ```
/// use aioloop::EventBase;
///
/// let mut base = EventBase::<u64>::new()?;
/// let remote = base.remote()?;
/// let worker = std::thread::spawn(move || {
///     remote.post(|base, total| {
///         *total += 42;
///         base.exit();
///     })
/// });
/// let mut total = 0;
/// base.run(&mut total)?;
/// worker.join().unwrap()?;
/// assert_eq!(total, 42);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Remote<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Remote<S> {
    fn clone(&self) -> Self {
        Remote {
            shared: self.shared.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Remote<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("queued", &self.shared.len())
            .finish()
    }
}

impl<S> Remote<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        Remote { shared }
    }

    /// Queues `f` to run on the loop thread with the base and the state, and wakes the loop.
    ///
    /// Posts run in the order they were queued, during the loop's next iteration. Queued
    /// posts keep a base with [`set_exit_when_empty`](EventBase::set_exit_when_empty) alive
    /// until they have run. Posting to a base that has been dropped fails (see Errors); posts
    /// still queued when the base is dropped are dropped with it, not run.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `BrokenPipe` once the base has been dropped (the closure is dropped, not run).
    pub fn post<F>(&self, f: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S) + Send + 'static,
    {
        let was_empty = {
            let mut queue = self.shared.lock();
            let Some(queue) = queue.as_mut() else {
                return Err(gone());
            };
            queue.push_back(Box::new(f));
            queue.len() == 1
        };
        if was_empty {
            self.shared.wake();
        }
        Ok(())
    }

    /// Stops the loop from another thread: [`EventBase::exit`] as a post.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `BrokenPipe` once the base has been dropped.
    pub fn exit(&self) -> io::Result<()> {
        self.post(|base, _| base.exit())
    }

    /// Wakes the loop without running anything (it polls again and re-checks its timers).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// `BrokenPipe` once the base has been dropped.
    pub fn wake(&self) -> io::Result<()> {
        if self.shared.lock().is_none() {
            return Err(gone());
        }
        self.shared.wake();
        Ok(())
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the event base was dropped")
}

impl<S> EventBase<S> {
    /// The waker fired: the queued posts are owed.
    pub(crate) fn harvest_posts(&mut self) {
        self.posts_woken = true;
    }

    pub(crate) fn owes_posts(&self) -> bool {
        self.posts_woken
    }

    pub(crate) fn has_queued_posts(&self) -> bool {
        self.remote.as_ref().is_some_and(|s| s.len() > 0)
    }

    /// Runs the posts queued now. Posts queued while they run stay owed for the next
    /// iteration, which polls without blocking first, so a flood of posts cannot starve fds
    /// and timers.
    pub(crate) fn run_posts(&mut self, state: &mut S) {
        let Some(shared) = self.remote.clone() else {
            self.posts_woken = false;
            return;
        };
        for _ in 0..shared.len() {
            let Some(post) = shared.pop() else {
                break;
            };
            self.guarded(|base| post(base, state), |_| {});
            if self.exit_requested {
                break;
            }
        }
        self.posts_woken = shared.len() > 0;
    }
}
