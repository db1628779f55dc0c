//! Heap allocations per dispatched event, counted by a global allocator: readiness events
//! with a repeating timer (none expected), one-shot timers, and `O_DIRECT` reads.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin allocs -- FILE
//! ```
//!
//! Prints `result EVENT TIMER READ`: allocations per readiness-or-repeating-timer callback,
//! per one-shot timer added and fired, and per `read_at` request, each after a warm-up.

#[path = "../../../tests/counting_alloc/mod.rs"]
mod counting_alloc;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use aioloop::{AioFile, AlignedBuf, Direction, EventBase, IoOptions, Schedule};
use counting_alloc::{count, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: u64 = 10_000;

/// A socket pair that keeps itself readable: each callback drains one end and writes a
/// byte into the other, while a zero-interval timer repeats alongside.
fn readiness_events() -> f64 {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    (&b).write_all(b"x").unwrap();
    let mut base = EventBase::<(UnixStream, UnixStream)>::new().unwrap();
    base.set_io_handler(&a, Direction::Read, IoOptions::new(), |_, (a, b), _| {
        let mut buf = [0u8; 64];
        while a.read(&mut buf).is_ok_and(|n| n > 0) {}
        let _ = b.write(b"x");
    })
    .unwrap();
    base.add_repeating_timer(Duration::ZERO, Schedule::FixedRate, |_, _, _| {});
    let mut pair = (a, b);
    let turns = |base: &mut EventBase<_>, pair: &mut _| {
        for _ in 0..N {
            base.run_once(pair, Some(Duration::from_secs(1))).unwrap();
        }
    };
    turns(&mut base, &mut pair);
    let before = base.metrics().callbacks;
    let ((), allocations) = count(|| turns(&mut base, &mut pair));
    allocations as f64 / (base.metrics().callbacks - before) as f64
}

fn one_shot_timers() -> f64 {
    let mut base = EventBase::<u64>::new().unwrap();
    base.set_exit_when_empty(true);
    let mut fired = 0;
    let round = |base: &mut EventBase<u64>, fired: &mut u64| {
        for i in 0..N {
            base.add_timer(Duration::ZERO, move |_, sum, _| *sum += i);
        }
        base.run(fired).unwrap();
    };
    round(&mut base, &mut fired);
    let ((), allocations) = count(|| round(&mut base, &mut fired));
    allocations as f64 / N as f64
}

fn chain(base: &mut EventBase<u64>, file: &AioFile, buf: AlignedBuf) {
    let next = file.clone();
    let submitted = base.read_at(file, 0, buf, move |base, left, buf, n| {
        n.expect("read failed");
        *left -= 1;
        if *left > 0 {
            chain(base, &next, buf);
        }
    });
    assert!(submitted.is_ok(), "read_at refused");
}

fn direct_reads(path: &str) -> f64 {
    let file = AioFile::open(path, true).unwrap();
    let mut base = EventBase::<u64>::new().unwrap();
    base.set_exit_when_empty(true);
    let round = |base: &mut EventBase<u64>| {
        let mut left = N;
        chain(base, &file, AlignedBuf::new(4096, 4096).unwrap());
        base.run(&mut left).unwrap();
    };
    round(&mut base);
    let ((), allocations) = count(|| round(&mut base));
    // The one buffer of the round was allocated outside the requests.
    (allocations.saturating_sub(1)) as f64 / N as f64
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: allocs FILE");
    println!(
        "result {:.3} {:.3} {:.3}",
        readiness_events(),
        one_shot_timers(),
        direct_reads(&path)
    );
}
