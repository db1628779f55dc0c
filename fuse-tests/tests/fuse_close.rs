//! Closing a FUSE file waits for its server (a `flush`): when a request held the last clone of
//! the file, the close happens on a helper, never on the loop thread.

use std::time::Duration;

use aioloop::{AioFile, EventBase};

mod slowfs;

#[test]
fn the_last_clone_of_a_fuse_file_a_request_held_is_closed_off_the_loop() {
    let slow = match slowfs::SlowFs::mount_or_skip("close", &[("f", 4096)]) {
        Some(slow) => slow,
        None => return,
    };
    let file = AioFile::open(slow.path("f"), false).unwrap();
    let stall = Duration::from_secs(2);
    slow.set_flush_stall(stall);
    let mut base = EventBase::<Option<usize>>::new().unwrap();
    base.read_at(&file, 0, vec![0; 4096], |_, out, _, n| *out = n.ok())
        .unwrap();
    drop(file); // the request holds the last clone now
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(30));
    let mut out = None;
    base.run(&mut out).unwrap();
    assert_eq!(out, Some(4096));
    let hold = base.metrics().longest_hold;
    assert!(hold < stall / 2, "the loop was held {hold:?} by the close");
    assert_eq!(base.metrics().helper_jobs, 2, "the read, then the close");
}
