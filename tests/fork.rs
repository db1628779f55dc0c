//! Tests that fork: a base copied into a child, faults set up with process-wide limits
//! (`RLIMIT_FSIZE`), and a child forked while another thread holds aioloop's process-wide locks.
//!
//! No libtest harness (`harness = false`): its threads could hold a lock (std's output capture,
//! the panic hook's) at a fork, and the child would hang on it. `main` runs the tests one by
//! one; every forked child has an `alarm`, and every wait for one is bounded.

use std::time::{Duration, Instant};

use aioloop::{AioFile, AlignedBuf, EventBase};

mod common;
mod runner;
use common::data_file;

/// How long a forked child may live before its `alarm` ends it.
const CHILD_ALARM_SECS: u32 = 10;

/// Runs `child` in a forked process and returns its exit code.
fn in_child(child: impl FnOnce() -> i32) -> i32 {
    let status = in_child_status(child);
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    libc::WEXITSTATUS(status)
}

/// Runs `child` in a forked process and returns its wait status.
fn in_child_status(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only runs `child` and leaves with `_exit`, never returning into
    // `main`; its alarm ends it if it hangs.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => run_child(child),
        pid => wait_bounded(pid),
    }
}

/// The child's side: an alarm first, then `child`; never returns.
fn run_child(child: impl FnOnce() -> i32) -> ! {
    // SAFETY: SIGALRM back to its default action and unblocked, then an alarm: plain calls on
    // stack values in the child.
    unsafe {
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::alarm(CHILD_ALARM_SECS);
    }
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
    // SAFETY: leaving the child without running the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Waits for child `pid` twice as long as its alarm allows, then kills it and fails.
fn wait_bounded(pid: libc::pid_t) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(2 * u64::from(CHILD_ALARM_SECS));
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child, without blocking.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            0 => {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                panic!("child {pid} outlived its alarm");
            }
            reaped => {
                assert_eq!(reaped, pid, "waitpid: {}", std::io::Error::last_os_error());
                return status;
            }
        }
    }
}

fn forked_child_cannot_run_the_parents_base_and_the_parent_keeps_its_completion() {
    let (path, data) = data_file("fork", 1 << 20);
    let file = AioFile::open(&path, true).unwrap();
    let mut base = EventBase::<Vec<u8>>::new().unwrap();
    base.read_at(
        &file,
        0,
        AlignedBuf::new(1 << 20, 4096).unwrap(),
        |_, got, buf, r| {
            assert_eq!(r.unwrap(), 1 << 20);
            got.extend_from_slice(&buf);
        },
    )
    .unwrap();
    base.submit_aio(); // in flight before the fork: its completion lands in the shared ring

    let code = in_child(|| {
        let refused = base.run_once(&mut Vec::new(), Some(Duration::from_millis(500)));
        let ran = base.run_for(&mut Vec::new(), Duration::from_millis(500));
        match (refused, ran) {
            (Err(a), Err(b))
                if a.to_string().contains("fork") && b.to_string().contains("child") =>
            {
                0
            }
            _ => 1,
        }
    });
    assert_eq!(code, 0, "the child ran the parent's base");

    let mut got = Vec::new();
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(20));
    base.run(&mut got).unwrap();
    assert!(got == data, "the parent lost its completion");
}

/// A real short write followed by a real error: a file-size limit (`RLIMIT_FSIZE`) makes the
/// kernel write up to the limit, then refuse with `EFBIG`. The callback must learn how much
/// reached the file.
fn write_all_at_reports_how_many_bytes_landed_before_an_error() {
    const LIMIT: u64 = 300_000;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-files");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fsize-limited");
    let _ = std::fs::remove_file(&path);
    let report = dir.join("fsize-limited.report");
    common::scratch::remove_at_exit(path.clone());
    common::scratch::remove_at_exit(report.clone());
    let (child_path, child_report) = (path.clone(), report.clone());
    let code = in_child(move || {
        let limit = libc::rlimit {
            rlim_cur: LIMIT,
            rlim_max: LIMIT,
        };
        // SAFETY: plain setrlimit and signal calls in the single-threaded child.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
        }
        let file = std::fs::File::create(&child_path).unwrap();
        let file = AioFile::new(file).unwrap();
        let mut base = EventBase::<String>::new().unwrap();
        base.write_all_at(&file, 0, vec![1u8; 1 << 20], |_, out, _, r| {
            let e = r.unwrap_err();
            *out = format!(
                "{} {}",
                e.transferred(),
                aioloop::os_error(e.error()).unwrap_or(0)
            );
        })
        .unwrap();
        base.set_exit_when_empty(true);
        let mut out = String::new();
        base.run(&mut out).unwrap();
        std::fs::write(&child_report, out).unwrap();
        0
    });
    assert_eq!(code, 0);
    let report = std::fs::read_to_string(&report).unwrap();
    assert_eq!(report, format!("{LIMIT} {}", libc::EFBIG));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), LIMIT);
}

/// A forked child inherits the forwarding handler and the parent's pipe: a signal it takes
/// must get its default action, not travel into the parent's loop.
fn forked_child_takes_the_default_action_instead_of_forwarding_to_the_parent() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_signal_handler(libc::SIGUSR2, |_, n, _| *n += 1)
        .unwrap();
    let status = in_child_status(|| {
        // SAFETY: unblocking SIGUSR2 and raising it in the single-threaded child.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(libc::SIGUSR2);
        }
        0 // reached only if the signal did not terminate the child
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGUSR2,
        "child status {status:#x}"
    );
    let mut n = 0;
    base.run_once(&mut n, Some(Duration::from_millis(50)))
        .unwrap();
    assert_eq!(n, 0, "the child's signal reached the parent's base");
}

/// What the docs advise a forked child to do (a new base, a signal handler) works even if
/// another thread of the parent held the process-wide signal registry's lock, or the
/// forwarding pipe's, at the fork: many forks while a thread adds and drops signal handlers.
fn child_forked_while_another_thread_uses_signals_can_handle_signals_of_its_own() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let mut base = EventBase::<()>::new().unwrap();
                base.add_signal_handler(libc::SIGUSR1, |_, _, _| {})
                    .unwrap();
                base.add_signal_handler(libc::SIGWINCH, |_, _, _| {})
                    .unwrap();
            }
        })
    };
    let mut failures = Vec::new();
    for _ in 0..40 {
        let status = in_child_status(|| {
            let mut base = EventBase::<u32>::new().unwrap();
            base.add_signal_handler(libc::SIGUSR1, |_, n, _| *n += 1)
                .unwrap();
            // SAFETY: a signal to this (single-threaded) child, which now blocks it.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
            let mut n = 0;
            while n == 0 {
                base.run_once(&mut n, Some(Duration::from_millis(100)))
                    .unwrap();
            }
            0
        });
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failures.push(status);
        }
    }
    stop.store(true, Ordering::SeqCst);
    churn.join().unwrap();
    assert!(failures.is_empty(), "child statuses {failures:#x?}");
}

/// A child made by a raw `clone` syscall runs no `pthread_atfork` handler; it still cannot
/// run the parent's base, which would steal the parent's events.
fn child_made_by_a_raw_clone_cannot_run_the_parents_base() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_timer(Duration::ZERO, |_, n, _| *n += 1);
    // SAFETY: clone with only SIGCHLD is fork without the C library's fork handlers; no other
    // thread runs here, and the child only runs `run_child`, which leaves with `_exit`.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
    let code = match pid {
        -1 => panic!("clone: {}", std::io::Error::last_os_error()),
        0 => run_child(|| match base.run_once(&mut 0, Some(Duration::ZERO)) {
            Err(e) if e.to_string().contains("fork") => 0,
            _ => 1,
        }),
        pid => wait_bounded(pid as libc::pid_t),
    };
    assert!(
        libc::WIFEXITED(code) && libc::WEXITSTATUS(code) == 0,
        "the raw-clone child ran the parent's base: status {code:#x}"
    );
    let mut n = 0;
    base.run_once(&mut n, Some(Duration::ZERO)).unwrap();
    assert_eq!(n, 1, "the parent's base still runs");
}

/// A child made by a raw `clone` syscall shares the parent's forwarding pipe, and no
/// `pthread_atfork` handler tells it so: a base of its own must read a pipe of its own, never
/// take the instances waiting in the parent's.
fn child_made_by_a_raw_clone_leaves_the_parents_forwarded_signals_alone() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_signal_handler(libc::SIGUSR2, |_, n, _| *n += 1)
        .unwrap();
    // A thread that does not block SIGUSR2 takes one: the forwarding handler puts it in the
    // pipe, where it waits for the parent's loop.
    std::thread::spawn(|| {
        // SAFETY: unblocking SIGUSR2 in this thread, then sending it to this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(libc::SIGUSR2);
        }
    })
    .join()
    .unwrap();
    // SAFETY: as in `child_made_by_a_raw_clone_cannot_run_the_parents_base`.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
    let code = match pid {
        -1 => panic!("clone: {}", std::io::Error::last_os_error()),
        0 => run_child(|| {
            let mut own = EventBase::<u32>::new().unwrap();
            own.add_signal_handler(libc::SIGUSR1, |_, n, _| *n += 1)
                .unwrap();
            for _ in 0..3 {
                own.run_once(&mut 0, Some(Duration::from_millis(20)))
                    .unwrap();
            }
            0
        }),
        pid => wait_bounded(pid as libc::pid_t),
    };
    assert!(
        libc::WIFEXITED(code) && libc::WEXITSTATUS(code) == 0,
        "child status {code:#x}"
    );
    let mut n = 0;
    for _ in 0..100 {
        if n == 1 {
            break;
        }
        base.run_once(&mut n, Some(Duration::from_millis(20)))
            .unwrap();
    }
    assert_eq!(
        n, 1,
        "the raw-clone child took the parent's forwarded signal"
    );
}

/// With `SIGCHLD` ignored, the kernel reaps children itself and their status is lost: a child
/// watch could never report its exit. `spawn_child` says so before spawning anything, rather
/// than start a child whose callback never runs.
fn spawn_child_refuses_to_watch_children_while_sigchld_is_ignored() {
    let code = in_child(|| {
        // SAFETY: setting a disposition in the single-threaded child.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
        let mut base = EventBase::<Option<i32>>::new().unwrap();
        let mut command = std::process::Command::new("sleep");
        command.arg("0.1");
        match base.spawn_child(&mut command, |_, code, exit| *code = exit.status.code()) {
            Err(e) if e.to_string().contains("SIGCHLD") => return 0,
            Err(e) => {
                eprintln!("unexpected error: {e}");
                return 1;
            }
            Ok(_) => {}
        }
        base.set_exit_when_empty(true);
        base.exit_after(Duration::from_secs(3));
        let mut code = None;
        base.run(&mut code).unwrap();
        match code {
            Some(0) => 0, // reported after all
            _ => 2,       // the watch never reported the exit
        }
    });
    assert_eq!(
        code, 0,
        "a watch of a child whose status the kernel throws away"
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A base dropped with a running child hands it to a reaper thread; when no thread can start
/// (`RLIMIT_NPROC` for a user that is not root), nothing panics and no fd is left open.
fn base_dropped_with_a_running_child_when_no_thread_can_start_leaks_no_fd() {
    let code = in_child(|| {
        let before = open_fds();
        let mut base = EventBase::<()>::new().unwrap();
        let mut command = std::process::Command::new("sleep");
        command.arg("0.3");
        let child = base.spawn_child(&mut command, |_, _, _| {}).unwrap();
        let pid = child.pid();
        drop(child);
        let limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain calls in the single-threaded child: no new thread or process as
        // nobody from now on.
        unsafe {
            if libc::setrlimit(libc::RLIMIT_NPROC, &limit) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return 3;
            }
        }
        assert!(
            std::thread::Builder::new().spawn(|| {}).is_err(),
            "thread limit not hit"
        );
        drop(base);
        if open_fds() != before {
            eprintln!("fds before {before}, after {}", open_fds());
            return 1;
        }
        // SAFETY: reaping our own child, which nothing else reaps now.
        let reaped = unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
        i32::from(reaped != pid as i32) * 2
    });
    assert_eq!(code, 0);
}
/// Forks while another thread floods the forking thread with a signal a base handles (so the
/// forwarding handler runs on the forking thread, also between the `fork` handlers that hold
/// the registry's and the pipe's locks) and bases come and go: the handler takes no lock, so
/// neither process deadlocks, and every child can handle signals of its own.
fn child_forked_while_signals_flood_the_forking_thread_can_handle_signals_of_its_own() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let loop_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut base = EventBase::<u64>::new().unwrap();
            base.add_signal_handler(libc::SIGUSR1, |_, n, _| *n += 1)
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                base.run_once(&mut n, Some(Duration::from_millis(5)))
                    .unwrap();
                let mut b2 = EventBase::<()>::new().unwrap();
                b2.add_signal_handler(libc::SIGUSR1, |_, _, _| {}).unwrap();
            }
            n
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // SAFETY: blocking SIGUSR1 in this thread, so that `main` (the forking thread, which
            // does not block it) takes what this thread sends to the process.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            while !stop.load(Ordering::SeqCst) {
                // SAFETY: a signal to our own process, which forwards it to the loop.
                unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
                std::thread::sleep(Duration::from_micros(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let mut failures = Vec::new();
    for _ in 0..200 {
        let status = in_child_status(|| {
            let mut base = EventBase::<u32>::new().unwrap();
            base.add_signal_handler(libc::SIGUSR2, |_, n, _| *n += 1)
                .unwrap();
            // SAFETY: a signal to this (single-threaded) child, which now blocks it.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
            let mut n = 0;
            while n == 0 {
                base.run_once(&mut n, Some(Duration::from_millis(100)))
                    .unwrap();
            }
            0
        });
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failures.push(status);
        }
    }
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let n = loop_thread.join().unwrap();
    assert!(failures.is_empty(), "child statuses {failures:#x?}");
    assert!(n > 0, "the loop saw none of the forwarded signals");
}

/// When the watch cannot be installed after the spawn (here: no fd left for the pidfd, the
/// parent's `RLIMIT_NOFILE` lowered by the child before its `exec`), `spawn_child` fails and
/// leaves no child behind: it is killed and reaped, not left running where nobody knows it.
fn spawn_child_that_cannot_watch_its_child_leaves_no_child_behind() {
    use std::os::unix::process::CommandExt;

    let code = in_child(|| {
        let mut base = EventBase::<()>::new().unwrap();
        // The lowest free fd now is the lowest free fd after the spawn (no pipes asked for).
        let lowest_free = {
            let probe = std::fs::File::open("/dev/null").unwrap();
            std::os::fd::AsRawFd::as_raw_fd(&probe) as libc::rlim_t
        };
        let mut command = std::process::Command::new("sleep");
        command.arg("5");
        // SAFETY: prlimit64 and getppid are raw syscalls, async-signal-safe; the limit
        // lives on the child's stack across the call. The parent waits for the exec, so the
        // limit is in place when `spawn` returns.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit64 {
                    rlim_cur: lowest_free,
                    rlim_max: lowest_free,
                };
                libc::syscall(
                    libc::SYS_prlimit64,
                    libc::getppid(),
                    libc::RLIMIT_NOFILE,
                    &limit,
                    std::ptr::null_mut::<libc::rlimit64>(),
                );
                Ok(())
            })
        };
        let spawned = base.spawn_child(&mut command, |_, _, _| {});
        let Err(e) = spawned else {
            return 3; // the limit did not bite: nothing tested
        };
        if aioloop::os_error(&e) != Some(libc::EMFILE) {
            eprintln!("unexpected error: {e}");
            return 4;
        }
        // SAFETY: a non-blocking wait for any child of this process.
        match unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } {
            -1 => 0, // ECHILD: no child left, running or zombie
            _ => 1,
        }
    });
    assert_eq!(code, 0, "spawn_child failed but left its child behind");
}

/// In a child forked while a parent base handled SIGWINCH (so the forwarding handler is
/// inherited), a SIGWINCH taken before the child has a base of its own gets its default action
/// (nothing), which gives the disposition back to `SIG_DFL`. A base the child makes afterwards
/// must still see the SIGWINCHes that a thread of the child not blocking it takes.
fn child_that_took_a_signal_before_its_first_base_still_forwards_it_later() {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let parent_loop = std::thread::spawn(move || {
        let mut base = EventBase::<()>::new().unwrap();
        base.add_signal_handler(libc::SIGWINCH, |_, _, _| {})
            .unwrap();
        ready_tx.send(()).unwrap();
        done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let code = in_child(|| {
        // SAFETY: a signal to this thread, which does not block it.
        unsafe { libc::raise(libc::SIGWINCH) };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut base = EventBase::<u32>::new().unwrap();
            base.add_signal_handler(libc::SIGWINCH, |_, n, _| *n += 1)
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut n = 0;
            let start = std::time::Instant::now();
            while n == 0 && start.elapsed() < Duration::from_secs(3) {
                base.run_once(&mut n, Some(Duration::from_millis(20)))
                    .unwrap();
            }
            n
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // SAFETY: a signal to this process; this thread does not block it.
        unsafe { libc::kill(libc::getpid(), libc::SIGWINCH) };
        i32::from(thread.join().unwrap() == 0)
    });
    done_tx.send(()).unwrap();
    parent_loop.join().unwrap();
    assert_eq!(code, 0, "the child's base never saw SIGWINCH");
}

fn main() {
    let tests: &[(&str, fn())] = &[
        (
            "child_forked_while_signals_flood_the_forking_thread_can_handle_signals_of_its_own",
            child_forked_while_signals_flood_the_forking_thread_can_handle_signals_of_its_own,
        ),
        (
            "forked_child_cannot_run_the_parents_base_and_the_parent_keeps_its_completion",
            forked_child_cannot_run_the_parents_base_and_the_parent_keeps_its_completion,
        ),
        (
            "write_all_at_reports_how_many_bytes_landed_before_an_error",
            write_all_at_reports_how_many_bytes_landed_before_an_error,
        ),
        (
            "forked_child_takes_the_default_action_instead_of_forwarding_to_the_parent",
            forked_child_takes_the_default_action_instead_of_forwarding_to_the_parent,
        ),
        (
            "child_forked_while_another_thread_uses_signals_can_handle_signals_of_its_own",
            child_forked_while_another_thread_uses_signals_can_handle_signals_of_its_own,
        ),
        (
            "child_made_by_a_raw_clone_cannot_run_the_parents_base",
            child_made_by_a_raw_clone_cannot_run_the_parents_base,
        ),
        (
            "child_made_by_a_raw_clone_leaves_the_parents_forwarded_signals_alone",
            child_made_by_a_raw_clone_leaves_the_parents_forwarded_signals_alone,
        ),
        (
            "spawn_child_refuses_to_watch_children_while_sigchld_is_ignored",
            spawn_child_refuses_to_watch_children_while_sigchld_is_ignored,
        ),
        (
            "base_dropped_with_a_running_child_when_no_thread_can_start_leaks_no_fd",
            base_dropped_with_a_running_child_when_no_thread_can_start_leaks_no_fd,
        ),
        (
            "spawn_child_that_cannot_watch_its_child_leaves_no_child_behind",
            spawn_child_that_cannot_watch_its_child_leaves_no_child_behind,
        ),
        (
            "child_that_took_a_signal_before_its_first_base_still_forwards_it_later",
            child_that_took_a_signal_before_its_first_base_still_forwards_it_later,
        ),
    ];
    runner::run(tests);
}
