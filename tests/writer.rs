//! Buffered writers on real sockets, against a slow reader and a reader that goes away.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use aioloop::{EventBase, WriteStatus, WriterEvent, WriterId, WriterOptions};

/// A connected TCP pair on 127.0.0.1: (our non-blocking end, the peer's blocking end), with
/// 64 KiB socket buffers, so that a slow reader makes the writer queue soon.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    set_buffer(&ours, libc::SO_SNDBUF);
    set_buffer(&theirs, libc::SO_RCVBUF);
    (ours, theirs)
}

fn set_buffer(socket: &TcpStream, option: i32) {
    let size: libc::c_int = 64 << 10;
    // SAFETY: a c_int option value that outlives the call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) >> 3) as u8
}

const TOTAL: usize = 8 << 20;
const PIECE: usize = 64 << 10;
const HIGH: usize = 256 << 10;

#[derive(Default)]
struct Producer {
    writer: Option<WriterId>,
    sent: usize,
    most_queued: usize,
    fulls: u32,
    drains: u32,
    finished: bool,
}

/// Writes pieces until the writer is full or everything is queued; then finishes.
fn produce(base: &mut EventBase<Producer>, p: &mut Producer) {
    let writer = p.writer.unwrap();
    while p.sent < TOTAL {
        let piece: Vec<u8> = (p.sent..p.sent + PIECE).map(pattern).collect();
        p.sent += PIECE;
        let status = match p.sent / PIECE % 3 {
            0 => base.write_owned(writer, piece).unwrap(),
            1 => base.write(writer, &piece).unwrap(),
            _ => {
                let (head, rest) = piece.split_at(100);
                let (middle, tail) = rest.split_at(PIECE / 2);
                base.write_vectored(writer, &[head, middle, tail]).unwrap()
            }
        };
        p.most_queued = p.most_queued.max(base.writer_queued(writer));
        if status == WriteStatus::Full {
            p.fulls += 1;
            return;
        }
    }
    base.finish_writer(writer).unwrap();
}

#[test]
fn writer_under_a_slow_reader_pauses_the_producer_and_delivers_every_byte_in_order() {
    let (ours, mut theirs) = tcp_pair();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(TOTAL);
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match theirs.read(&mut buf).unwrap() {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
            if got.len() < TOTAL / 4 {
                std::thread::sleep(Duration::from_millis(1)); // slow at first
            }
        }
    });
    let mut base = EventBase::<Producer>::new().unwrap();
    let options = WriterOptions::new().high_water(HIGH);
    let writer = base
        .add_writer(&ours, options, |base, p, event| match event {
            WriterEvent::Drained => {
                p.drains += 1;
                produce(base, p);
            }
            WriterEvent::Finished => p.finished = true,
            other => panic!("{other:?}"),
        })
        .unwrap();
    let mut p = Producer {
        writer: Some(writer),
        ..Producer::default()
    };
    produce(&mut base, &mut p);
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(60));
    base.run(&mut p).unwrap();
    assert!(p.finished, "the writer did not finish");
    drop(ours);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), TOTAL);
    assert!(
        got.iter().enumerate().all(|(i, &b)| b == pattern(i)),
        "bytes out of order"
    );
    assert!(
        p.fulls > 0 && p.drains == p.fulls,
        "fulls {} drains {}",
        p.fulls,
        p.drains
    );
    assert!(
        p.most_queued <= HIGH + PIECE,
        "queued up to {}",
        p.most_queued
    );
    assert_eq!(base.writer_queued(writer), 0);
    assert!(
        base.write(writer, b"late").is_err(),
        "a finished writer is gone"
    );
}

#[test]
fn writer_whose_reader_vanished_reports_the_error_once_and_goes_away() {
    let (ours, theirs) = tcp_pair();
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    let writer = base
        .add_writer(&ours, WriterOptions::new(), |_, log, event| {
            log.push(format!("{event:?}"));
        })
        .unwrap();
    // Fill the socket buffers so that the rest must wait in the queue.
    while base.writer_queued(writer) == 0 {
        let _ = base.write(writer, &[7u8; 64 << 10]).unwrap();
    }
    drop(theirs); // the peer resets the connection: it had unread data
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(20));
    let mut log = Vec::new();
    base.run(&mut log).unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].starts_with("Failed("), "{log:?}");
    assert!(base.write(writer, b"x").is_err());
    assert_eq!(base.remove_writer(writer), None);
}

/// Writes to `writer`, whose peer is gone, until one fails: the first may be taken (the
/// peer answers it with a reset), then `EPIPE` or `ECONNRESET`.
fn assert_writes_fail_with_epipe<S>(base: &mut EventBase<S>, writer: WriterId) {
    let failed = (0..10).find_map(|_| base.write(writer, b"ping").err());
    let err = failed.expect("writes to a closed peer kept succeeding");
    assert!(
        matches!(
            aioloop::os_error(&err),
            Some(libc::EPIPE | libc::ECONNRESET)
        ),
        "{err}"
    );
}

#[test]
fn write_to_a_closed_peer_fails_at_once_and_write_after_finish_is_refused() {
    let (ours, theirs) = tcp_pair();
    let mut base = EventBase::<()>::new().unwrap();
    let writer = base
        .add_writer(&ours, WriterOptions::new(), |_, _, _| {})
        .unwrap();
    assert!(base
        .add_writer(&ours, WriterOptions::new(), |_, _, _| {})
        .is_err());
    base.finish_writer(writer).unwrap();
    let err = base.write(writer, b"x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(base.remove_writer(writer), Some(0));

    let writer = base
        .add_writer(&ours, WriterOptions::new(), |_, _, _| {})
        .unwrap();
    drop(theirs);
    std::thread::sleep(Duration::from_millis(50));
    assert_writes_fail_with_epipe(&mut base, writer);
    assert_eq!(
        base.remove_writer(writer),
        None,
        "a failed write removes the writer"
    );
}

/// Run by `a_gone_peer_gives_epipe_even_where_sigpipe_would_kill`, in a child process whose
/// `SIGPIPE` has its default action (death), as in a program whose `main` is not Rust's.
#[test]
#[ignore = "run by a_gone_peer_gives_epipe_even_where_sigpipe_would_kill"]
fn writer_with_default_sigpipe() {
    if std::env::var_os("AIOLOOP_DEFAULT_SIGPIPE").is_none() {
        return;
    }
    // SAFETY: restores the default disposition of SIGPIPE; no handler is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let (ours, theirs) = tcp_pair();
    drop(theirs);
    std::thread::sleep(Duration::from_millis(50));
    let mut base = EventBase::<()>::new().unwrap();
    let writer = base
        .add_writer(&ours, WriterOptions::new(), |_, _, _| {})
        .unwrap();
    assert_writes_fail_with_epipe(&mut base, writer);
}

#[test]
fn a_gone_peer_gives_epipe_even_where_sigpipe_would_kill() {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_with_default_sigpipe",
            "--ignored",
            "--test-threads=1",
        ])
        .env("AIOLOOP_DEFAULT_SIGPIPE", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the writer's process died: {status:?}");
}

#[test]
fn add_writer_refuses_a_blocking_socket() {
    let (ours, _theirs) = tcp_pair();
    ours.set_nonblocking(false).unwrap();
    let mut base = EventBase::<()>::new().unwrap();
    let err = base
        .add_writer(&ours, WriterOptions::new(), |_, _, _| {})
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("blocking"), "{err}");
}

#[test]
fn removing_the_fds_handlers_ends_its_writer_with_an_event_and_its_queue() {
    use aioloop::{Direction, Handlers, IoOptions};
    let (ours, _theirs) = tcp_pair();
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    base.set_io_handler(&ours, Direction::Read, IoOptions::new(), |_, _, _| {})
        .unwrap();
    let writer = base
        .add_writer(&ours, WriterOptions::new(), |_, log, event| {
            log.push(format!("{event:?}"))
        })
        .unwrap();
    while base.writer_queued(writer) == 0 {
        let _ = base.write(writer, &[7u8; 64 << 10]).unwrap();
    }
    assert!(base.remove_fd_handlers(&ours, Handlers::ALL));
    assert_eq!(base.writer_queued(writer), 0);
    assert!(base.write(writer, b"x").is_err(), "the writer lives on");
    let mut log = Vec::new();
    base.run_for(&mut log, Duration::from_millis(50)).unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].contains("NotConnected"), "{log:?}");
}

#[test]
fn a_level_read_handler_is_accepted_while_the_writer_waits_for_room_and_the_queue_flushes() {
    use aioloop::{Direction, IoOptions};
    let (ours, mut theirs) = tcp_pair();
    let mut base = EventBase::<bool>::new().unwrap();
    let writer = base
        .add_writer(&ours, WriterOptions::new(), |_, finished, event| {
            *finished = matches!(event, WriterEvent::Finished)
        })
        .unwrap();
    let mut sent = 0;
    while base.writer_queued(writer) == 0 {
        let _ = base.write(writer, &[7u8; 64 << 10]).unwrap();
        sent += 64 << 10;
    }
    // The writer's own (edge) write handler is installed now: a level read handler must not
    // be refused for it.
    base.set_io_handler(
        &ours,
        Direction::Read,
        IoOptions::new().level(),
        |_, _, _| {},
    )
    .unwrap();
    base.finish_writer(writer).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        let mut buf = vec![0u8; 64 << 10];
        while got < sent {
            got += theirs.read(&mut buf).unwrap();
        }
        got
    });
    let mut finished = false;
    for _ in 0..2000 {
        base.run_once(&mut finished, Some(Duration::from_millis(10)))
            .unwrap();
        if finished {
            break;
        }
    }
    assert!(finished);
    assert_eq!(reader.join().unwrap(), sent);
}

#[test]
fn a_failed_direct_write_is_told_to_the_callback_as_well() {
    let (ours, theirs) = tcp_pair();
    drop(theirs);
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    let writer = base
        .add_writer(&ours, WriterOptions::new(), |_, log, event| {
            log.push(format!("{event:?}"))
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_writes_fail_with_epipe(&mut base, writer);
    let mut log = Vec::new();
    base.run_for(&mut log, Duration::from_millis(50)).unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].starts_with("Failed("), "{log:?}");
}
