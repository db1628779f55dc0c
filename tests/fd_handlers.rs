//! fd handler registration errors, readiness reporting and fairness.

mod common;

use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use aioloop::{Direction, EventBase, HandlerKind, Handlers, IoOptions};
use common::{drain, pipe, put, socketpair};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn closed_fd_is_refused_with_ebadf_and_leaves_no_trace() {
    // Not a recently closed fd: other tests run in parallel and would reuse its number.
    let fd = 9_999;
    let mut base = EventBase::<()>::new().unwrap();
    let err = base
        .set_io_handler(&fd, Direction::Read, IoOptions::new(), |_, _, _| {})
        .unwrap_err();
    assert_eq!(aioloop::os_error(&err), Some(libc::EBADF));
    assert!(
        err.to_string().contains("not an open file descriptor"),
        "{err}"
    );
    assert_eq!(base.metrics().fd_handlers, 0);
    assert!(!base.is_alive());
}

#[test]
fn negative_fd_is_invalid_input() {
    let mut base = EventBase::<()>::new().unwrap();
    let err = base
        .set_io_handler(&-1, Direction::Read, IoOptions::new(), |_, _, _| {})
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn same_fd_and_direction_twice_is_refused_and_the_first_handler_stays() {
    let (r, w) = pipe();
    let mut base = EventBase::<u32>::new().unwrap();
    base.set_io_handler(&r, Direction::Read, IoOptions::new(), |_, n, ev| {
        *n += 1;
        drain(ev.fd);
    })
    .unwrap();
    let err = base
        .set_io_handler(
            &r,
            Direction::Read,
            IoOptions::new(),
            |_, _, _| unreachable!(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("remove_fd_handlers"), "{err}");
    put(&w, b"x");
    let mut n = 0;
    base.run_once(&mut n, Some(ms(1000))).unwrap();
    assert_eq!(n, 1);
    assert_eq!(base.metrics().fd_handlers, 1);
}

#[test]
fn error_handler_needs_an_io_handler_and_goes_with_the_last_one() {
    let (a, _b) = socketpair();
    let mut base = EventBase::<()>::new().unwrap();
    let err = base.set_error_handler(&a, |_, _, _| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    base.set_io_handler(&a, Direction::Read, IoOptions::new(), |_, _, _| {})
        .unwrap();
    base.set_error_handler(&a, |_, _, _| {}).unwrap();
    assert_eq!(
        base.set_error_handler(&a, |_, _, _| {}).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert!(base.remove_fd_handlers(&a, Handlers::READ));
    assert!(!base.has_fd_handler(&a, HandlerKind::Error));
    assert_eq!(base.metrics().fd_handlers, 0);
}

#[test]
fn remove_fd_handlers_reports_whether_anything_was_removed() {
    let (a, _b) = socketpair();
    let mut base = EventBase::<()>::new().unwrap();
    assert!(!base.remove_fd_handlers(&a, Handlers::ALL));
    base.set_io_handler(&a, Direction::Read, IoOptions::new(), |_, _, _| {})
        .unwrap();
    base.set_io_handler(&a, Direction::Write, IoOptions::new(), |_, _, _| {})
        .unwrap();
    assert!(!base.remove_fd_handlers(&a, Handlers::ERROR));
    assert!(base.remove_fd_handlers(&a, Handlers::WRITE));
    assert!(base.has_fd_handler(&a, HandlerKind::Read));
    assert!(base.remove_fd_handlers(&a, Handlers::READ | Handlers::WRITE));
    assert!(!base.is_alive());
}

#[test]
fn read_and_write_handlers_on_one_socket_both_run() {
    let (a, b) = socketpair();
    let mut base = EventBase::<Vec<HandlerKind>>::new().unwrap();
    base.set_io_handler(&a, Direction::Read, IoOptions::new(), |_, seen, ev| {
        drain(ev.fd);
        seen.push(ev.kind)
    })
    .unwrap();
    base.set_io_handler(
        &a,
        Direction::Write,
        IoOptions::new().one_shot(),
        |_, seen, ev| seen.push(ev.kind),
    )
    .unwrap();
    (&b).write_all(b"x").unwrap();
    let mut seen = Vec::new();
    base.run_once(&mut seen, Some(ms(1000))).unwrap();
    seen.sort_by_key(|k| *k as u8);
    assert_eq!(seen, [HandlerKind::Read, HandlerKind::Write]);
}

#[test]
fn peer_close_on_a_socket_reports_read_closed() {
    let (a, b) = socketpair();
    let mut base = EventBase::<Vec<aioloop::Readiness>>::new().unwrap();
    base.set_io_handler(&a, Direction::Read, IoOptions::new(), |_, seen, ev| {
        seen.push(ev.ready)
    })
    .unwrap();
    drop(b);
    let mut seen = Vec::new();
    base.run_once(&mut seen, Some(ms(1000))).unwrap();
    assert!(seen[0].is_read_closed(), "{:?}", seen[0]);
}

#[test]
fn level_flood_does_not_starve_other_fds_or_timers() {
    struct St {
        flood: u64,
        quiet: u64,
        timer: bool,
    }
    let (flood_r, flood_w) = pipe();
    put(&flood_w, &[0u8; 4096]); // never drained: ready on every iteration
    let (quiet_r, quiet_w) = pipe();
    let mut base = EventBase::<St>::new().unwrap();
    base.set_io_handler(
        &flood_r,
        Direction::Read,
        IoOptions::new().level(),
        |_, st, _| st.flood += 1,
    )
    .unwrap();
    base.set_io_handler(
        &quiet_r,
        Direction::Read,
        IoOptions::new(),
        |base, st, ev| {
            drain(ev.fd);
            st.quiet += 1;
            if st.timer {
                base.exit();
            }
        },
    )
    .unwrap();
    base.add_timer(ms(20), move |_, st, _| {
        st.timer = true;
        put(&quiet_w, b"x");
    });
    base.exit_after(Duration::from_secs(10));
    let mut st = St {
        flood: 0,
        quiet: 0,
        timer: false,
    };
    base.run(&mut st).unwrap();
    assert!(st.timer && st.quiet == 1, "timer and quiet fd were served");
    assert!(st.flood > 1);
}

#[test]
fn burst_larger_than_the_events_buffer_is_delivered_without_loss() {
    let pairs: Vec<_> = (0..100).map(|_| socketpair()).collect();
    let mut base = EventBase::<usize>::with_capacity(4).unwrap();
    for (a, _) in &pairs {
        base.set_io_handler(a, Direction::Read, IoOptions::new(), |base, n, ev| {
            drain(ev.fd);
            *n += 1;
            if *n == 100 {
                base.exit();
            }
        })
        .unwrap();
    }
    for (_, b) in &pairs {
        (&*b).write_all(b"x").unwrap();
    }
    base.exit_after(Duration::from_secs(10));
    let mut n = 0;
    base.run(&mut n).unwrap();
    assert_eq!(n, 100);
    assert!(base.metrics().polls >= 25, "4 events per poll");
}

#[test]
fn handler_added_during_a_batch_waits_for_the_next_poll() {
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    put(&w1, b"x");
    put(&w2, b"x");
    let r2_fd = r2.as_raw_fd();
    let mut base = EventBase::<Vec<&str>>::new().unwrap();
    base.set_io_handler(
        &r1,
        Direction::Read,
        IoOptions::new(),
        move |base, log, ev| {
            drain(ev.fd);
            log.push("r1");
            base.set_io_handler(
                &r2_fd,
                Direction::Read,
                IoOptions::new(),
                |_, log: &mut Vec<&str>, ev| {
                    drain(ev.fd);
                    log.push("r2");
                },
            )
            .unwrap();
        },
    )
    .unwrap();
    let mut log = Vec::new();
    base.run_once(&mut log, Some(ms(1000))).unwrap();
    assert_eq!(log, ["r1"]);
    base.run_once(&mut log, Some(ms(1000))).unwrap();
    assert_eq!(
        log,
        ["r1", "r2"],
        "its readiness is reported by the next poll"
    );
}

#[test]
fn an_edge_handler_that_stops_at_a_short_read_is_told_of_later_data() {
    // The documented saving (`Trigger::Edge`): on a stream socket a short read has drained
    // it, so skipping the read that would say `WouldBlock` loses nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let mut base = EventBase::<(std::net::TcpStream, Vec<usize>)>::new().unwrap();
    base.set_io_handler(
        &server,
        Direction::Read,
        IoOptions::new(),
        |_, (s, reads), _| {
            let mut buf = [0u8; 64];
            match std::io::Read::read(s, &mut buf) {
                Ok(n) if n < buf.len() => reads.push(n), // drained: stop here
                other => panic!("expected a short read, got {other:?}"),
            }
        },
    )
    .unwrap();
    client.write_all(&[1; 10]).unwrap();
    let mut state = (server, Vec::new());
    base.run_for(&mut state, ms(100)).unwrap();
    assert_eq!(state.1, [10], "one event, one short read");
    client.write_all(&[2; 20]).unwrap();
    base.run_for(&mut state, ms(100)).unwrap();
    assert_eq!(
        state.1,
        [10, 20],
        "data after a short read makes a new edge"
    );
}
