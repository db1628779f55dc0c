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

#[test]
fn cancelling_a_waiting_close_of_a_fuse_file_never_closes_it_on_the_loop() {
    let slow = match slowfs::SlowFs::mount_or_skip("cancel-close", &[("busy", 4096), ("f", 4096)]) {
        Some(slow) => slow,
        None => return,
    };
    let busy = AioFile::open(slow.path("busy"), false).unwrap();
    let file = AioFile::open(slow.path("f"), false).unwrap();
    let stall = Duration::from_secs(2);
    slow.set_flush_stall(stall);
    slow.set_stall(stall);
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    let options = aioloop::AioOptions::new()
        .helper_threads(2)
        .helpers_per_device(1);
    base.set_aio_options(options).unwrap();
    // A stalled read holds the mount's one helper: the close waits on the loop side.
    base.read_at(&busy, 0, vec![0; 4096], |_, log, _, r| {
        log.push(format!("read {:?}", r.map_err(|e| e.raw_os_error())))
    })
    .unwrap();
    let close = base
        .close(file, |_, log, r| {
            log.push(format!("close {:?}", r.map_err(|e| e.raw_os_error())))
        })
        .unwrap();
    let started = std::time::Instant::now();
    assert!(base.cancel_job(close));
    let took = started.elapsed();
    base.set_exit_when_empty(true);
    let guard = base.exit_after(Duration::from_secs(30));
    let mut log = Vec::new();
    base.run(&mut log).unwrap();
    assert!(base.cancel_timer(guard));
    // Checked once nothing is left in flight, so that a failure cannot leave a FUSE file
    // for the exit to close while the server is gone.
    assert!(took < stall / 2, "cancel_job waited {took:?} for the close");
    let hold = base.metrics().longest_hold;
    assert!(hold < stall / 2, "the loop was held {hold:?} by the close");
    assert!(
        log.contains(&format!("close Err({:?})", Some(libc::ECANCELED))),
        "{log:?}"
    );
}
