//! The request verbs of the base: reads, writes, syncs, whole-span helpers and cancel.

use std::fs::Metadata;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, PoisonError};

use super::order::Access;
use super::{AioError, AioFile, AioId, AioOptions, IoBuf, IoBufMut, OpState, TransferError};
use crate::base::EventBase;
use crate::pool::{result_of, Complete, Job, JobId, Output};
use crate::sys;
use crate::sys::aio as abi;

/// The `# Errors` section shared by every transfer verb.
macro_rules! transfer_refusals {
    () => {
        "\n# Errors\n\nRead an error's errno with [`os_error`](crate::os_error): `raw_os_error()` \
         is `None` on errors that carry a sentence of context ([Errors](crate#errors)).\n\n\
         Refused at once, with the buffer handed back ([`AioError::into_parts`]), \
         when a read's buffer is empty (`InvalidInput`: a read fills the buffer's *length*, not \
         its capacity, so `Vec::with_capacity(n)` has nothing to fill), an `O_DIRECT` request is \
         misaligned (`InvalidInput`, naming both alignments), the \
         offset is beyond `i64::MAX`, or, with helpers off, the AIO context cannot be created \
         (the first request creates it: `aio-max-nr` exhausted, or AIO blocked by seccomp; with \
         helpers on, the helpers run the request instead). Errors of the I/O itself reach the \
         callback.\n"
    };
}

impl<S> EventBase<S> {
    /// Sets the AIO options. Only before the first AIO request, which creates the context.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// After the first AIO request: the context already exists with the old options.
    pub fn set_aio_options(&mut self, options: AioOptions) -> io::Result<()> {
        if self.aio.context.is_some() {
            return Err(io::Error::other(
                "AIO options must be set before the first AIO request creates the context",
            ));
        }
        self.aio.options = options;
        self.pool.set_limits(crate::pool::PoolLimits {
            threads: options.helper_threads,
            per_class: options.per_class(),
        });
        Ok(())
    }

    /// Reads into `buf` from `file` at `offset`; `callback` gets the buffer back with the byte
    /// count, which is short at end of file and 0 at or past it.
    ///
    /// The buffer belongs to the loop until the callback: it is never freed or handed back while
    /// the kernel may write into it.
    ///
    /// The read never blocks the loop thread. A buffered read is served from the page cache
    /// on the loop thread by one `preadv2` with `RWF_NOWAIT` (no kernel AIO, counted in
    /// [`Metrics::aio_cached_reads`](crate::Metrics::aio_cached_reads)); what is not cached,
    /// and a file on FUSE or NFS, runs on a helper thread instead. An `O_DIRECT` read goes to
    /// kernel AIO with `RWF_NOWAIT`, and to a helper if it would block. The callback runs
    /// later in the loop's iteration either way, never inside `read_at`; see
    /// [the AIO guide](crate::guide::aio). With helpers off
    /// ([`AioOptions::helper_threads`]`(0)`), every read goes to kernel AIO: only `O_DIRECT`
    /// reads are asynchronous, the others run inside `io_submit`, on the loop thread.
    ///
    /// The read fills the buffer's *length*, not its capacity: a `Vec::with_capacity(n)` is
    /// empty and is refused (see Errors); use `vec![0; n]`.
    #[doc = transfer_refusals!()]
    ///
    /// ```
    /// use aioloop::{AioFile, EventBase};
    ///
    /// let file = AioFile::open("Cargo.toml", false)?;
    /// let mut base = EventBase::<Option<Vec<u8>>>::new()?;
    /// base.read_at(&file, 0, vec![0; 9], |_, out, buf, n| {
    ///     assert_eq!(n.unwrap(), 9);
    ///     *out = Some(buf);
    /// })?;
    /// base.set_exit_when_empty(true);
    /// let mut out = None;
    /// base.run(&mut out)?;
    /// assert_eq!(out.unwrap(), b"[package]");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        mut buf: B,
        callback: F,
    ) -> Result<AioId, AioError<B>>
    where
        B: IoBufMut,
        F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<usize>) + 'static,
    {
        let span = (buf.io_mut_ptr() as usize, buf.io_len());
        self.submit_transfer(file, abi::IOCB_CMD_PREAD, offset, span, buf, callback)
            .map_err(|(error, buf, _)| AioError { error, buf })
    }

    /// Writes `buf` to `file` at `offset`; `callback` gets the buffer back with the byte count.
    ///
    /// Like [`read_at`](Self::read_at), it never blocks the loop: what kernel AIO cannot do
    /// without blocking runs on a helper. That includes buffered writes on ext4 and `O_DIRECT`
    /// writes that extend the file; preallocate ([`fallocate`](Self::fallocate);
    /// `File::set_len` does not allocate) to keep `O_DIRECT` writes on kernel AIO.
    #[doc = transfer_refusals!()]
    pub fn write_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        buf: B,
        callback: F,
    ) -> Result<AioId, AioError<B>>
    where
        B: IoBuf,
        F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<usize>) + 'static,
    {
        let span = (buf.io_ptr() as usize, buf.io_len());
        self.submit_transfer(file, abi::IOCB_CMD_PWRITE, offset, span, buf, callback)
            .map_err(|(error, buf, _)| AioError { error, buf })
    }

    /// Reads into several buffers in order (`preadv`); `callback` gets them back with the
    /// total byte count.
    #[doc = transfer_refusals!()]
    /// More than 1024 buffers (`UIO_MAXIOV`) are refused too.
    pub fn readv_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        mut bufs: Vec<B>,
        callback: F,
    ) -> Result<AioId, AioError<Vec<B>>>
    where
        B: IoBufMut,
        F: FnOnce(&mut EventBase<S>, &mut S, Vec<B>, io::Result<usize>) + 'static,
    {
        let iovecs = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.io_mut_ptr().cast(),
                iov_len: b.io_len(),
            })
            .collect();
        self.submit_vectored(file, abi::IOCB_CMD_PREADV, offset, iovecs, bufs, callback)
    }

    /// Writes several buffers in order (`pwritev`); `callback` gets them back with the total
    /// byte count.
    #[doc = transfer_refusals!()]
    /// More than 1024 buffers (`UIO_MAXIOV`) are refused too.
    pub fn writev_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        bufs: Vec<B>,
        callback: F,
    ) -> Result<AioId, AioError<Vec<B>>>
    where
        B: IoBuf,
        F: FnOnce(&mut EventBase<S>, &mut S, Vec<B>, io::Result<usize>) + 'static,
    {
        let iovecs = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.io_ptr() as *mut libc::c_void,
                iov_len: b.io_len(),
            })
            .collect();
        self.submit_vectored(file, abi::IOCB_CMD_PWRITEV, offset, iovecs, bufs, callback)
    }

    /// Flushes `file`'s data and metadata to stable storage (`IOCB_CMD_FSYNC`, run by a
    /// kernel worker: the loop does not block).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// Only with helpers off, when the AIO context cannot be created (with helpers on, a helper
    /// runs the sync instead); errors of the sync reach the callback.
    pub fn fsync<F>(&mut self, file: &AioFile, callback: F) -> io::Result<AioId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        self.submit_sync(file, abi::IOCB_CMD_FSYNC, callback)
    }

    /// Like [`fsync`](Self::fsync) but without metadata not needed to read the data back
    /// (`IOCB_CMD_FDSYNC`).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// Only with helpers off, when the AIO context cannot be created (with helpers on, a helper
    /// runs the sync instead); errors of the sync reach the callback.
    pub fn fdatasync<F>(&mut self, file: &AioFile, callback: F) -> io::Result<AioId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        self.submit_sync(file, abi::IOCB_CMD_FDSYNC, callback)
    }

    /// Reads exactly `buf.io_len()` bytes at `offset`, resubmitting the rest after short reads.
    /// The callback gets `Ok(())`, or a [`TransferError`] with the bytes read before it:
    /// `UnexpectedEof` when the file ends first (for an `O_DIRECT` file, a short read is its
    /// end). Returns the id of the first request.
    #[doc = transfer_refusals!()]
    pub fn read_exact_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        mut buf: B,
        callback: F,
    ) -> Result<AioId, AioError<B>>
    where
        B: IoBufMut,
        F: FnOnce(&mut EventBase<S>, &mut S, B, Result<(), TransferError>) + 'static,
    {
        let span = (buf.io_mut_ptr() as usize, buf.io_len());
        let rest = Rest {
            file: file.clone(),
            opcode: abi::IOCB_CMD_PREAD,
            offset,
            span,
            done: 0,
            callback,
        };
        rest.submit(self, buf)
            .map_err(|(error, buf, _)| AioError { error, buf })
    }

    /// Writes all of `buf` at `offset`, resubmitting the rest after short writes. The callback
    /// gets `Ok(())`, or a [`TransferError`] saying how many bytes reached the file before the
    /// error (`ENOSPC`, `EFBIG`...; `WriteZero` for a write of 0 bytes). Returns the id of the
    /// first request.
    #[doc = transfer_refusals!()]
    pub fn write_all_at<B, F>(
        &mut self,
        file: &AioFile,
        offset: u64,
        buf: B,
        callback: F,
    ) -> Result<AioId, AioError<B>>
    where
        B: IoBuf,
        F: FnOnce(&mut EventBase<S>, &mut S, B, Result<(), TransferError>) + 'static,
    {
        let span = (buf.io_ptr() as usize, buf.io_len());
        let rest = Rest {
            file: file.clone(),
            opcode: abi::IOCB_CMD_PWRITE,
            offset,
            span,
            done: 0,
            callback,
        };
        rest.submit(self, buf)
            .map_err(|(error, buf, _)| AioError { error, buf })
    }

    /// Cancels a request that has not started, or a read that the page cache answered (in
    /// whole or in part) and that has not been called back yet: it
    /// gets an error whose `raw_os_error()` is `Some(libc::ECANCELED)` (its `ErrorKind` is not
    /// a stable one: compare the errno) with its buffer, in this or the next iteration.
    /// Returns `true` then, and `true` always means `ECANCELED`, never a partial result.
    ///
    /// That covers a request still waiting (held behind earlier requests of its file, in the
    /// submission queue, or in the helpers' queue), and a read whose result is known but not
    /// called back yet: a read has no side effect, so one the page cache answered inside
    /// `read_at`, or whose first part came from the cache while the rest waits for a helper,
    /// is cancelled too (what it put in the buffer is not reported). Requests for kernel AIO
    /// are submitted right before each poll, so a cancel in the callback that queued one
    /// always succeeds, as it does for a read the page cache answered; a request handed to an
    /// idle helper (a file on FUSE, a page-cache miss) may have started at once.
    ///
    /// Returns `false` if the request is unknown, finished, already cancelled, or a write, sync
    /// or read **that the kernel or a helper has started**: file I/O cannot be stopped once
    /// started (`io_cancel` gives `EINVAL`), so it runs to completion and its callback gets its
    /// real result. A cancel never hides what happened to the file: a write that started
    /// reports the bytes it wrote (libuv answers `EBUSY` in the same case). For
    /// [`read_exact_at`](Self::read_exact_at) and [`write_all_at`](Self::write_all_at), the id
    /// names the first request of the span only.
    pub fn cancel_aio(&mut self, id: AioId) -> bool {
        let Some(op) = self.aio.ops.get_mut(id.key as usize) else {
            return false;
        };
        if op.gen != id.gen || op.cancelled {
            return false;
        }
        let read = matches!(
            op.iocb.aio_lio_opcode,
            abi::IOCB_CMD_PREAD | abi::IOCB_CMD_PREADV
        );
        let cancelled = match op.state {
            OpState::Held => {
                op.state = OpState::Done;
                self.aio.ready.push_back(crate::sys::aio::AioEvent {
                    data: id.data(),
                    res: -i64::from(libc::ECANCELED),
                    ..Default::default()
                });
                true
            }
            OpState::Queued => {
                self.aio.needs_flush = true;
                true
            }
            // Part of a write may have reached the file through kernel AIO already.
            OpState::OnHelper(_) if !read && op.done > 0 => false,
            OpState::OnHelper(job) => self.pool.cancel(job),
            OpState::Done => read,
            OpState::InKernel => false,
        };
        if cancelled {
            self.aio.ops[id.key as usize].cancelled = true;
        }
        cancelled
    }

    /// The metadata of an open file (`fstat` on its fd): on a local file system, on the loop
    /// thread, from the in-memory inode (which cannot block; counted in
    /// [`Metrics::fs_cached_ops`](crate::Metrics::fs_cached_ops)); otherwise (FUSE, NFS...)
    /// on a helper thread. The callback runs later either way, never inside `file_metadata`.
    /// Not part of the file's request order: it may see the file before or after requests
    /// still running.
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
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

    /// Closes `file` on a helper thread (a close can wait for a network or FUSE file system to
    /// flush). Closing happens when the last clone of the `AioFile` goes: if other clones (or
    /// requests still queued or in flight) hold it, this only lets go of this one.
    ///
    /// It takes effect in the file's request order (see [the AIO guide](crate::guide::aio)): after every request of
    /// the file issued before it has finished, and before any issued after it starts. Returns
    /// a [`JobId`] for [`cancel_job`](Self::cancel_job).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`open`](Self::open).
    pub fn close<F>(&mut self, file: AioFile, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        let op = |file: AioFile| {
            drop(file);
            Ok(())
        };
        self.file_barrier(&file, op, callback)
    }

    /// `fallocate(2)` on a helper thread: allocates `len` bytes at `offset` (with `mode` 0), so
    /// that later `O_DIRECT` writes there do not extend the file; other modes punch or zero
    /// ranges (`libc::FALLOC_FL_*`).
    ///
    /// It takes effect in the file's request order (see [the AIO guide](crate::guide::aio)): after every request of
    /// the file issued before it has finished, and before any issued after it starts. Returns
    /// a [`JobId`] for [`cancel_job`](Self::cancel_job).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
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
        let op = move |file: AioFile| sys::fallocate(file.file().as_fd(), mode, offset, len);
        self.file_barrier(file, op, callback)
    }

    /// Truncates or extends `file` to `len` bytes (`ftruncate`) on a helper thread.
    ///
    /// It takes effect in the file's request order (see [the AIO guide](crate::guide::aio)): after every request of
    /// the file issued before it has finished, and before any issued after it starts. Returns
    /// a [`JobId`] for [`cancel_job`](Self::cancel_job).
    ///
    /// # Errors
    ///
    /// Read an error's errno with [`os_error`](crate::os_error): `raw_os_error()` is `None`
    /// on errors that carry a sentence of context ([Errors](crate#errors)).
    ///
    /// As for [`open`](Self::open).
    pub fn set_len<F>(&mut self, file: &AioFile, len: u64, callback: F) -> io::Result<JobId>
    where
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<()>) + 'static,
    {
        self.file_barrier(file, move |file| file.file().set_len(len), callback)
    }

    /// Runs `op` on a clone of `file` in the file's request order ([`Access::Barrier`]: after
    /// every earlier request of the file has finished, and before any later one starts).
    ///
    /// The job takes its clone out of a shared slot when it runs, and drops it on the helper.
    /// A job that never runs (cancelled, refused) is dropped on the loop thread, where its
    /// clone, if the last, would close a FUSE or network file and wait for the server: it
    /// leaves the clone in the slot instead, for the loop to let go of off the loop thread.
    fn file_barrier<T, Op, F>(&mut self, file: &AioFile, op: Op, callback: F) -> io::Result<JobId>
    where
        T: Send + 'static,
        Op: FnOnce(AioFile) -> io::Result<T> + Send + 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, io::Result<T>) + 'static,
    {
        let (identity, ticket) = (file.identity(), self.file_ticket());
        let slot = Arc::new(Mutex::new(Some(file.clone())));
        let theirs = Arc::clone(&slot);
        let complete: Complete<S> = Box::new(move |base, state, outcome| {
            base.file_request_finished(identity, ticket);
            if let Some(file) = take(&slot) {
                base.let_go(file);
            }
            callback(base, state, result_of(outcome))
        });
        let job: Job = Box::new(move || {
            let file = take(&theirs).expect("a job runs once");
            Box::new(op(file)) as Output
        });
        self.ordered_job((file, ticket), Access::Barrier, job, complete)
    }

    /// Hands queued requests to the kernel now, instead of right before the next
    /// poll. Useful to start I/O before a long computation in a callback; completions are
    /// still delivered by the loop. Refusals are reported through the requests' callbacks.
    pub fn submit_aio(&mut self) {
        self.flush_aio();
    }
}

/// The file a barrier job's slot holds, if still there.
fn take(slot: &Mutex<Option<AioFile>>) -> Option<AioFile> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// What to do when a transfer completes. Closures qualify; so does [`Rest`], which the
/// `*_exact`/`*_all` helpers use and can take apart again when a submission is refused.
pub(super) trait OnTransfer<S, B>: 'static {
    /// Part of a whole-span transfer, whose rest keeps its place in the file's order.
    const SPAN: bool = false;

    fn done(self, base: &mut EventBase<S>, state: &mut S, buf: B, res: io::Result<usize>);
}

impl<S, B, F> OnTransfer<S, B> for F
where
    F: FnOnce(&mut EventBase<S>, &mut S, B, io::Result<usize>) + 'static,
{
    fn done(self, base: &mut EventBase<S>, state: &mut S, buf: B, res: io::Result<usize>) {
        self(base, state, buf, res)
    }
}

/// The rest of a whole-span transfer: resubmits after short counts until the span is done.
struct Rest<F> {
    file: AioFile,
    opcode: u16,
    offset: u64,
    /// Address and length of the whole span in the buffer.
    span: (usize, usize),
    done: usize,
    callback: F,
}

impl<F> Rest<F> {
    /// Queues the part of the span not done yet; on refusal hands everything back.
    fn submit<S, B>(self, base: &mut EventBase<S>, buf: B) -> Result<AioId, (io::Error, B, Self)>
    where
        B: 'static,
        F: FnOnce(&mut EventBase<S>, &mut S, B, Result<(), TransferError>) + 'static,
    {
        let (file, opcode) = (self.file.clone(), self.opcode);
        let (at, rest) = self.rest();
        base.submit_transfer(&file, opcode, at, rest, buf, self)
    }

    /// The file offset and the buffer span still to transfer.
    fn rest(&self) -> (u64, (usize, usize)) {
        let (addr, len) = self.span;
        (
            self.offset + self.done as u64,
            (addr + self.done, len - self.done),
        )
    }

    /// Why the span ended early when the kernel transferred nothing more.
    fn short_error(&self) -> io::Error {
        match self.opcode {
            abi::IOCB_CMD_PREAD => io::ErrorKind::UnexpectedEof.into(),
            _ => io::ErrorKind::WriteZero.into(),
        }
    }

    fn finish<S, B>(self, base: &mut EventBase<S>, state: &mut S, buf: B, error: Option<io::Error>)
    where
        F: FnOnce(&mut EventBase<S>, &mut S, B, Result<(), TransferError>),
    {
        // The span ends: a request the callback issues takes a place of its own.
        base.aio.carry = None;
        let transferred = self.done;
        let result = error.map_or(Ok(()), |error| Err(TransferError { transferred, error }));
        (self.callback)(base, state, buf, result)
    }
}

impl<S, B, F> OnTransfer<S, B> for Rest<F>
where
    B: 'static,
    F: FnOnce(&mut EventBase<S>, &mut S, B, Result<(), TransferError>) + 'static,
{
    const SPAN: bool = true;

    fn done(mut self, base: &mut EventBase<S>, state: &mut S, buf: B, res: io::Result<usize>) {
        let len = self.span.1;
        match res {
            Ok(0) if self.done < len => {
                let error = self.short_error();
                return self.finish(base, state, buf, Some(error));
            }
            Ok(n) => self.done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return self.finish(base, state, buf, Some(e)),
        }
        if self.done >= len {
            return self.finish(base, state, buf, None);
        }
        // An O_DIRECT transfer only comes back short at the end of the file (or of the
        // space): the rest is then misaligned and the kernel would refuse it.
        let (at, (addr, rest)) = self.rest();
        if self.file.check_transfer(addr, rest, at).is_err() {
            let error = self.short_error();
            return self.finish(base, state, buf, Some(error));
        }
        if let Err((e, buf, rest)) = self.submit(base, buf) {
            rest.finish(base, state, buf, Some(e));
        }
    }
}
