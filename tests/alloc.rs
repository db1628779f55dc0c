//! Steady-state dispatch allocates nothing: counted by a global allocator, per thread.

mod common;
mod counting_alloc;

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use aioloop::{Direction, EventBase, IoOptions, Schedule};
use common::{pipe, put, socketpair};
use counting_alloc::{count, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn drain_on_stack(fd: RawFd) {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

#[test]
fn steady_state_dispatch_of_fds_and_timers_does_not_allocate() {
    let (a, b) = socketpair();
    let (level_r, level_w) = pipe();
    put(&level_w, b"x"); // never drained: the level handler re-arms every iteration
    let writer = b.as_raw_fd();
    let mut base = EventBase::<u64>::new().unwrap();
    let edge = IoOptions::new().timeout(Duration::from_secs(60));
    base.set_io_handler(&a, Direction::Read, edge, |_, n, ev| {
        drain_on_stack(ev.fd);
        *n += 1;
    })
    .unwrap();
    base.set_io_handler(
        &level_r,
        Direction::Read,
        IoOptions::new().level(),
        |_, n, _| *n += 1,
    )
    .unwrap();
    base.add_repeating_timer(Duration::ZERO, Schedule::FixedRate, move |_, n, _| {
        put(&writer, b"x");
        *n += 1;
    });
    let mut n = 0;
    for _ in 0..100 {
        base.run_once(&mut n, Some(Duration::from_secs(1))).unwrap();
    }
    let before = base.metrics().callbacks;
    let ((), allocations) = count(|| {
        for _ in 0..1000 {
            base.run_once(&mut n, Some(Duration::from_secs(1))).unwrap();
        }
    });
    let dispatched = base.metrics().callbacks - before;
    assert!(
        dispatched >= 2500,
        "{dispatched} callbacks in 1000 iterations"
    );
    assert_eq!(allocations, 0, "allocations while dispatching");
}

#[test]
fn steady_state_echo_on_a_connection_does_not_allocate() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut base = EventBase::<u64>::new().unwrap();
    let options = aioloop::ConnOptions::new().idle_timeout(Duration::from_secs(60));
    base.add_conn(ours, options, |base, n, id, event| {
        if let aioloop::ConnEvent::Data(bytes) = event {
            let _ = base.conn_write(id, bytes);
            *n += 1;
        }
    })
    .unwrap();
    let mut n = 0;
    let mut round_trip = |base: &mut EventBase<u64>, n: &mut u64| {
        let mut echo = [0u8; 64];
        theirs.write_all(&[7; 64]).unwrap();
        base.run_once(n, Some(Duration::from_secs(1))).unwrap();
        theirs.read_exact(&mut echo).unwrap();
    };
    for _ in 0..100 {
        round_trip(&mut base, &mut n);
    }
    let ((), allocations) = count(|| {
        for _ in 0..1000 {
            round_trip(&mut base, &mut n);
        }
    });
    assert_eq!(n, 1100);
    assert_eq!(allocations, 0, "allocations while echoing");
}

#[test]
fn one_shot_timers_with_closures_of_one_word_do_not_allocate() {
    let mut base = EventBase::<u64>::new().unwrap();
    base.set_exit_when_empty(true);
    let round = |base: &mut EventBase<u64>, n: &mut u64| {
        for i in 0..1000u64 {
            base.add_timer(Duration::ZERO, move |_, sum, _| *sum += i);
        }
        let cancelled = base.add_timer(Duration::from_secs(60), |_, _, _| unreachable!());
        base.cancel_timer(cancelled);
        base.run(n).unwrap();
    };
    let mut n = 0;
    for _ in 0..3 {
        round(&mut base, &mut n); // the table and the near-term heap grow to their size
    }
    let ((), allocations) = count(|| {
        for _ in 0..5 {
            round(&mut base, &mut n);
        }
    });
    assert_eq!(n, 8 * 499_500);
    // A boxed callback would be 5000; the near-term heap, reused, may still grow once if a
    // round happens to put more timers in it at once than any before.
    assert!(
        allocations <= 1,
        "{allocations} allocations for 5000 one-shot timers"
    );
}

#[test]
fn timers_reserved_ahead_are_added_and_cancelled_without_allocating() {
    let mut base = EventBase::<u64>::new().unwrap();
    base.reserve_timers(10_000);
    let mut ids = Vec::with_capacity(10_000);
    let ((), allocations) = count(|| {
        for i in 0..10_000u64 {
            let delay = Duration::from_micros(500 + i * 97 % 1_000_000);
            ids.push(base.add_timer(delay, move |_, sum, _| *sum += i));
        }
        for id in ids.drain(..) {
            assert!(base.cancel_timer(id));
        }
    });
    assert_eq!(allocations, 0, "allocations adding reserved timers");
}
