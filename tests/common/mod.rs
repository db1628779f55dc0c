//! Real kernel objects for the tests: pipes, socketpairs, byte I/O on raw fds, data files.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

#[path = "../scratch/mod.rs"]
pub mod scratch;

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A connected pair of non-blocking Unix stream sockets.
pub fn socketpair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// Writes `bytes` to a raw fd, expecting all of them to fit.
pub fn put(fd: &impl AsRawFd, bytes: &[u8]) {
    // SAFETY: the pointer and length describe `bytes`, which outlives the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(
        n,
        bytes.len() as isize,
        "write: {}",
        io::Error::last_os_error()
    );
}

/// Reads up to `max` bytes from a raw fd: `Ok(0)` at EOF, `Err(WouldBlock)` when empty.
pub fn take(fd: RawFd, max: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; max];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads until `WouldBlock` or EOF and returns the byte count.
pub fn drain(fd: RawFd) -> usize {
    let mut total = 0;
    while let Ok(n @ 1..) = take(fd, 4096) {
        total += n;
    }
    total
}

/// A file of `len` deterministic pseudo-random bytes under cargo's per-target temp dir,
/// removed when the test binary exits.
pub fn data_file(name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-files");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ len as u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    // A new file each time: ext4 writes back a file truncated and rewritten when it is closed
    // (`auto_da_alloc`), which would leave no dirty page cache for the tests that need some.
    let _ = std::fs::remove_file(&path);
    File::create(&path).unwrap().write_all(&data).unwrap();
    scratch::remove_at_exit(path.clone());
    (path, data)
}

/// Keeps `n` helpers busy for `time` with jobs of their own, so that requests queued next
/// meet a busy pool.
pub fn busy_helpers<S>(base: &mut aioloop::EventBase<S>, n: usize, time: std::time::Duration) {
    for _ in 0..n {
        base.run_blocking(
            move || {
                std::thread::sleep(time);
                Ok(())
            },
            |_, _, _: std::io::Result<()>| {},
        )
        .unwrap();
    }
}

/// Runs the base until nothing is left, failing instead of hanging.
pub fn finish<S>(base: &mut aioloop::EventBase<S>, state: &mut S) {
    base.set_exit_when_empty(true);
    let guard = base.exit_after(std::time::Duration::from_secs(60));
    base.run(state).unwrap();
    assert!(base.cancel_timer(guard), "the run hit its 60 s guard");
}

/// Runs `child` in a forked process (bounded by `alarm`) and returns its exit status.
pub fn in_child(seconds: u32, child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only runs `child` and `_exit`s; glibc's fork handlers keep malloc
    // usable there.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            // SAFETY: alarm and _exit are async-signal-safe.
            unsafe { libc::alarm(seconds) };
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(90);
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            match libc::WIFEXITED(status) {
                true => libc::WEXITSTATUS(status),
                false => 100 + libc::WTERMSIG(status),
            }
        }
    }
}
