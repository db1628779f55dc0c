//! One test per defect found in review, named for the behaviour it pins down. Signal defects
//! live in `tests/signals.rs` (its `main` blocks the signals first), `fork` in `tests/fork.rs`.

use std::cell::Cell;
use std::fs::OpenOptions;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioloop::{AioFile, AlignedBuf, Direction, EventBase, Handlers, IoOptions, Schedule};

mod common;
use common::data_file;

/// Fails the test instead of hanging it when a run does not return.
fn guard<S>(base: &mut EventBase<S>) {
    base.exit_after(Duration::from_secs(20));
}

/// Queues one read of `file` (cancelled at once if `cancel`), runs with `set_exit_when_empty`,
/// and returns the errno the callback got; fails if the run does not end by itself.
fn errno_of_a_read_that_completes_without_the_kernel(file: &AioFile, cancel: bool) -> Option<i32> {
    let mut base = EventBase::<Option<i32>>::new().unwrap();
    let id = base
        .read_at(
            file,
            0,
            AlignedBuf::new(4096, 4096).unwrap(),
            |_, errno, _, r| {
                *errno = r.unwrap_err().raw_os_error();
            },
        )
        .unwrap();
    if cancel {
        assert!(base.cancel_aio(id));
    }
    base.set_exit_when_empty(true);
    guard(&mut base);
    let started = Instant::now();
    let mut errno = None;
    base.run(&mut errno).unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "the run hung");
    errno
}

#[test]
fn cancelled_queued_read_ends_a_run_with_exit_when_empty() {
    // O_DIRECT: the read waits in the queue for the next poll (a buffered one could be served
    // from the page cache at once).
    let (path, _) = data_file("cancelled-queued", 4096);
    let file = AioFile::open(&path, true).unwrap();
    let errno = errno_of_a_read_that_completes_without_the_kernel(&file, true);
    assert_eq!(errno, Some(libc::ECANCELED));
}

#[test]
fn request_refused_by_io_submit_ends_a_run_with_exit_when_empty() {
    let (path, _) = data_file("refused-by-submit", 4096);
    let write_only = OpenOptions::new().write(true).open(&path).unwrap();
    let file = AioFile::new(write_only).unwrap();
    let errno = errno_of_a_read_that_completes_without_the_kernel(&file, false);
    assert_eq!(errno, Some(libc::EBADF));
}

#[test]
fn run_once_runs_owed_work_without_waiting_for_an_unrelated_timer() {
    let (path, _) = data_file("owed-run-once", 4096);
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<Vec<&str>>::new().unwrap();
    base.add_timer(Duration::from_secs(3), |_, log, _| log.push("timer"));
    let id = base
        .read_at(&file, 0, vec![0; 4096], |_, log, _, _| {
            log.push("cancelled")
        })
        .unwrap();
    base.cancel_aio(id);
    let mut log = Vec::new();
    let mut callbacks = 0;
    while log.is_empty() {
        callbacks += base.run_once(&mut log, None).unwrap();
    }
    assert_eq!(log, ["cancelled"], "run_once waited for the timer");
    assert_eq!(callbacks, 1);
}

/// A value whose `Drop` panics, to put inside a closure the base drops.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("drop panicked");
        }
    }
}

fn assert_base_runs_again(base: &mut EventBase<u32>) {
    base.add_timer(Duration::ZERO, |base, n, _| {
        *n += 1;
        base.exit();
    });
    guard(base);
    let mut n = 0;
    base.run(&mut n)
        .expect("the base refuses to run after the panic");
    assert_eq!(n, 1);
}

#[test]
fn panic_in_the_drop_of_a_self_cancelled_repeating_timer_leaves_the_base_usable() {
    let mut base = EventBase::<u32>::new().unwrap();
    let bomb = PanicOnDrop;
    base.add_repeating_timer(Duration::ZERO, Schedule::FixedRate, move |base, _, me| {
        let _keep = &bomb;
        base.cancel_timer(me);
    });
    let result = panic::catch_unwind(AssertUnwindSafe(|| base.run(&mut 0)));
    assert!(result.is_err(), "the drop's panic propagates");
    assert_base_runs_again(&mut base);
}

#[test]
fn panic_in_the_drop_of_a_self_removed_handler_leaves_the_base_usable() {
    let (a, b) = common::socketpair();
    let mut base = EventBase::<u32>::new().unwrap();
    let bomb = PanicOnDrop;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&b);
    base.set_io_handler(
        &fd,
        Direction::Write,
        IoOptions::new(),
        move |base, _, ev| {
            let _keep = &bomb;
            base.remove_fd_handlers(&ev.fd, Handlers::ALL);
        },
    )
    .unwrap();
    let result = panic::catch_unwind(AssertUnwindSafe(|| base.run(&mut 0)));
    assert!(result.is_err(), "the drop's panic propagates");
    assert!(!base.has_fd_handler(&b, aioloop::HandlerKind::Write));
    assert_base_runs_again(&mut base);
    drop(a);
}

#[test]
fn panic_in_the_drop_of_a_fired_one_shot_timer_leaves_the_base_usable() {
    let mut base = EventBase::<u32>::new().unwrap();
    let fired = Rc::new(Cell::new(false));
    let bomb = PanicOnDrop;
    let seen = fired.clone();
    base.add_timer(Duration::ZERO, move |_, _, _| {
        let _bomb = bomb; // dropped at the end of the callback
        seen.set(true);
    });
    let result = panic::catch_unwind(AssertUnwindSafe(|| base.run(&mut 0)));
    assert!(result.is_err());
    assert!(fired.get());
    assert_base_runs_again(&mut base);
}

#[test]
fn edge_and_level_handlers_on_one_fd_are_refused_with_a_clear_error() {
    let (_a, b) = common::socketpair();
    let mut base = EventBase::<()>::new().unwrap();
    base.set_io_handler(&b, Direction::Read, IoOptions::new().level(), |_, _, _| {})
        .unwrap();
    let err = base
        .set_io_handler(&b, Direction::Write, IoOptions::new().edge(), |_, _, _| {})
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("trigger"), "{err}");
    assert!(!base.has_fd_handler(&b, aioloop::HandlerKind::Write));
    // The same trigger is fine, and so is the other one once the first handler is gone.
    base.set_io_handler(&b, Direction::Write, IoOptions::new().level(), |_, _, _| {})
        .unwrap();
    base.remove_fd_handlers(&b, Handlers::ALL);
    base.set_io_handler(&b, Direction::Read, IoOptions::new().edge(), |_, _, _| {})
        .unwrap();
}

#[test]
fn read_exact_at_on_an_o_direct_file_of_unaligned_size_reports_unexpected_eof() {
    let (path, data) = data_file("direct-unaligned-size", 10_000);
    let file = AioFile::open(&path, true).unwrap();
    let mut base = EventBase::<Option<(std::io::ErrorKind, usize, Vec<u8>)>>::new().unwrap();
    let buf = aioloop::AlignedBuf::new(12_288, 4096).unwrap();
    base.read_exact_at(&file, 0, buf, |_, out, buf, r| {
        let e = r.unwrap_err();
        *out = Some((e.kind(), e.transferred(), buf[..10_000].to_vec()));
    })
    .unwrap();
    base.set_exit_when_empty(true);
    guard(&mut base);
    let mut out = None;
    base.run(&mut out).unwrap();
    let (kind, transferred, got) = out.unwrap();
    assert_eq!(kind, std::io::ErrorKind::UnexpectedEof);
    assert_eq!(transferred, 10_000);
    assert!(got == data, "the bytes before the end are in the buffer");
}

#[test]
fn cancel_of_a_submitted_write_reports_its_real_result() {
    let (path, _) = data_file("cancel-submitted-write", 8192);
    let file = AioFile::new(OpenOptions::new().write(true).open(&path).unwrap()).unwrap();
    let mut base = EventBase::<Option<std::io::Result<usize>>>::new().unwrap();
    let id = base
        .write_at(&file, 0, vec![0xab; 4096], |_, out, _, r| *out = Some(r))
        .unwrap();
    base.submit_aio(); // a buffered write: done inside io_submit
    assert!(!base.cancel_aio(id), "the write already happened");
    base.set_exit_when_empty(true);
    guard(&mut base);
    let mut out = None;
    base.run(&mut out).unwrap();
    assert_eq!(
        out.unwrap().unwrap(),
        4096,
        "the write's outcome was hidden"
    );
    assert!(std::fs::read(&path).unwrap()[..4096]
        .iter()
        .all(|&b| b == 0xab));
}

#[test]
fn panic_in_an_accept_callback_closes_the_listener_and_leaves_the_base_usable() {
    let listener = aioloop::tcp_listener(
        "127.0.0.1:0".parse().unwrap(),
        &aioloop::ListenOptions::new(),
    )
    .unwrap();
    let mut base = EventBase::<u32>::new().unwrap();
    let acceptor = base
        .accept_connections(listener, |_, _, _, _| panic!("bad connection"))
        .unwrap();
    let _client = std::net::TcpStream::connect(acceptor.local_addr().unwrap()).unwrap();
    guard(&mut base);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = base.run(&mut 0);
    }));
    assert!(panicked.is_err());
    assert!(acceptor.local_addr().is_err(), "the listener was closed");
    assert!(!base.stop_accepting(&acceptor));
    assert_base_runs_again(&mut base);
}
