//! A job is either refused (it never runs, and its buffer comes back) or it runs (and is
//! reported), never both, when a helper thread cannot be started: provoked for real with
//! `RLIMIT_NPROC` 0 in a forked child that has dropped root (root is exempt from the limit).
//! Also: a base dropped while a helper is stuck in a stalled FUSE read never holds up the
//! process's exit.

use std::cell::Cell;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aioloop::{AioFile, EventBase};

mod common;
use common::in_child;

/// Takes away the right to start any thread (`RLIMIT_NPROC` 0), dropping root for `nobody`
/// first where the test runs as root.
/// Returns `false` if a thread can still be started.
fn forbid_threads() -> bool {
    // SAFETY: plain syscalls on this (single-threaded, forked) process's credentials.
    unsafe {
        // Root ignores RLIMIT_NPROC: drop it first. Any other user is bound by it already.
        if libc::geteuid() == 0 {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
            assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
        }
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NPROC, &none), 0);
    }
    std::thread::Builder::new().spawn(|| {}).is_err()
}

/// A pipe whose read end blocks: (read end, write end).
fn blocking_pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 made both fds, owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("refusal")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // nobody must be able to remove files in it.
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C path.
    assert_eq!(unsafe { libc::chmod(c.as_ptr(), 0o777) }, 0);
    let c = std::ffi::CString::new(dir.parent().unwrap().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C path.
    assert_eq!(unsafe { libc::chmod(c.as_ptr(), 0o777) }, 0);
    dir
}

/// What the child saw, as an exit code: 0 when every job was either refused and never ran, or
/// ran and was reported, once.
#[derive(Default)]
struct Seen {
    reads: Vec<Result<usize, i32>>,
    removes: Vec<Result<(), i32>>,
    blocking: Vec<Result<(), i32>>,
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// One helper runs (busy); no other can start. Every job queued now must wait for that
/// helper and run once, reported once; none may be reported refused and run anyway.
#[test]
fn jobs_that_cannot_get_a_new_thread_wait_for_a_running_one_and_run_once() {
    let dir = scratch_dir("running");
    let victim = dir.join("victim");
    std::fs::write(&victim, b"x").unwrap();
    let code = in_child(20, || {
        let status = AioFile::open("/proc/self/status", false).unwrap();
        let mut base = EventBase::<Seen>::new().unwrap();
        let (mut rx, tx) = blocking_pipe();
        // The one helper, started while threads may be: it waits for the loop's word.
        base.run_blocking(
            move || rx.read(&mut [0]).map(drop),
            |_, _, r: std::io::Result<()>| r.unwrap(),
        )
        .unwrap();
        if !forbid_threads() {
            return 3;
        }
        let ran = Arc::new(AtomicUsize::new(0));
        // Buffers the jobs may use: a read into a freed one would show in the bytes read.
        if let Err(e) = base.read_at(&status, 0, vec![0; 4096], |_, seen, buf, r| {
            let r = r.map_err(errno);
            if let Ok(n) = r {
                assert!(buf[..n].starts_with(b"Name:"));
            }
            seen.reads.push(r)
        }) {
            panic!("refused at submission: {e}");
        }
        let removed = base.remove_file(&victim, |_, seen, r| seen.removes.push(r.map_err(errno)));
        let job_ran = ran.clone();
        let blocking = base.run_blocking(
            move || {
                job_ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
            |_, seen, r| seen.blocking.push(r.map_err(errno)),
        );
        base.add_timer(Duration::from_millis(100), move |_, _, _| {
            drop(tx); // end of file for the busy helper's read
        });
        base.set_exit_when_empty(true);
        base.exit_after(Duration::from_secs(10));
        let mut seen = Seen::default();
        base.run(&mut seen).unwrap();
        let consistent = |submitted: bool, reports: usize, effect: bool| match submitted {
            true => reports == 1 && effect,
            false => reports == 0 && !effect,
        };
        let checks = [
            seen.reads == [Ok(seen.reads.first().and_then(|r| r.ok()).unwrap_or(0))]
                && seen.reads[0] != Ok(0),
            consistent(removed.is_ok(), seen.removes.len(), !victim.exists()),
            consistent(
                blocking.is_ok(),
                seen.blocking.len(),
                ran.load(Ordering::SeqCst) == 1,
            ),
            removed.is_ok() && blocking.is_ok(),
        ];
        match checks.iter().position(|ok| !ok) {
            None => 0,
            Some(i) => 10 + i as i32,
        }
    });
    if code == 3 {
        eprintln!("skipped: a thread could still be started under RLIMIT_NPROC 0");
        return;
    }
    assert_eq!(
        code, 0,
        "exit code 10+n: check n failed; 90: panic; 100+n: signal n"
    );
}

/// No helper runs and none can start: every job is refused at once and never runs; a file
/// request's buffer comes back through its callback.
#[test]
fn jobs_that_no_thread_can_run_are_refused_and_never_run() {
    let dir = scratch_dir("none");
    let victim = dir.join("victim");
    std::fs::write(&victim, b"x").unwrap();
    let code = in_child(20, || {
        let status = AioFile::open("/proc/self/status", false).unwrap();
        if !forbid_threads() {
            return 3;
        }
        let mut base = EventBase::<Seen>::new().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let job_ran = ran.clone();
        let blocking = base.run_blocking(
            move || {
                job_ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
            |_, seen, r| seen.blocking.push(r.map_err(errno)),
        );
        let removed = base.remove_file(&victim, |_, seen, r| seen.removes.push(r.map_err(errno)));
        let buffer_back = Rc::new(Cell::new(false));
        let back = buffer_back.clone();
        base.read_at(&status, 0, vec![7u8; 4096], move |_, seen, buf, r| {
            back.set(buf.len() == 4096 && buf.iter().all(|&b| b == 7));
            seen.reads.push(r.map_err(errno))
        })
        .unwrap();
        base.set_exit_when_empty(true);
        base.exit_after(Duration::from_secs(10));
        let mut seen = Seen::default();
        base.run(&mut seen).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let checks = [
            blocking.is_err() && seen.blocking.is_empty() && ran.load(Ordering::SeqCst) == 0,
            removed.is_err() && seen.removes.is_empty() && victim.exists(),
            seen.reads == [Err(libc::EAGAIN)] && buffer_back.get(),
        ];
        match checks.iter().position(|ok| !ok) {
            None => 0,
            Some(i) => 10 + i as i32,
        }
    });
    if code == 3 {
        eprintln!("skipped: a thread could still be started under RLIMIT_NPROC 0");
        return;
    }
    assert_eq!(
        code, 0,
        "exit code 10+n: check n failed; 90: panic; 100+n: signal n"
    );
}
