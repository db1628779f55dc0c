//! Operations on paths, on the helper threads: open, stat, directory listings, rename,
//! unlink, mkdir, and opens confined to a directory ([`Dir`], `open_beneath`). None has a
//! non-blocking form in the kernel (short of io_uring), and any of them can take seconds on a
//! slow file system, so each runs on a helper thread (see `pool.rs`) and calls back on the loop
//! thread with its result, like [`read_at`](EventBase::read_at). The verbs on an open
//! [`AioFile`] (reads, writes, syncs, `fallocate`, `set_len`, `close`, `file_metadata`) live
//! together in `aio/requests.rs`, in the file's request order. The blocking forms
//! (`AioFile::open`, `std::fs`) stay available, and block the calling thread.

use std::ffi::{CString, OsString};
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::aio::AioFile;
use crate::base::EventBase;
use crate::pool::{Class, JobId};
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
    /// Opens refuse anything but regular files, checked before the open.
    regular_only: bool,
}

impl Dir {
    /// Opens the directory `path` (a blocking call: make it at start-up).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
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
            regular_only: false,
        })
    }

    /// Makes [`open_beneath`](EventBase::open_beneath) open regular files only. The type is
    /// checked on an `O_PATH` handle, which opens nothing, and only a regular file is then
    /// opened (through that very handle, so a swap in between cannot change what is
    /// opened): a FIFO is never opened (which would release a writer waiting for a reader),
    /// nor a device (whose driver's `open` would run), nor a socket. Those fail with `ENXIO`,
    /// a directory with `EISDIR`, each with the type in the message. What a file server wants.
    ///
    /// ```
    /// use aioloop::{Dir, EventBase};
    ///
    /// let dev = Dir::open("/dev")?.regular_files_only();
    /// let mut base = EventBase::<Option<i32>>::new()?;
    /// base.open_beneath(&dev, "null", false, |_, errno, file| {
    ///     *errno = file.err().and_then(|e| aioloop::os_error(&e));
    /// })?;
    /// base.set_exit_when_empty(true);
    /// let mut errno = None;
    /// base.run(&mut errno)?;
    /// assert_eq!(errno, Some(libc::ENXIO));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn regular_files_only(mut self) -> Dir {
        self.regular_only = true;
        self
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
    let flags = match dir.regular_only {
        true => libc::O_PATH,
        false => flags,
    };
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
    let fd = match dir.regular_only {
        true => open_regular(fd, direct)
            .map_err(|e| crate::error::context(e, format!("cannot open {}", shown())))?,
        false => fd,
    };
    let file = match cached {
        // RESOLVE_NO_XDEV kept it on `dir`'s local file system.
        true => AioFile::known(File::from(fd), direct, true),
        false => AioFile::new(File::from(fd))?,
    };
    Ok(file.opened_at(&dir.path().join(path)))
}

/// Opens for reading the file an `O_PATH` handle names, if it is a regular file, through
/// `/proc/self/fd`, which reopens that very inode (checked: same device and inode). The type
/// and identity come from what the kernel holds, so that on a stalling FUSE mount only the
/// `open` itself waits, as for a plain open.
fn open_regular(handle: OwnedFd, direct: bool) -> io::Result<OwnedFd> {
    let handle = File::from(handle);
    let (kind, dev, ino) = sys::kind_and_identity(handle.as_fd())?;
    if kind != libc::S_IFREG {
        let (errno, what) = match kind {
            libc::S_IFDIR => (libc::EISDIR, "a directory"),
            libc::S_IFIFO => (libc::ENXIO, "a FIFO"),
            libc::S_IFSOCK => (libc::ENXIO, "a socket"),
            libc::S_IFCHR => (libc::ENXIO, "a character device"),
            libc::S_IFBLK => (libc::ENXIO, "a block device"),
            _ => (libc::ENXIO, "not a regular file"),
        };
        let why = format!("it is {what}, and only regular files are opened");
        return Err(crate::error::context(
            io::Error::from_raw_os_error(errno),
            why,
        ));
    }
    let mut options = OpenOptions::new();
    options
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | if direct { libc::O_DIRECT } else { 0 });
    let proc_path = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let file = options.open(proc_path)?;
    let (_, opened_dev, opened_ino) = sys::kind_and_identity(file.as_fd())?;
    if (opened_dev, opened_ino) != (dev, ino) {
        return Err(io::Error::other("the file changed while it was opened"));
    }
    Ok(OwnedFd::from(file))
}

impl<S> EventBase<S> {
    /// Opens `path`, relative to `dir`, for reading (with `O_DIRECT` if `direct`), and calls
    /// `callback` with the [`AioFile`]. When every step of the path is in the dentry cache and
    /// `dir` is on a local file system, the open runs on the loop thread (`openat2` with
    /// `RESOLVE_CACHED`, which answers `EAGAIN` rather than read a disk; counted in
    /// [`Metrics::fs_cached_ops`](crate::Metrics::fs_cached_ops)); otherwise on a helper
    /// thread. Either way the callback runs later, never inside `open_beneath`. The path can never resolve outside
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
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
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
        let logged = Logged(
            log::log_enabled!(log::Level::Debug)
                .then(|| format!("open {} beneath {}", path.display(), dir.path.display())),
        );
        if dir.local && self.pool.enabled() {
            match open_beneath(&dir, &path, direct, true) {
                // Not all cached, a mount point on the way (or a way out, which the helper
                // reports), or RESOLVE_CACHED unknown to this kernel: ask a helper.
                Err(e)
                    if matches!(
                        crate::os_error(&e),
                        Some(libc::EAGAIN | libc::EXDEV | libc::EINVAL)
                    ) => {}
                answer => return logged.job(Ok(self.answer_soon(answer, callback))),
            }
        }
        let class = dir.device;
        let op = move || open_beneath(&dir, &path, direct, false);
        logged.job(self.blocking_in(class, op, callback))
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
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// Only if no helper runs and none can be started (`EAGAIN`, `EMFILE` for its eventfd),
    /// and then the open never runs; errors of the open itself reach the callback, with the
    /// path in the message. Returns a [`JobId`] for [`cancel_job`](Self::cancel_job).
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
        let logged = Logged::new("open", &path);
        let op =
            move || Ok(AioFile::new(named(options.open(&path), "open", &path)?)?.opened_at(&path));
        logged.job(self.blocking_in(PATHS, op, callback))
    }

    /// The metadata of `path`, following symlinks (`statx`), on a helper thread.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`open`](Self::open).
    pub fn stat<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<Metadata>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        let logged = Logged::new("stat", &path);
        let op = move || named(std::fs::metadata(&path), "stat", &path);
        logged.job(self.blocking_in(PATHS, op, callback))
    }

    /// Lists the directory `path` on a helper thread: every entry but `.` and `..`, with its
    /// type, in the order the file system gives them.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`open`](Self::open).
    pub fn read_dir<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<Vec<DirEntry>>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        let logged = Logged::new("list", &path);
        logged.job(self.blocking_in(PATHS, move || list(&path), callback))
    }

    /// Renames `from` to `to` (`rename(2)`: replaces `to` if it exists) on a helper thread.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
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
        let what = format!("rename {} to", from.display());
        let logged = Logged::new(&what, &to);
        let op = move || named(std::fs::rename(&from, &to), &what, &to);
        logged.job(self.blocking_in(PATHS, op, callback))
    }

    /// Removes the file `path` (`unlink(2)`) on a helper thread.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`open`](Self::open).
    pub fn remove_file<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        let logged = Logged::new("remove", &path);
        let op = move || named(std::fs::remove_file(&path), "remove", &path);
        logged.job(self.blocking_in(PATHS, op, callback))
    }

    /// Creates the directory `path` (`mkdir(2)`, mode 0777 less the umask) on a helper thread.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`open`](Self::open).
    pub fn create_dir<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        let logged = Logged::new("create directory", &path);
        let op = move || named(std::fs::create_dir(&path), "create directory", &path);
        logged.job(self.blocking_in(PATHS, op, callback))
    }
}

/// The debug log line of an operation on a path: its name and path, and the job that
/// runs it (whose completion the pool logs with its times). Nothing is formatted unless
/// debug logging is on.
struct Logged(Option<String>);

impl Logged {
    fn new(what: &str, path: &Path) -> Logged {
        let on = log::log_enabled!(log::Level::Debug);
        Logged(on.then(|| format!("{what} {}", path.display())))
    }

    fn job(self, id: io::Result<JobId>) -> io::Result<JobId> {
        if let (Some(what), Ok(id)) = (self.0, &id) {
            log::debug!("{what}: job {id:?}");
        }
        id
    }
}

/// The fairness class of the operations on paths (`open`, `stat`, `rename`...), whose file
/// system is not known before the path is resolved.
const PATHS: Class = u64::MAX - 1;

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
