//! File-system operations on the helper threads: open, stat, directory listings, close,
//! `fallocate`, truncate, rename, unlink, mkdir. None has a non-blocking form in the kernel
//! (short of io_uring), and any of them can take seconds on a slow file system, so each runs
//! on a helper thread (see `pool.rs`) and calls back on the loop thread with its result, like
//! [`read_at`](EventBase::read_at). The blocking forms (`AioFile::open`, `std::fs`) stay
//! available, and block the calling thread.

use std::ffi::OsString;
use std::fs::{FileType, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use crate::aio::AioFile;
use crate::base::EventBase;
use crate::pool::{Complete, Job, Output};
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

impl<S> EventBase<S> {
    /// Runs `op` on a helper thread and `callback` with its result on the loop thread.
    fn on_helper<T, Op, F>(&mut self, op: Op, callback: F) -> io::Result<()>
    where
        T: Send + 'static,
        Op: FnOnce() -> io::Result<T> + Send + 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
    {
        let job: Job = Box::new(move || Box::new(op()) as Output);
        let complete: Complete<S> = Box::new(move |base, state, output| {
            let result = match output.map(|o| o.downcast::<io::Result<T>>()) {
                Some(Ok(result)) => *result,
                Some(Err(_)) => Err(io::Error::other("the helper job panicked")),
                None => Err(io::Error::from_raw_os_error(libc::ECANCELED)),
            };
            callback(base, state, result)
        });
        self.run_on_helper(job, complete).map(drop)
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
    ) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<AioFile>) + 'static,
    {
        let (path, options) = (path.as_ref().to_path_buf(), options.clone());
        self.on_helper(
            move || AioFile::new(named(options.open(&path), "open", &path)?),
            callback,
        )
    }

    /// The metadata of `path`, following symlinks (`statx`), on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn stat<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<Metadata>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        self.on_helper(
            move || named(std::fs::metadata(&path), "stat", &path),
            callback,
        )
    }

    /// The metadata of an open file (`statx` on its fd), on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn file_metadata<F>(&mut self, file: &AioFile, callback: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<Metadata>) + 'static,
    {
        let file = file.clone();
        self.on_helper(move || file.file().metadata(), callback)
    }

    /// Lists the directory `path` on a helper thread: every entry but `.` and `..`, with its
    /// type, in the order the file system gives them.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn read_dir<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<Vec<DirEntry>>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        self.on_helper(move || list(&path), callback)
    }

    /// Closes `file` on a helper thread (a close can wait for a network or FUSE file system to
    /// flush). Closing happens when the last clone of the `AioFile` goes: if other clones (or
    /// requests still queued or in flight) hold it, this only lets go of this one.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn close<F>(&mut self, file: AioFile, callback: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let op = move || {
            drop(file);
            Ok(())
        };
        self.on_helper(op, callback)
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
    ) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let file = file.clone();
        let op = move || sys::fallocate(file.file().as_fd(), mode, offset, len);
        self.on_helper(op, callback)
    }

    /// Truncates or extends `file` to `len` bytes (`ftruncate`) on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn set_len<F>(&mut self, file: &AioFile, len: u64, callback: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let file = file.clone();
        self.on_helper(move || file.file().set_len(len), callback)
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
    ) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let (from, to) = (from.as_ref().to_path_buf(), to.as_ref().to_path_buf());
        let op = move || {
            let what = format!("rename {} to", from.display());
            named(std::fs::rename(&from, &to), &what, &to)
        };
        self.on_helper(op, callback)
    }

    /// Removes the file `path` (`unlink(2)`) on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn remove_file<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        self.on_helper(
            move || named(std::fs::remove_file(&path), "remove", &path),
            callback,
        )
    }

    /// Creates the directory `path` (`mkdir(2)`, mode 0777 less the umask) on a helper thread.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn create_dir<F>(&mut self, path: impl AsRef<Path>, callback: F) -> io::Result<()>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let path = path.as_ref().to_path_buf();
        let op = move || named(std::fs::create_dir(&path), "create directory", &path);
        self.on_helper(op, callback)
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
