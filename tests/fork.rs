//! Tests that need a process of their own: a base copied into a child by `fork`, and faults set
//! up with process-wide limits (`RLIMIT_FSIZE`). Each forks; they take turns, so no other test
//! thread is busy when one forks.

use std::time::Duration;

use aioloop::{AioFile, AlignedBuf, EventBase};

mod common;
use common::data_file;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `child` in a forked process and returns its exit code.
fn in_child(child: impl FnOnce() -> i32) -> i32 {
    let status = in_child_status(child);
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    libc::WEXITSTATUS(status)
}

/// Runs `child` in a forked process and returns its wait status.
fn in_child_status(child: impl FnOnce() -> i32) -> i32 {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: this test binary runs one test on one thread; the child only runs `child` and
    // leaves with `_exit`, never returning into the test harness.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
            // SAFETY: leaving the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            status
        }
    }
}

#[test]
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
#[test]
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
#[test]
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
