//! The 18 acceptance scenarios of `shared/research/iolib.md` §7, each asserting aioloop's
//! specified behaviour where IOLib's differs. Numbers refer to that list; `P..` to its probes.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aioloop::{
    Direction, EventBase, HandlerKind, Handlers, IoEvent, IoOptions, Readiness, Schedule,
};
use common::{drain, pipe, put, socketpair};

type Log = Vec<String>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// 1. IOLib's own five tests.

#[test]
fn empty_base_with_zero_timeout_returns_at_once() {
    let mut base = EventBase::<()>::new().unwrap();
    let start = Instant::now();
    base.run_for(&mut (), Duration::ZERO).unwrap();
    assert!(start.elapsed() < ms(500));
}

#[test]
fn distant_timer_does_not_fire_under_zero_timeout() {
    let mut base = EventBase::<bool>::new().unwrap();
    base.add_timer(Duration::from_secs(30), |_, fired, _| *fired = true);
    let mut fired = false;
    base.run_for(&mut fired, Duration::ZERO).unwrap();
    assert!(!fired);
}

#[test]
fn zero_delay_timer_fires_in_one_blocking_iteration() {
    let mut base = EventBase::<bool>::new().unwrap();
    base.add_timer(Duration::ZERO, |_, fired, _| *fired = true);
    let mut fired = false;
    assert_eq!(base.run_once(&mut fired, None).unwrap(), 1);
    assert!(fired);
}

#[test]
fn periodic_timer_fires_within_a_timed_run() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_repeating_timer(ms(150), Schedule::FixedRate, |base, n, _| {
        *n += 1;
        base.exit();
    });
    let mut n = 0;
    base.run_for(&mut n, ms(5000)).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn one_shot_handlers_accept_a_connection_and_read_four_bytes() {
    use aioloop::mio::net::{TcpListener, TcpStream};

    #[derive(Default)]
    struct St {
        peer: Option<TcpStream>,
        got: Vec<u8>,
    }
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut base = EventBase::<St>::new().unwrap();
    base.add_timer(Duration::from_secs(5), |_, _, _| {
        panic!("guard timer: test hung")
    });
    let listener_fd = listener.as_raw_fd();
    base.set_io_handler(
        &listener_fd,
        Direction::Read,
        IoOptions::new().one_shot(),
        move |base, st, _| {
            let (peer, _) = listener.accept().unwrap();
            base.set_io_handler(
                &peer,
                Direction::Read,
                IoOptions::new().one_shot(),
                |base, st: &mut St, _| {
                    let mut buf = [0u8; 5];
                    let n = st.peer.as_ref().unwrap().read(&mut buf).unwrap();
                    st.got.extend_from_slice(&buf[..n]);
                    base.exit();
                },
            )
            .unwrap();
            st.peer = Some(peer);
        },
    )
    .unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.write_all(&[1, 2, 3, 4]).unwrap();
    let mut st = St::default();
    base.run(&mut st).unwrap();
    assert!(st.peer.is_some());
    assert_eq!(st.got, [1, 2, 3, 4]);
}

// 2. P1: a handler on a ready fd that is never drained.

fn count_calls_without_draining(options: IoOptions) -> u32 {
    let (r, w) = pipe();
    put(&w, b"x");
    let mut base = EventBase::<u32>::new().unwrap();
    base.set_io_handler(&r, Direction::Read, options, |_, n, _| *n += 1)
        .unwrap();
    let mut calls = 0;
    for _ in 0..3 {
        base.run_once(&mut calls, Some(ms(20))).unwrap();
    }
    calls
}

#[test]
fn edge_handler_on_an_undrained_fd_is_called_once() {
    assert_eq!(count_calls_without_draining(IoOptions::new().edge()), 1);
}

#[test]
fn level_handler_is_called_every_iteration_while_ready() {
    assert_eq!(count_calls_without_draining(IoOptions::new().level()), 3);
}

#[test]
fn level_handler_stops_being_called_once_drained() {
    let (r, w) = pipe();
    put(&w, b"abc");
    let mut base = EventBase::<u32>::new().unwrap();
    let fd = r.as_raw_fd();
    base.set_io_handler(
        &r,
        Direction::Read,
        IoOptions::new().level(),
        move |_, n, _| {
            *n += 1;
            common::take(fd, 1).unwrap(); // one byte per call
        },
    )
    .unwrap();
    let mut calls = 0;
    for _ in 0..6 {
        base.run_once(&mut calls, Some(ms(20))).unwrap();
    }
    assert_eq!(calls, 3);
}

// 3. P2: one-shot handler.

#[test]
fn one_shot_handler_runs_once_and_leaves_the_base_empty() {
    let (r, w) = pipe();
    put(&w, b"x");
    let mut base = EventBase::<u32>::new().unwrap();
    base.set_io_handler(
        &r,
        Direction::Read,
        IoOptions::new().one_shot(),
        |_, n, _| *n += 1,
    )
    .unwrap();
    base.set_exit_when_empty(true);
    let mut calls = 0;
    base.run(&mut calls).unwrap();
    assert_eq!(calls, 1);
    assert!(!base.has_fd_handler(&r, HandlerKind::Read));
    assert!(!base.is_alive());
    assert_eq!(base.metrics().fd_handlers, 0);
}

// 4. P3, P9: inactivity timeouts.

#[test]
fn inactivity_timeout_counts_from_the_last_dispatched_event() {
    struct St {
        data_at: Option<Instant>,
        timeout_at: Option<Instant>,
    }
    let (r, w) = pipe();
    let timeout = ms(300);
    let mut base = EventBase::<St>::new().unwrap();
    let fd = r.as_raw_fd();
    base.set_io_handler(
        &r,
        Direction::Read,
        IoOptions::new().timeout(timeout),
        move |base, st, ev| {
            if ev.ready.is_timeout() {
                st.timeout_at = Some(Instant::now());
                base.exit();
            } else {
                drain(fd);
                // Inactivity counts from the poll that harvested the event: the loop time.
                st.data_at = Some(base.now());
            }
        },
    )
    .unwrap();
    base.add_timer(ms(150), move |_, _, _| put(&w, b"x"));
    let mut st = St {
        data_at: None,
        timeout_at: None,
    };
    base.run(&mut st).unwrap();
    let (data_at, timeout_at) = (st.data_at.unwrap(), st.timeout_at.unwrap());
    assert!(
        timeout_at >= data_at + timeout,
        "timeout came {:?} after data",
        timeout_at - data_at
    );
}

#[test]
fn persistent_handler_timeout_repeats_and_the_handler_stays() {
    let (r, _w) = pipe();
    let mut base = EventBase::<u32>::new().unwrap();
    base.set_io_handler(
        &r,
        Direction::Read,
        IoOptions::new().timeout(ms(20)),
        |base, n, ev| {
            assert_eq!(ev.ready, Readiness::TIMEOUT);
            *n += 1;
            if *n == 3 {
                base.exit();
            }
        },
    )
    .unwrap();
    let mut n = 0;
    base.run(&mut n).unwrap();
    assert_eq!(n, 3);
    assert!(base.has_fd_handler(&r, HandlerKind::Read));
}

#[test]
fn one_shot_handler_is_removed_on_its_timeout() {
    let (r, _w) = pipe();
    let mut base = EventBase::<Vec<Readiness>>::new().unwrap();
    let options = IoOptions::new().one_shot().timeout(ms(20));
    base.set_io_handler(&r, Direction::Read, options, |base, seen, ev| {
        seen.push(ev.ready);
        assert!(!base.has_fd_handler(&ev.fd, HandlerKind::Read));
    })
    .unwrap();
    base.set_exit_when_empty(true);
    let mut seen = Vec::new();
    base.run(&mut seen).unwrap();
    assert_eq!(seen, [Readiness::TIMEOUT]);
}

// 5. P4.

#[test]
fn periodic_timer_can_cancel_itself() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_repeating_timer(ms(5), Schedule::FixedRate, |base, n, me| {
        *n += 1;
        assert!(base.cancel_timer(me));
    });
    let mut n = 0;
    base.run_for(&mut n, ms(100)).unwrap();
    assert_eq!(n, 1);
    assert_eq!(base.metrics().timers, 0);
}

// 6. P6.

#[test]
fn timers_due_together_fire_in_insertion_order() {
    let mut base = EventBase::<Vec<u32>>::new().unwrap();
    for i in 0..10 {
        base.add_timer(Duration::ZERO, move |_, order, _| order.push(i));
    }
    std::thread::sleep(ms(2));
    let mut order = Vec::new();
    base.run_once(&mut order, Some(Duration::ZERO)).unwrap();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
}

// 7. P7, P21.

#[test]
fn exit_takes_effect_right_after_the_current_callback_and_nothing_is_lost() {
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    put(&w1, b"x");
    put(&w2, b"x");
    let mut base = EventBase::<Log>::new().unwrap();
    for r in [&r1, &r2] {
        base.set_io_handler(r, Direction::Read, IoOptions::new(), |base, log, ev| {
            log.push(format!("fd {}", ev.fd));
            base.exit();
        })
        .unwrap();
    }
    let mut log = Log::new();
    base.run(&mut log).unwrap();
    assert_eq!(
        log.len(),
        1,
        "exit must stop before the second handler: {log:?}"
    );
    base.run(&mut log).unwrap();
    assert_eq!(
        log.len(),
        2,
        "the second edge must survive the exit: {log:?}"
    );
}

#[test]
fn exit_called_between_runs_does_not_leak_into_the_next_run() {
    let mut base = EventBase::<bool>::new().unwrap();
    base.exit();
    base.add_timer(ms(30), |base, fired, _| {
        *fired = true;
        base.exit();
    });
    let mut fired = false;
    base.run_for(&mut fired, Duration::from_secs(5)).unwrap();
    assert!(fired);
}

// 8. P8, P8b, P8c.

#[test]
fn one_shot_handler_reinstalls_itself_while_the_other_direction_has_a_handler() {
    let (a, b) = socketpair();
    let mut base = EventBase::<u32>::new().unwrap();
    base.set_io_handler(&a, Direction::Write, IoOptions::new(), |_, _, _| {})
        .unwrap();
    fn on_read(base: &mut EventBase<u32>, n: &mut u32, ev: IoEvent) {
        *n += 1;
        drain(ev.fd);
        base.set_io_handler(
            &ev.fd,
            Direction::Read,
            IoOptions::new().one_shot(),
            on_read,
        )
        .expect("re-register from inside a one-shot callback");
    }
    base.set_io_handler(&a, Direction::Read, IoOptions::new().one_shot(), on_read)
        .unwrap();
    let mut n = 0;
    for round in 1..=3 {
        (&b).write_all(b"ping").unwrap();
        base.run_once(&mut n, Some(ms(1000))).unwrap();
        assert_eq!(n, round);
        assert!(base.has_fd_handler(&a, HandlerKind::Read));
        assert!(base.has_fd_handler(&a, HandlerKind::Write));
    }
}

// 9. P10, P28.

#[test]
fn panicking_handler_is_removed_and_the_base_stays_usable() {
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    let mut base = EventBase::<Log>::new().unwrap();
    base.set_io_handler(&r1, Direction::Read, IoOptions::new(), |_, _, _| {
        panic!("boom")
    })
    .unwrap();
    base.set_io_handler(&r2, Direction::Read, IoOptions::new(), |_, log, ev| {
        log.push("r2".into());
        drain(ev.fd);
    })
    .unwrap();
    put(&w1, b"x");
    put(&w2, b"x");
    let mut log = Log::new();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while log.is_empty() {
            base.run_once(&mut log, Some(ms(1000))).unwrap();
        }
    }));
    if panicked.is_err() {
        // r1 panicked first: it is gone, r2's harvested event is still owed.
        assert!(!base.has_fd_handler(&r1, HandlerKind::Read));
        base.run_once(&mut log, Some(ms(1000))).unwrap();
    } else {
        // r2 ran first; r1 panics now.
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            base.run_once(&mut log, Some(ms(1000))).unwrap();
        }));
        assert!(again.is_err());
    }
    assert_eq!(log, ["r2"]);
    assert!(!base.has_fd_handler(&r1, HandlerKind::Read));
    assert!(base.has_fd_handler(&r2, HandlerKind::Read));
    put(&w2, b"y");
    base.run_once(&mut log, Some(ms(1000))).unwrap();
    assert_eq!(log, ["r2", "r2"]);
}

#[test]
fn panicking_periodic_timer_is_removed_and_other_timers_survive() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_repeating_timer(ms(1), Schedule::FixedRate, |_, _, _| panic!("tick"));
    base.add_repeating_timer(ms(1), Schedule::FixedRate, |base, n, _| {
        *n += 1;
        if *n == 3 {
            base.exit();
        }
    });
    let mut n = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| base.run(&mut n)));
    assert!(result.is_err());
    assert_eq!(base.metrics().timers, 1);
    base.run(&mut n).unwrap();
    assert_eq!(n, 3);
}

// 10. P12.

#[test]
fn exit_when_empty_returns_at_once_even_with_a_time_limit() {
    let mut base = EventBase::<()>::new().unwrap();
    base.set_exit_when_empty(true);
    let start = Instant::now();
    base.run_for(&mut (), Duration::from_secs(10)).unwrap();
    assert!(start.elapsed() < ms(1000));
}

// 11. P13a, P13b.

#[test]
fn hangup_on_a_pipe_read_end_reports_read_closed_and_keeps_the_handler() {
    let (r, w) = pipe();
    drop(w);
    let mut base = EventBase::<Vec<Readiness>>::new().unwrap();
    base.set_io_handler(&r, Direction::Read, IoOptions::new(), |_, seen, ev| {
        seen.push(ev.ready)
    })
    .unwrap();
    let mut seen = Vec::new();
    base.run_once(&mut seen, Some(ms(1000))).unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].is_read_closed(), "{:?}", seen[0]);
    assert!(!seen[0].is_error(), "{:?}", seen[0]);
    assert!(base.has_fd_handler(&r, HandlerKind::Read));
}

#[test]
fn closed_reader_under_a_pipe_writer_reports_error_to_write_then_error_handler() {
    let (r, w) = pipe();
    let mut base = EventBase::<Log>::new().unwrap();
    base.set_io_handler(&w, Direction::Write, IoOptions::new(), |_, log, ev| {
        log.push(format!("{:?} error={}", ev.kind, ev.ready.is_error()));
    })
    .unwrap();
    base.set_error_handler(&w, |_, log, ev| {
        log.push(format!("{:?} error={}", ev.kind, ev.ready.is_error()))
    })
    .unwrap();
    let mut log = Log::new();
    base.run_once(&mut log, Some(ms(1000))).unwrap();
    assert_eq!(log, ["Write error=false"]);
    drop(r);
    base.run_once(&mut log, Some(ms(1000))).unwrap();
    assert_eq!(log[1..], ["Write error=true", "Error error=true"]);
    assert!(
        base.has_fd_handler(&w, HandlerKind::Write),
        "handlers are not removed on error"
    );
    assert!(base.has_fd_handler(&w, HandlerKind::Error));
}

// 12. P14, P26 and the reused-fd probe: tests/fd_reuse.rs (they need fd numbers to themselves).

// 13. P15.

#[test]
fn registering_a_regular_file_fails_clearly_and_leaves_no_trace() {
    let file = std::fs::File::open("Cargo.toml").unwrap();
    let mut base = EventBase::<()>::new().unwrap();
    let err = base
        .set_io_handler(&file, Direction::Read, IoOptions::new(), |_, _, _| {})
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert_eq!(aioloop::os_error(&err), Some(libc::EPERM));
    assert!(err.to_string().contains("regular files"), "{err}");
    assert!(!base.has_fd_handler(&file, HandlerKind::Read));
    assert_eq!(base.metrics().fd_handlers, 0);
    assert!(!base.is_alive());
}

// 14. P16: no write throttling option; a throttled writer is a timer plus a one-shot handler.

#[test]
fn throttled_writer_built_from_a_timer_does_not_spin() {
    let (a, _b) = socketpair();
    let mut base = EventBase::<u32>::new().unwrap();
    let fd = a.as_raw_fd();
    base.add_repeating_timer(ms(20), Schedule::FixedRate, move |base, n, me| {
        base.set_io_handler(
            &fd,
            Direction::Write,
            IoOptions::new().one_shot(),
            |_, n: &mut u32, ev| {
                put(&ev.fd, b"tick");
                *n += 1;
            },
        )
        .unwrap();
        if *n == 4 {
            base.cancel_timer(me);
        }
    });
    base.set_exit_when_empty(true);
    let mut n = 0;
    base.run(&mut n).unwrap();
    assert_eq!(n, 5);
    let polls = base.metrics().polls;
    assert!(polls <= 20, "{polls} polls for 5 throttled writes");
}

// 15. P18, P19'.

#[test]
fn callback_removing_another_ready_handler_prevents_its_call() {
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    put(&w1, b"x");
    put(&w2, b"x");
    let fds = [r1.as_raw_fd(), r2.as_raw_fd()];
    let mut base = EventBase::<Log>::new().unwrap();
    for fd in fds {
        base.set_io_handler(
            &fd,
            Direction::Read,
            IoOptions::new(),
            move |base, log, ev| {
                log.push(format!("{}", ev.fd));
                let other = if ev.fd == fds[0] { fds[1] } else { fds[0] };
                base.remove_fd_handlers(&other, Handlers::ALL);
            },
        )
        .unwrap();
    }
    let mut log = Log::new();
    base.run_once(&mut log, Some(ms(1000))).unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
}

#[test]
fn timeout_callback_removing_another_timed_out_handler_prevents_its_timeout() {
    let (r1, _w1) = pipe();
    let (r2, _w2) = pipe();
    let fds = [r1.as_raw_fd(), r2.as_raw_fd()];
    let mut base = EventBase::<Log>::new().unwrap();
    for fd in fds {
        base.set_io_handler(
            &fd,
            Direction::Read,
            IoOptions::new().timeout(ms(10)),
            move |base, log, ev| {
                log.push(format!("{} {:?}", ev.fd, ev.ready));
                let other = if ev.fd == fds[0] { fds[1] } else { fds[0] };
                base.remove_fd_handlers(&other, Handlers::ALL);
            },
        )
        .unwrap();
    }
    std::thread::sleep(ms(30)); // both timeouts are due in the same pass
    let mut log = Log::new();
    base.run_once(&mut log, Some(ms(1000))).unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    base.run_for(&mut log, ms(40)).unwrap();
    assert!(log.len() >= 2, "the survivor keeps timing out: {log:?}");
    assert!(
        log.iter().all(|l| *l == log[0]),
        "only the survivor: {log:?}"
    );
}

// 16. P20.

#[test]
fn io_events_run_before_due_timers_in_an_iteration() {
    let (r, w) = pipe();
    let mut base = EventBase::<Log>::new().unwrap();
    base.add_timer(Duration::ZERO, |_, log, _| log.push("timer".into()));
    base.set_io_handler(&r, Direction::Read, IoOptions::new(), |_, log, _| {
        log.push("fd".into())
    })
    .unwrap();
    put(&w, b"x");
    let mut log = Log::new();
    base.run_once(&mut log, Some(ms(1000))).unwrap();
    assert_eq!(log, ["fd", "timer"]);
}

// 17. P25.

#[test]
fn one_timer_costs_one_or_two_polls() {
    let mut base = EventBase::<u32>::new().unwrap();
    let added = Instant::now();
    base.add_timer(ms(200), move |_, _, _| assert!(added.elapsed() >= ms(200)));
    base.set_exit_when_empty(true);
    base.run(&mut 0).unwrap();
    let polls = base.metrics().polls;
    assert!((1..=2).contains(&polls), "{polls} polls for one timer");
}

// 18. Heap probe: handler timeouts after activity on one handler still fire in deadline order.

#[test]
fn handler_timeouts_fire_in_deadline_order_after_activity_on_one_handler() {
    struct St {
        last_activity: Vec<Instant>,
        fired: Vec<(usize, Instant)>,
    }
    let pipes: Vec<_> = (0..7).map(|_| pipe()).collect();
    let timeout_of = |i: usize| ms(100 + 20 * i as u64);
    let start = Instant::now();
    let mut base = EventBase::<St>::new().unwrap();
    for (i, (r, _)) in pipes.iter().enumerate() {
        let options = IoOptions::new().timeout(timeout_of(i));
        base.set_io_handler(r, Direction::Read, options, move |base, st, ev| {
            if ev.ready.is_timeout() {
                st.fired.push((i, Instant::now()));
                base.remove_fd_handlers(&ev.fd, Handlers::ALL);
            } else {
                drain(ev.fd);
                // Inactivity counts from the poll that harvested the event: the loop time.
                st.last_activity[i] = base.now();
            }
        })
        .unwrap();
    }
    // Activity on handler 1, a non-root entry of the deadline heap, pushes its deadline past
    // several others.
    let w1 = pipes[1].1.as_raw_fd();
    base.add_timer(ms(50), move |_, _, _| put(&w1, b"x"));
    base.set_exit_when_empty(true);
    let mut st = St {
        last_activity: vec![start; 7],
        fired: Vec::new(),
    };
    base.run(&mut st).unwrap();
    assert_eq!(st.fired.len(), 7);
    assert!(st.last_activity[1] > start, "the data event was dispatched");
    let due = |i: usize| st.last_activity[i] + timeout_of(i);
    for &(i, at) in &st.fired {
        assert!(at >= due(i), "handler {i} timed out early");
    }
    let order: Vec<usize> = st.fired.iter().map(|&(i, _)| i).collect();
    let mut by_deadline = order.clone();
    by_deadline.sort_by_key(|&i| due(i));
    assert_eq!(order, by_deadline);
}
