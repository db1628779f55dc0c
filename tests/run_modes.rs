//! Run modes, exit, liveness (ref/unref), embedding and re-entrancy.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aioloop::{Direction, EventBase, IoOptions};
use common::{pipe, put};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn nonblocking_iteration_on_an_idle_base_runs_nothing() {
    let mut base = EventBase::<()>::new().unwrap();
    base.add_timer(Duration::from_secs(60), |_, _, _| {});
    let start = Instant::now();
    assert_eq!(base.run_once(&mut (), Some(Duration::ZERO)).unwrap(), 0);
    assert!(start.elapsed() < ms(500));
}

#[test]
fn blocking_iteration_waits_for_the_earliest_timer() {
    let mut base = EventBase::<u32>::new().unwrap();
    let start = Instant::now();
    base.add_timer(ms(30), |_, n, _| *n += 1);
    let mut n = 0;
    while n == 0 {
        base.run_once(&mut n, None).unwrap();
    }
    assert!(start.elapsed() >= ms(30));
}

#[test]
fn run_once_with_a_timeout_returns_after_it() {
    let mut base = EventBase::<()>::new().unwrap();
    let start = Instant::now();
    assert_eq!(base.run_once(&mut (), Some(ms(30))).unwrap(), 0);
    assert!(start.elapsed() >= ms(30));
}

#[test]
fn run_for_stops_after_its_duration() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_repeating_timer(ms(5), aioloop::Schedule::FixedRate, |_, n, _| *n += 1);
    let start = Instant::now();
    let mut n = 0;
    base.run_for(&mut n, ms(60)).unwrap();
    assert!(start.elapsed() >= ms(60));
    assert!(n >= 5, "{n} ticks");
}

#[test]
fn exit_after_stops_the_loop_and_does_not_keep_it_alive() {
    let mut base = EventBase::<()>::new().unwrap();
    let start = Instant::now();
    base.exit_after(ms(40));
    base.run(&mut ()).unwrap();
    assert!(start.elapsed() >= ms(40));
    assert!(!base.is_alive());
}

#[test]
fn cancelled_exit_after_does_not_stop_the_loop() {
    let mut base = EventBase::<bool>::new().unwrap();
    let exit = base.exit_after(ms(10));
    assert!(base.cancel_timer(exit));
    base.add_timer(ms(40), |base, done, _| {
        *done = true;
        base.exit();
    });
    let mut done = false;
    base.run(&mut done).unwrap();
    assert!(done);
}

#[test]
fn exit_when_empty_ends_the_run_once_the_last_handler_goes() {
    let (r, w) = pipe();
    let mut base = EventBase::<u32>::new().unwrap();
    base.set_io_handler(&r, Direction::Read, IoOptions::new(), |base, n, ev| {
        *n += 1;
        base.remove_fd_handlers(&ev.fd, aioloop::Handlers::ALL);
    })
    .unwrap();
    base.add_timer(ms(10), move |_, _, _| put(&w, b"x"));
    base.set_exit_when_empty(true);
    let mut n = 0;
    base.run(&mut n).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn unrefd_timer_does_not_keep_the_loop_alive_but_fires_while_it_runs() {
    let mut base = EventBase::<Vec<&str>>::new().unwrap();
    let background = base.add_repeating_timer(ms(5), aioloop::Schedule::FixedRate, |_, log, _| {
        log.push("background")
    });
    assert!(base.set_timer_ref(background, false));
    base.set_exit_when_empty(true);
    let mut log = Vec::new();
    base.run(&mut log).unwrap();
    assert!(log.is_empty(), "nothing referenced: the run ends at once");
    base.add_timer(ms(30), |_, log, _| log.push("work"));
    base.run(&mut log).unwrap();
    assert_eq!(log.last(), Some(&"work"));
    assert!(log.contains(&"background"));
}

#[test]
fn unrefd_fd_does_not_keep_the_loop_alive() {
    let (r, _w) = pipe();
    let mut base = EventBase::<()>::new().unwrap();
    base.set_io_handler(&r, Direction::Read, IoOptions::new(), |_, _, _| {})
        .unwrap();
    assert!(base.is_alive());
    assert!(base.set_fd_ref(&r, false));
    assert!(!base.is_alive());
    base.set_exit_when_empty(true);
    let start = Instant::now();
    base.run(&mut ()).unwrap();
    assert!(start.elapsed() < ms(500));
    assert!(!base.set_fd_ref(&12345, false), "no handler on that fd");
}

#[test]
fn running_the_loop_from_inside_a_callback_is_an_error() {
    let mut base = EventBase::<Option<std::io::Error>>::new().unwrap();
    base.add_timer(Duration::ZERO, |base, seen, _| {
        *seen = base.run_once(&mut None, Some(Duration::ZERO)).err();
    });
    let mut seen = None;
    base.run_once(&mut seen, None).unwrap();
    let err = seen.expect("nested run must fail");
    assert!(err.to_string().contains("not re-entrant"), "{err}");
    // ...and the outer base still works.
    base.add_timer(Duration::ZERO, |_, _, _| {});
    assert_eq!(base.run_once(&mut None, None).unwrap(), 1);
}

#[test]
fn embedded_loop_is_driven_by_its_epoll_fd_and_next_timeout() {
    let (r, w) = pipe();
    let mut base = EventBase::<Vec<&str>>::new().unwrap();
    assert_eq!(base.next_timeout(), None, "nothing to wait for but events");
    base.add_timer(ms(1000), |_, _, _| {});
    let timeout = base.next_timeout().unwrap();
    assert!(timeout > ms(900) && timeout <= ms(1000), "{timeout:?}");
    base.set_io_handler(&r, Direction::Read, IoOptions::new(), |_, log, ev| {
        common::drain(ev.fd);
        log.push("read");
    })
    .unwrap();
    put(&w, b"x");
    // The outer loop: poll(2) on the inner epoll fd with the inner timeout.
    let mut pfd = libc::pollfd {
        fd: base.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let wait_ms = base.next_timeout().map_or(-1, |t| t.as_millis() as i32);
    // SAFETY: `pfd` is one valid pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
    assert_eq!(n, 1);
    let mut log = Vec::new();
    base.run_once(&mut log, Some(Duration::ZERO)).unwrap();
    assert_eq!(log, ["read"]);
}

#[test]
fn loop_time_is_sampled_after_the_poll() {
    let mut base = EventBase::<()>::new().unwrap();
    base.run_once(&mut (), Some(ms(20))).unwrap();
    let after = Instant::now();
    assert!(base.now() <= after && after - base.now() < ms(500));
}

#[test]
fn metrics_count_iterations_callbacks_handlers_and_poll_time() {
    let (r, _w) = pipe();
    let mut base = EventBase::<()>::new().unwrap();
    base.set_io_handler(&r, Direction::Read, IoOptions::new(), |_, _, _| {})
        .unwrap();
    base.add_timer(ms(20), |_, _, _| {});
    base.add_timer(Duration::from_secs(60), |_, _, _| {});
    let before = base.metrics();
    assert_eq!((before.fd_handlers, before.timers), (1, 2));
    base.run_for(&mut (), ms(40)).unwrap();
    let m = base.metrics();
    assert_eq!(m.callbacks, 1);
    assert_eq!(m.timers, 1);
    assert!(m.iterations >= 1 && m.polls >= 1);
    assert!(m.poll_time >= ms(30), "{:?} blocked", m.poll_time);
}

#[test]
fn error_from_a_callback_ends_the_run_and_comes_back_from_run_once_only() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_timer(Duration::ZERO, |base, calls, _| {
        *calls += 1;
        base.exit_with_error(std::io::Error::other("first"));
        base.exit_with_error(std::io::Error::other("second"));
    });
    base.add_timer(Duration::ZERO, |_, calls, _| *calls += 10);
    let mut calls = 0;
    let err = base.run(&mut calls).unwrap_err();
    assert_eq!(err.to_string(), "first");
    assert_eq!(calls, 1, "the run stopped right after the failing callback");
    // The error is not sticky, and what was owed runs in the next run.
    base.set_exit_when_empty(true);
    base.run(&mut calls).unwrap();
    assert_eq!(calls, 11);
    base.exit_with_error(std::io::Error::other("outside a run"));
    base.run(&mut calls).unwrap();
}
