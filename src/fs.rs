//! File-system operations on the helper threads: open, stat, directory listings, close,
//! `fallocate`, truncate, rename, unlink, mkdir. None has a non-blocking form in the kernel
//! (short of io_uring), and any of them can take seconds on a slow file system, so each runs
//! on a helper thread (see `pool.rs`) and calls back on the loop thread with its result, like
//! [`read_at`](EventBase::read_at). The blocking forms (`AioFile::open`, `std::fs`) stay
//! available, and block the calling thread.

use std::ffi::{CString, OsString};
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::aio::Access;
use crate::aio::AioFile;
use crate::base::EventBase;
use crate::pool::{Class, Complete, Job, JobId, Outcome, Output};
use crate::sys;

/// One entry of a directory listing ([`EventBase::read_dir`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirEntry {
    /// The entry's file name (not its path).
    pub name: OsString,
    /// Its type, from the directory itself where the file system records it (an `lstat`
    /// otherwise); `None` if even that failed (the entry vanished meanwhile).
    pub file_type: Option<FileType>,
}

/// A directory that opens can be confined to ([`EventBase::open_beneath`]): what a file
/// server needs so that no request path leaves the served tree.
///
/// It holds an `O_PATH` fd of the directory, so it keeps naming the same directory even if
/// the tree is renamed; clones share the fd.
#[derive(Clone, Debug)]
pub struct Dir {
    fd: Arc<OwnedFd>,
    path: Arc<Path>,
    /// On a local file system, where an open whose path is all cached cannot block.
    local: bool,
    /// The device of its file system: the class its opens compete in for helpers.
    device: u64,
}

impl Dir {
    /// Opens the directory `path` (a blocking call: make it at start-up).
    ///
    /// # Errors
    ///
    /// As `open(2)` reports it, with the path: `NotFound`, `PermissionDenied`, `ENOTDIR`.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Dir> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(path);
        let file = named(file, "open the directory", path)?;
        let local = !sys::fs_lacks_nowait(file.as_fd());
        let device = sys::device_of(file.as_fd());
        Ok(Dir {
            fd: Arc::new(OwnedFd::from(file)),
            path: path.into(),
            local,
            device,
        })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens `path` for reading beneath `dir`, refusing any way out; with `cached`, only if every
/// component of the path is in the kernel's dentry cache (`RESOLVE_CACHED`: `EAGAIN`
/// otherwise) and on `dir`'s own file system (`RESOLVE_NO_XDEV`: `EXDEV` at a mount point,
/// which may lead to a FUSE or network file system), so that the call cannot wait.
fn open_beneath(dir: &Dir, path: &Path, direct: bool, cached: bool) -> io::Result<AioFile> {
    let shown = || format!("{} in {}", path.display(), dir.path.display());
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: the path holds a NUL byte", shown()),
        )
    })?;
    // O_NONBLOCK: a FIFO or a device in the tree must not hold the open (reads of regular
    // files ignore it).
    let flags = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK;
    let flags = flags | if direct { libc::O_DIRECT } else { 0 };
    let no_wait = match cached {
        true => libc::RESOLVE_CACHED | libc::RESOLVE_NO_XDEV,
        false => 0,
    };
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | no_wait;
    let mut tries = 0;
    let opened = loop {
        match sys::openat2(dir.fd.as_fd(), &c_path, flags, resolve) {
            // Without RESOLVE_CACHED, EAGAIN means a rename somewhere on the system raced a
            // `..` step, and the kernel asks to try again (openat2(2)); it rarely repeats.
            Err(e) if !cached && e.raw_os_error() == Some(libc::EAGAIN) && tries < 1000 => {
                tries += 1
            }
            opened => break opened,
        }
    };
    let fd = opened.map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EXDEV) => ": the path leads out of the directory (EXDEV)",
            Some(libc::ELOOP) => {
                ": a symbolic link loop, too many links, or a /proc magic link (ELOOP)"
            }
            Some(libc::ENOSYS) => ": openat2 needs Linux 5.6 or newer (ENOSYS)",
            _ => "",
        };
        crate::error::context(e, format!("cannot open {}{why}", shown()))
    })?;
    match cached {
        // RESOLVE_NO_XDEV kept it on `dir`'s local file system.
        true => Ok(AioFile::known(File::from(fd), direct, true)),
        false => AioFile::new(File::from(fd)),
    }
}

impl<S> EventBase<S> {
    /// Opens `path`, relative to `dir`, for reading (with `O_DIRECT` if `direct`), on a helper
    /// thread, and calls `callback` with the [`AioFile`]. The path can never resolve outside
    /// `dir` (`openat2` with `RESOLVE_BENEATH`): `..` that climbs above it, an absolute path,
    /// or a symbolic link that points out of it fail with `EXDEV`; `/proc` magic links (such
    /// as `/proc/self/exe` or `fd/N`, which could lead anywhere) fail with `ELOOP`; symbolic
    /// links that stay inside work. A rename elsewhere on the system that races a `..` step
    /// makes the kernel answer `EAGAIN`; the open is then retried, never reported.
    ///
    /// ```
    /// use aioloop::{Dir, EventBase};
    ///
    /// let crate_dir = Dir::open(".")?;
    /// let mut base = EventBase::<Vec<bool>>::new()?;
    /// base.open_beneath(&crate_dir, "Cargo.toml", false, |_, ok, file| ok.push(file.is_ok()))?;
    /// base.open_beneath(&crate_dir, "../etc/passwd", false, |_, ok, file| ok.push(file.is_ok()))?;
    /// base.set_exit_when_empty(true);
    /// let mut ok = Vec::new();
    /// base.run(&mut ok)?;
    /// ok.sort();
    /// assert_eq!(ok, [false, true]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open); errors of the open itself reach the callback, with the path
    /// and the directory in the message.
    pub fn open_beneath<F>(
        &mut self,
        dir: &Dir,
        path: impl AsRef<Path>,
        direct: bool,
        callback: F,
    ) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<AioFile>) + 'static,
    {
        let (dir, path) = (dir.clone(), path.as_ref().to_path_buf());
        if dir.local && self.pool.enabled() {
            match open_beneath(&dir, &path, direct, true) {
                // Not all cached, a mount point on the way (or a way out, which the helper
                // reports), or RESOLVE_CACHED unknown to this kernel: ask a helper.
                Err(e)
                    if matches!(
                        crate::os_error(&e),
                        Some(libc::EAGAIN | libc::EXDEV | libc::EINVAL)
                    ) => {}
                answer => return Ok(self.answer_soon(answer, callback)),
            }
        }
        let class = dir.device;
        self.blocking_in(
            class,
            move || open_beneath(&dir, &path, direct, false),
            callback,
        )
    }

    /// Calls `callback` with `answer` later in this iteration, as if a helper had found it:
    /// for an operation the kernel's caches answered on the loop thread.
    fn answer_soon<T, F>(&mut self, answer: io::Result<T>, callback: F) -> JobId
    where
        T: Send + 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
    {
        self.metrics.fs_cached_ops += 1;
        self.complete_soon(Box::new(answer), completion(callback))
    }

    /// Runs the blocking function `op` on a helper thread, and `callback` with its result on
    /// the loop thread: for any work that would stall the loop (a DNS lookup, compressing a
    /// file, a library call that blocks), like libuv's `uv_queue_work`. The file operations
    /// of this module are built on it.
    ///
    /// `op` shares the helpers with file operations: one that never returns keeps a helper
    /// forever (the base does not wait for it when dropped). A panic in `op` reaches
    /// `callback` as an error. With helpers off (`AioOptions::helper_threads(0)`), `op` runs
    /// on the loop thread, inside this call, and a panic in it unwinds from here.
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
    /// Only if no helper can be started (`EAGAIN`, or `EMFILE` for the helpers' eventfd).
    pub fn run_blocking<T, Op, F>(&mut self, op: Op, callback: F) -> io::Result<JobId>
    where
        T: Send + 'static,
        Op: FnOnce() -> io::Result<T> + Send + 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
    {
        self.blocking_in(USER_JOBS, op, callback)
    }

    /// [`run_blocking`](Self::run_blocking) in the fairness class `class`.
    fn blocking_in<T, Op, F>(&mut self, class: Class, op: Op, callback: F) -> io::Result<JobId>
    where
        T: Send + 'static,
        Op: FnOnce() -> io::Result<T> + Send + 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
    {
        let job: Job = Box::new(move || Box::new(op()) as Output);
        self.submit_job(class, job, completion(callback))
    }

    /// Runs `op` on `file` in the file's request order ([`Access::Barrier`]: after every
    /// earlier request of the file has finished, and before any later one starts).
    fn file_barrier<T, Op, F>(&mut self, file: &AioFile, op: Op, callback: F) -> io::Result<JobId>
    where
        T: Send + 'static,
        Op: FnOnce() -> io::Result<T> + Send + 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
    {
        let (identity, ticket) = (file.identity(), self.file_ticket());
        let complete: Complete<S> = Box::new(move |base, state, outcome| {
            base.file_request_finished(identity, ticket);
            callback(base, state, result_of(outcome))
        });
        let job: Job = Box::new(move || Box::new(op()) as Output);
        self.ordered_job((file, ticket), Access::Barrier, job, complete)
    }

    /// Opens `path` with `options` (read, write, create, truncate, append, `custom_flags` such
    /// as `O_DIRECT`...) on a helper thread, and calls `callback` with the [`AioFile`].
    ///
    /// ```
    /// use std::fs::OpenOptions;
    /// use aioloop::{AioFile, EventBase};
    ///
    /// let mut base = EventBase::<Option<AioFile>>::new()?;
    /// base.open("Cargo.toml", OpenOptions::new().read(true), |_, out, file| {
    ///     *out = Some(file.expect("Cargo.toml opens"));
    /// })?;
    /// base.set_exit_when_empty(true);
    /// let mut out = None;
    /// base.run(&mut out)?;
    /// assert!(out.is_some());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Only if no helper can be started (`EAGAIN`, `EMFILE` for its eventfd); errors of the
    /// open itself reach the callback, with the path in the message.
    pub fn open<F>(
        &mut self,
        path: impl AsRef<Path>,
        options: &OpenOptions,
        callback: F,
    ) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<AioFile>) + 'static,
    {
        let (path, options) = (path.as_ref().to_path_buf(), options.clone());
        self.blocking_in(
            PATHS,
            move || AioFile::new(named(options.open(&path), "open", &path)?),
            callback,
        )
    }

    /// The metadata of `path`, following symlinks (`statx`), on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn stat<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<Metadata>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        self.blocking_in(
            PATHS,
            move || named(std::fs::metadata(&path), "stat", &path),
            callback,
        )
    }

    /// The metadata of an open file (`statx` on its fd), on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn file_metadata<F>(&mut self, file: &AioFile, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<Metadata>) + 'static,
    {
        // On a local file system the inode is in memory while the file is open: `fstat`
        // cannot block, and costs less than a trip to a helper.
        if file.is_local() && self.pool.enabled() {
            return Ok(self.answer_soon(file.file().metadata(), callback));
        }
        let (class, file) = (file.device(), file.clone());
        self.blocking_in(class, move || file.file().metadata(), callback)
    }

    /// Lists the directory `path` on a helper thread: every entry but `.` and `..`, with its
    /// type, in the order the file system gives them.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn read_dir<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<Vec<DirEntry>>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        self.blocking_in(PATHS, move || list(&path), callback)
    }

    /// Closes `file` on a helper thread (a close can wait for a network or FUSE file system to
    /// flush). Closing happens when the last clone of the `AioFile` goes: if other clones (or
    /// requests still queued or in flight) hold it, this only lets go of this one.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn close<F>(&mut self, file: AioFile, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let barrier = file.clone();
        let op = move || {
            drop(file);
            Ok(())
        };
        self.file_barrier(&barrier, op, callback)
    }

    /// `fallocate(2)` on a helper thread: allocates `len` bytes at `offset` (with `mode` 0), so
    /// that later `O_DIRECT` writes there do not extend the file; other modes punch or zero
    /// ranges (`libc::FALLOC_FL_*`).
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn fallocate<F>(
        &mut self,
        file: &AioFile,
        mode: i32,
        offset: u64,
        len: u64,
        callback: F,
    ) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let (barrier, file) = (file, file.clone());
        let op = move || sys::fallocate(file.file().as_fd(), mode, offset, len);
        self.file_barrier(barrier, op, callback)
    }

    /// Truncates or extends `file` to `len` bytes (`ftruncate`) on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn set_len<F>(&mut self, file: &AioFile, len: u64, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let (barrier, file) = (file, file.clone());
        self.file_barrier(barrier, move || file.file().set_len(len), callback)
    }

    /// Renames `from` to `to` (`rename(2)`: replaces `to` if it exists) on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn rename<F>(
        &mut self,
        from: impl AsRef<Path>,
        to: impl AsRef<Path>,
        callback: F,
    ) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let (from, to) = (from.as_ref().to_path_buf(), to.as_ref().to_path_buf());
        let op = move || {
            let what = format!("rename {} to", from.display());
            named(std::fs::rename(&from, &to), &what, &to)
        };
        self.blocking_in(PATHS, op, callback)
    }

    /// Removes the file `path` (`unlink(2)`) on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn remove_file<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        self.blocking_in(
            PATHS,
            move || named(std::fs::remove_file(&path), "remove", &path),
            callback,
        )
    }

    /// Creates the directory `path` (`mkdir(2)`, mode 0777 less the umask) on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn create_dir<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        let op = move || named(std::fs::create_dir(&path), "create directory", &path);
        self.blocking_in(PATHS, op, callback)
    }
}

/// The fairness class of [`run_blocking`](EventBase::run_blocking) jobs.
const USER_JOBS: Class = u64::MAX;
/// The fairness class of the operations on paths (`open`, `stat`, `rename`...), whose file
/// system is not known before the path is resolved.
const PATHS: Class = u64::MAX - 1;

/// The loop-side end of a job whose output is an `io::Result<T>`: hands it to `callback`.
fn completion<S, T, F>(callback: F) -> Complete<S>
where
    T: Send + 'static,
    F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
{
    Box::new(move |base, state, outcome| callback(base, state, result_of(outcome)))
}

/// The result a job whose output is an `io::Result<T>` reports.
fn result_of<T: 'static>(outcome: Outcome) -> io::Result<T> {
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

/// The entries of the directory `path`.
fn list(path: &Path) -> io::Result<Vec<DirEntry>> {
    let listing = std::fs::read_dir(path).and_then(|entries| {
        entries
            .map(|entry| {
                let entry = entry?;
                Ok(DirEntry {
                    name: entry.file_name(),
                    file_type: entry.file_type().ok(),
                })
            })
            .collect()
    });
    named(listing, "list", path)
}

/// `result`, its error saying which operation failed on which path.
fn named<T>(result: io::Result<T>, what: &str, path: &Path) -> io::Result<T> {
    result.map_err(|e| crate::error::context(e, format!("cannot {what} {}", path.display())))
}
