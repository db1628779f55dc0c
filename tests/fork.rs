//! A base copied into a child by `fork` refuses to run there, and the parent keeps its events.
//! Its own binary with one test, so the process forks with a single thread.

use std::time::Duration;

use aioloop::{AioFile, AlignedBuf, EventBase};

mod common;
use common::data_file;

/// Runs `child` in a forked process and returns its exit code.
fn in_child(child: impl FnOnce() -> i32) -> i32 {
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
            assert!(libc::WIFEXITED(status), "child status {status:#x}");
            libc::WEXITSTATUS(status)
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
        let ran = base.run(&mut Vec::new());
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
