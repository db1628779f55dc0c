//! The kernel AIO context of a base: `io_setup`, its completion eventfd and ring, and reaping.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::Interest;

use crate::base::EventBase;
use crate::source::Source;
use crate::sys::aio::{self as abi, AioEvent, ContextId};
use crate::sys::aio_ring::{self, Ring};

/// An AIO context: destroyed (waiting for everything in flight) when dropped.
pub(super) struct Context {
    pub(super) id: ContextId,
    ring: Option<Ring>,
    pub(super) eventfd: OwnedFd,
}

impl Context {
    /// Moves every completion the kernel has posted into `out`; returns how many.
    pub(super) fn reap(&self, out: &mut impl Extend<AioEvent>) -> usize {
        match &self.ring {
            Some(ring) => ring.reap(out),
            None => aio_ring::reap_with_syscall(self.id, out),
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Err(e) = abi::io_destroy(self.id) {
            log::error!("io_destroy failed: {e}");
        }
    }
}

fn setup_error(err: io::Error, nr: u32) -> io::Error {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_or_else(|_| "?".to_string(), |s| s.trim().to_string())
    };
    let what = match err.raw_os_error() {
        Some(libc::EAGAIN) => format!(
            "cannot create the kernel AIO context: /proc/sys/fs/aio-max-nr is {} and aio-nr is \
             already {}, so the {nr} events requested do not fit; raise the limit (sysctl -w \
             fs.aio-max-nr=N) or ask for fewer with AioOptions::ring_size",
            read("/proc/sys/fs/aio-max-nr"),
            read("/proc/sys/fs/aio-nr"),
        ),
        Some(libc::ENOSYS) | Some(libc::EPERM) => {
            "kernel AIO unavailable (kernel built without CONFIG_AIO, or io_setup blocked by \
             seccomp)"
                .to_string()
        }
        _ => format!("io_setup({nr}) failed"),
    };
    crate::error::context(err, what)
}

impl<S> EventBase<S> {
    pub(super) fn ensure_aio_context(&mut self) -> io::Result<()> {
        if self.aio.context.is_some() {
            return Ok(());
        }
        let options = self.aio.options;
        let forced = std::env::var_os("AIOLOOP_FORCE_IO_GETEVENTS").is_some_and(|v| v == "1");
        let nr = options.ring_size.unwrap_or(options.max_in_flight);
        let eventfd = crate::sys::eventfd()
            .map_err(|e| crate::error::context(e, "cannot create the AIO completion eventfd"))?;
        let id = abi::io_setup(nr).map_err(|e| setup_error(e, nr))?;
        // SAFETY: `id` comes from io_setup and the Ring is dropped with the Context, before
        // io_destroy unmaps it (`Context::drop` runs before its fields drop).
        let use_ring = !(options.force_io_getevents || forced);
        #[allow(unsafe_code)]
        let ring = use_ring.then(|| unsafe { Ring::new(id) }).flatten();
        let context = Context { id, ring, eventfd };
        let raw = context.eventfd.as_raw_fd();
        self.poll.registry().register(
            &mut SourceFd(&raw),
            Source::Aio.token(),
            Interest::READABLE,
        )?;
        log::debug!(
            "AIO context created: {nr} events, reaping {}",
            if context.ring.is_some() {
                "from the user-space ring"
            } else {
                "with io_getevents"
            }
        );
        self.aio.context = Some(context);
        Ok(())
    }
}
