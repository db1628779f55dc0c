//! `AioFile`: a file prepared for kernel AIO, with its O_DIRECT alignment looked up once.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::sys;

/// Alignment assumed when the file system does not report one (tmpfs reports nothing).
const FALLBACK_ALIGN: usize = 4096;

/// A file for the loop's AIO operations ([`EventBase::read_at`](crate::EventBase::read_at)...).
///
/// It records once whether the file was opened with `O_DIRECT` and, if so, the alignment
/// `statx(STATX_DIOALIGN)` reports for buffers and for offsets and lengths (4096 when
/// unreported), so each request is checked **before** submission instead of failing later with
/// a bare `EINVAL`.
///
/// Clones share the file. Every request holds a clone until its completion, so dropping your
/// `AioFile` with requests still queued or in flight is safe: the fd is closed after the last
/// one completes, and its number cannot be reused under a request not yet submitted.
///
/// Reads and writes never block the loop: a buffered read is copied from the page cache on
/// the loop thread (`preadv2` with `RWF_NOWAIT`), other requests go to kernel AIO with
/// `RWF_NOWAIT`, and what cannot be done without blocking (a page-cache miss, a file system
/// without `RWF_NOWAIT` support such as FUSE or NFS) runs on a helper thread instead (see
/// [the AIO guide](crate::guide::aio)). The file remembers which of its directions need a helper.
#[derive(Clone)]
pub struct AioFile {
    inner: Arc<Inner>,
}

struct Inner {
    file: File,
    /// `(memory, offset and length)` alignment if the file is O_DIRECT.
    direct: Option<(usize, usize)>,
    /// `HELPER_READS` / `HELPER_WRITES`: that direction skips kernel AIO.
    route: AtomicU8,
    /// Not on a file system known to need helpers (network, FUSE): local, as far as we know.
    local: bool,
    /// Opened with `O_APPEND`: every write goes to the end of the file.
    append: bool,
    /// The device of its file system: the class its helper jobs compete in.
    device: u64,
    /// The path it was opened at, when the crate opened it: for the debug log.
    path: Option<std::path::PathBuf>,
}

/// Reads of this file go straight to a helper thread.
pub(crate) const HELPER_READS: u8 = 1;
/// Writes of this file go straight to a helper thread.
pub(crate) const HELPER_WRITES: u8 = 2;

impl AioFile {
    /// Prepares an open file (any access mode; `O_DIRECT` or not): a few cheap syscalls
    /// (`fcntl`, `fstatfs`, and `statx` for `O_DIRECT`), which only a network or FUSE file
    /// system could make wait, for its server.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// Only if `fcntl(F_GETFL)` fails on the file.
    pub fn new(file: File) -> io::Result<AioFile> {
        let flags = sys::file_status_flags(file.as_fd())?;
        let local = !sys::fs_lacks_nowait(file.as_fd());
        let mut aio_file = AioFile::known(file, flags & libc::O_DIRECT != 0, local);
        Arc::get_mut(&mut aio_file.inner).expect("just made").append = flags & libc::O_APPEND != 0;
        Ok(aio_file)
    }

    /// An `AioFile` for a file whose `O_DIRECT` flag and locality the caller knows (it just
    /// opened it, on a file system it checked): no `fcntl`, no `fstatfs`.
    pub(crate) fn known(file: File, direct: bool, local: bool) -> AioFile {
        let fd = file.as_raw_fd();
        let device = sys::device_of(file.as_fd());
        let direct = direct.then(|| dio_alignment(&file));
        match direct {
            Some((mem, off)) => log::debug!(
                "fd {fd}: O_DIRECT, buffers aligned to {mem}, offsets and lengths to {off}"
            ),
            None => log::debug!("fd {fd}: buffered (no O_DIRECT)"),
        }
        let route = if !local {
            log::debug!("fd {fd}: its file system does not support RWF_NOWAIT: helper threads");
            HELPER_READS | HELPER_WRITES
        } else {
            0
        };
        AioFile {
            inner: Arc::new(Inner {
                file,
                direct,
                route: AtomicU8::new(route),
                local,
                append: false,
                device,
                path: None,
            }),
        }
    }

    /// Opens `path` read-only, with `O_DIRECT` if `direct`.
    ///
    /// This `open` runs on the calling thread and blocks it as long as the file system takes
    /// (a network or FUSE file system, or a disk spinning up, can take seconds).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// The `open` error (with the path in the message), e.g. `EINVAL` for `O_DIRECT` on a file
    /// system that does not support it.
    pub fn open(path: impl AsRef<Path>, direct: bool) -> io::Result<AioFile> {
        let mut options = OpenOptions::new();
        options.read(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let path = path.as_ref();
        let file = options.open(path).map_err(|e| {
            crate::error::context(e, format!("cannot open {} for AIO", path.display()))
        })?;
        Ok(AioFile::new(file)?.opened_at(path))
    }

    /// Remembers the path the crate opened the file at, for the debug log.
    pub(crate) fn opened_at(mut self, path: &Path) -> AioFile {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.path = Some(path.to_path_buf());
        }
        self
    }

    /// The file for the debug log: its fd, and its path if the crate opened it.
    pub(crate) fn describe(&self) -> String {
        let fd = self.inner.file.as_raw_fd();
        match &self.inner.path {
            Some(path) => format!("{} (fd {fd})", path.display()),
            None => format!("fd {fd}"),
        }
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.inner.file
    }

    /// Whether the file is `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.inner.direct.is_some()
    }

    /// For an `O_DIRECT` file: the alignment required of buffer addresses, and of file offsets
    /// and lengths.
    pub fn alignment(&self) -> Option<(usize, usize)> {
        self.inner.direct
    }

    /// Whether every write goes to the end of the file (`O_APPEND`).
    pub(crate) fn is_append(&self) -> bool {
        self.inner.append
    }

    /// The device of the file's file system.
    pub(crate) fn device(&self) -> u64 {
        self.inner.device
    }

    /// Whether this is the only clone left: dropping it closes the file.
    pub(crate) fn is_last_clone(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    /// The identity of the file (shared by its clones), for the per-file request order.
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Whether the file is on a local file system (not one known to ask a server: FUSE, NFS...).
    pub(crate) fn is_local(&self) -> bool {
        self.inner.local
    }

    /// Whether requests of `direction` (`HELPER_READS` or `HELPER_WRITES`) skip kernel AIO.
    pub(crate) fn needs_helper(&self, direction: u8) -> bool {
        self.inner.route.load(Ordering::Relaxed) & direction != 0
    }

    /// Sends later requests of `direction` straight to helpers.
    pub(crate) fn use_helper(&self, direction: u8) {
        let was = self.inner.route.fetch_or(direction, Ordering::Relaxed);
        if was & direction == 0 {
            log::debug!(
                "fd {}: kernel AIO cannot run its {} without blocking: helper threads from now on",
                self.as_raw_fd(),
                if direction == HELPER_READS {
                    "reads"
                } else {
                    "writes"
                }
            );
        }
    }

    /// Refuses an `O_DIRECT` transfer the kernel would reject with `EINVAL` after submission.
    pub(crate) fn check_transfer(&self, addr: usize, len: usize, offset: u64) -> io::Result<()> {
        let Some((mem, off)) = self.inner.direct else {
            return Ok(());
        };
        if addr % mem == 0 && len % off == 0 && offset % off as u64 == 0 {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "O_DIRECT I/O on fd {} needs buffers aligned to {mem} bytes and offsets and \
                 lengths multiple of {off} bytes; got buffer address {addr:#x}, offset {offset}, \
                 length {len} (use AlignedBuf::new(len, {mem}))",
                self.as_raw_fd()
            ),
        ))
    }
}

/// The O_DIRECT alignment `statx` reports, or the fallback when it reports none (or nonsense).
fn dio_alignment(file: &File) -> (usize, usize) {
    match sys::dio_alignment(file.as_fd()) {
        Some((mem, off)) if mem.is_power_of_two() && off.is_power_of_two() => (mem, off),
        _ => {
            log::debug!(
                "fd {}: no O_DIRECT alignment reported; assuming {FALLBACK_ALIGN}",
                file.as_raw_fd()
            );
            (FALLBACK_ALIGN, FALLBACK_ALIGN)
        }
    }
}

impl AsRawFd for AioFile {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.file.as_raw_fd()
    }
}

impl fmt::Debug for AioFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AioFile")
            .field("fd", &self.as_raw_fd())
            .field("direct", &self.inner.direct)
            .finish()
    }
}
