//! Cost of one dispatched fd event, edge- vs level-triggered, measured side by side.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin level_vs_edge [EVENTS_PER_ROUND] [ROUNDS]
//! ```
//!
//! Each round runs one base per mode with a single pipe handler that reads one byte and writes
//! one byte back, so the pipe is always ready and both modes do the same I/O: edge gets its
//! next event from the write's new edge, level from the `EPOLL_CTL_MOD` re-arm plus the write.
//! The difference is the price of the re-arm. Rounds alternate modes; medians are reported.

use std::os::fd::RawFd;
use std::time::Instant;

use aioloop::{Direction, EventBase, IoOptions};

fn pipe() -> [RawFd; 2] {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2 failed");
    fds
}

fn ns_per_event(options: IoOptions, events: u64) -> f64 {
    let [r, w] = pipe();
    let mut base = EventBase::<u64>::new().expect("epoll");
    base.set_io_handler(&r, Direction::Read, options, move |base, n, _| {
        let mut byte = [0u8; 1];
        // SAFETY: one-byte buffers that outlive the calls.
        unsafe {
            libc::read(r, byte.as_mut_ptr().cast(), 1);
            libc::write(w, byte.as_ptr().cast(), 1);
        }
        *n += 1;
        if *n == events {
            base.exit();
        }
    })
    .expect("register pipe");
    // SAFETY: a one-byte buffer that outlives the call.
    unsafe { libc::write(w, b"x".as_ptr().cast(), 1) };
    let mut n = 0;
    let start = Instant::now();
    base.run(&mut n).expect("run");
    let elapsed = start.elapsed();
    drop(base);
    // SAFETY: both fds are ours and closed once.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
    elapsed.as_nanos() as f64 / events as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let events = args.next().unwrap_or(200_000);
    let rounds = args.next().unwrap_or(7);
    let (mut edge, mut level) = (Vec::new(), Vec::new());
    ns_per_event(IoOptions::new(), events / 10); // warm-up
    for _ in 0..rounds {
        edge.push(ns_per_event(IoOptions::new().edge(), events));
        level.push(ns_per_event(IoOptions::new().level(), events));
    }
    let (e, l) = (median(&mut edge), median(&mut level));
    println!("events per round {events}, rounds {rounds} (alternating), medians:");
    println!("edge  {e:8.1} ns/event   (rounds: {edge:.0?})");
    println!("level {l:8.1} ns/event   (rounds: {level:.0?})");
    println!(
        "level/edge {:.2}x, re-arm cost {:.0} ns/event",
        l / e,
        l - e
    );
}
