//! A base dropped while a helper is stuck in a stalled FUSE read: the process still exits at
//! once (what the base keeps is in `docs/aio.md`).

use std::path::Path;
use std::time::{Duration, Instant};

use aioloop::{AioFile, EventBase};

#[path = "../../tests/common/mod.rs"]
mod common;
mod slowfs;

use common::in_child;

/// A base dropped while its helper waits on a FUSE read that stalls far longer than the test
/// keeps the request's buffer and file (leaked, see `docs/aio.md`) and the detached helper;
/// the process still exits at once.
#[test]
fn exit_is_never_stuck_on_a_helper_in_a_stalled_fuse_read() {
    let slow = match slowfs::SlowFs::mount_or_skip("refusal-exit", &[("big", 1 << 20)]) {
        Some(slow) => slow,
        None => return,
    };
    let path = slow.path("big");
    let file = AioFile::open(&path, false).unwrap();
    slow.set_stall(Duration::from_secs(30));
    let started = Instant::now();
    let code = in_child(20, || stalled_read_then_exit(&file, &path));
    let took = started.elapsed();
    slow.set_stall(Duration::ZERO);
    assert_eq!(code, 0);
    assert!(
        took < Duration::from_secs(15),
        "the exit waited {took:?} for the stalled read"
    );
}

fn stalled_read_then_exit(file: &AioFile, _path: &Path) -> i32 {
    let mut base = EventBase::<()>::new().unwrap();
    base.read_at(file, 0, vec![0; 1 << 20], |_, _, _, _| {})
        .unwrap();
    // Let the helper enter the stalled read, then drop the base under it.
    base.run_for(&mut (), Duration::from_millis(200)).unwrap();
    if base.metrics().helper_jobs != 0 {
        return 20;
    }
    drop(base);
    // A normal exit (atexit handlers, stdio flush) with the helper still in the read.
    std::process::exit(0)
}
