//! IOLib scenario 12 (P14, P26, the reused-fd probe): fds closed and their numbers reused.
//!
//! These tests rely on the kernel handing out the lowest free fd number, so they live in their
//! own test binary and take turns: no other thread opens fds while one runs.

mod common;

use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

use aioloop::{Direction, EventBase, Handlers, IoEvent, IoOptions};
use common::{drain, pipe, put};

static FD_NUMBERS: Mutex<()> = Mutex::new(());

type Log = Vec<String>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn fd_closed_without_removal_and_reused_can_be_registered_and_works() {
    let _alone = FD_NUMBERS.lock().unwrap_or_else(|e| e.into_inner());
    let (r, w) = pipe();
    let mut base = EventBase::<u32>::new().unwrap();
    base.set_io_handler(&r, Direction::Read, IoOptions::new(), |_, _, _| {
        panic!("stale handler")
    })
    .unwrap();
    let old = r.as_raw_fd();
    drop((r, w));
    let (r2, w2) = pipe();
    assert_eq!(
        r2.as_raw_fd(),
        old,
        "the kernel reuses the lowest free number"
    );
    // The other direction first: IOLib's EPOLL_CTL_MOD got ENOENT here and only warned (P26).
    base.set_io_handler(&w2, Direction::Write, IoOptions::new(), |_, _, _| {})
        .unwrap();
    base.set_io_handler(&r2, Direction::Read, IoOptions::new(), |_, n, ev| {
        *n += 1;
        drain(ev.fd);
    })
    .unwrap();
    put(&w2, b"x");
    let mut n = 0;
    base.run_once(&mut n, Some(ms(1000))).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn stale_event_for_an_fd_closed_and_reused_in_the_same_batch_is_dropped() {
    let _alone = FD_NUMBERS.lock().unwrap_or_else(|e| e.into_inner());
    struct St {
        victim: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
        replacement: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
        calls: Log,
    }
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    put(&w1, b"x");
    put(&w2, b"x");
    let victim_fd = r2.as_raw_fd();
    let mut base = EventBase::<St>::new().unwrap();
    let on_ready = move |base: &mut EventBase<St>, st: &mut St, ev: IoEvent| {
        st.calls.push(format!("old {}", ev.fd));
        if st.victim.is_none() {
            return; // the victim itself ran first; nothing to test in that order
        }
        // Remove and close the other fd, then reuse its number for a new, empty pipe.
        let other = if ev.fd == victim_fd {
            unreachable!()
        } else {
            victim_fd
        };
        base.remove_fd_handlers(&other, Handlers::ALL);
        st.victim = None;
        let (nr, nw) = pipe();
        assert_eq!(nr.as_raw_fd(), other);
        base.set_io_handler(
            &nr,
            Direction::Read,
            IoOptions::new(),
            |_, st: &mut St, ev| {
                st.calls.push(format!("new {}", ev.fd));
            },
        )
        .unwrap();
        st.replacement = Some((nr, nw));
    };
    base.set_io_handler(&r1, Direction::Read, IoOptions::new(), on_ready)
        .unwrap();
    base.set_io_handler(
        &r2,
        Direction::Read,
        IoOptions::new(),
        |_, st: &mut St, ev| {
            st.calls.push(format!("old {}", ev.fd));
        },
    )
    .unwrap();
    let mut st = St {
        victim: Some((r2, w2)),
        replacement: None,
        calls: Log::new(),
    };
    base.run_once(&mut st, Some(ms(1000))).unwrap();
    if st.replacement.is_some() {
        assert_eq!(st.calls, [format!("old {}", r1.as_raw_fd())]);
        // The new pipe is empty: nothing may reach its handler.
        base.run_once(&mut st, Some(ms(50))).unwrap();
        assert_eq!(st.calls.len(), 1, "{:?}", st.calls);
    }
}
