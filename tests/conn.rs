//! Connections the loop owns (`EventBase::add_conn`, `serve`): reads, the peer's end of
//! stream, back-pressure, finishing, deadlines, close, ids, accept and shutdown, on real
//! sockets.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

mod common;

use aioloop::{ConnEvent, ConnId, ConnOptions, ConnTimeout, EventBase, Schedule, WriteStatus};

/// A connected TCP pair on 127.0.0.1: (ours, the peer's blocking end).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let theirs = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (ours, theirs)
}

fn set_buffer(fd: &impl AsRawFd, option: i32, size: libc::c_int) {
    // SAFETY: a c_int option value that outlives the call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[derive(Default)]
struct Log {
    data: Vec<u8>,
    events: Vec<String>,
    closed: Option<Result<(), std::io::ErrorKind>>,
    ids: Vec<ConnId>,
}

/// An echo handler that finishes at the peer's end of stream and records what it hears.
fn echo(base: &mut EventBase<Log>, log: &mut Log, id: ConnId, event: ConnEvent<'_>) {
    match event {
        ConnEvent::Data(bytes) => {
            log.data.extend_from_slice(bytes);
            let _ = base.conn_write(id, bytes);
        }
        ConnEvent::PeerShutdown => {
            log.events.push("peer shutdown".into());
            base.conn_finish(id).unwrap();
        }
        ConnEvent::Closed(result) => {
            log.closed = Some(result.map_err(|e| e.kind()));
            base.exit();
        }
        ConnEvent::Opened => log.ids.push(id),
        other => log.events.push(format!("{other:?}")),
    }
}

#[test]
fn data_and_end_of_stream_sent_in_one_go_close_the_connection_at_once() {
    // The FIN arrives with the data, in one edge: a short read must not end the reading.
    let (ours, mut theirs) = tcp_pair();
    let mut base = EventBase::new().unwrap();
    base.add_conn(
        ours,
        ConnOptions::new().idle_timeout(Duration::from_secs(30)),
        echo,
    )
    .unwrap();
    theirs.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    theirs.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(50)); // let data and FIN queue up together
    let started = Instant::now();
    let mut log = Log::default();
    base.run_for(&mut log, Duration::from_secs(10)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "held until a timeout"
    );
    assert_eq!(log.closed, Some(Ok(())));
    assert_eq!(log.events, ["peer shutdown"]);
    let mut echoed = Vec::new();
    theirs.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn a_half_closed_peer_receives_the_whole_answer() {
    const ANSWER: usize = 8 << 20;
    let (ours, mut theirs) = tcp_pair();
    let mut base = EventBase::<Log>::new().unwrap();
    base.add_conn(
        ours,
        ConnOptions::new(),
        |base, log, id, event| match event {
            ConnEvent::PeerShutdown => {
                let body: Vec<u8> = (0..ANSWER).map(|i| (i % 251) as u8).collect();
                let _ = base.conn_write_owned(id, body);
                base.conn_finish(id).unwrap();
            }
            ConnEvent::Closed(result) => {
                log.closed = Some(result.map_err(|e| e.kind()));
                base.exit();
            }
            _ => {}
        },
    )
    .unwrap();
    theirs.write_all(b"request").unwrap();
    theirs.shutdown(Shutdown::Write).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        got
    });
    let mut log = Log::default();
    base.run_for(&mut log, Duration::from_secs(20)).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), ANSWER);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    assert_eq!(log.closed, Some(Ok(())));
}

#[test]
fn a_peer_that_never_reads_stops_the_reading_at_the_high_mark_and_memory_stays_bounded() {
    const HIGH: usize = 256 << 10;
    const SENT: usize = 16 << 20;
    let (ours, theirs) = tcp_pair();
    set_buffer(&ours, libc::SO_SNDBUF, 64 << 10);
    set_buffer(&ours, libc::SO_RCVBUF, 64 << 10);
    let mut base = EventBase::<(usize, usize)>::new().unwrap();
    let options = ConnOptions::new().high_water(HIGH);
    base.add_conn(ours, options, |base, (read, most), id, event| {
        if let ConnEvent::Data(bytes) = event {
            *read += bytes.len();
            let _ = base.conn_write(id, bytes);
            *most = (*most).max(base.conn_queued(id));
        }
    })
    .unwrap();
    // The peer writes 16 MiB and reads nothing back.
    let mut writer = theirs.try_clone().unwrap();
    writer.set_nonblocking(true).unwrap();
    let block = vec![7u8; 64 << 10];
    let mut stats = (0, 0);
    let mut written = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while written < SENT && Instant::now() < deadline {
        match writer.write(&block) {
            Ok(n) => written += n,
            Err(_) => base.run_for(&mut stats, Duration::from_millis(5)).unwrap(),
        }
    }
    base.run_for(&mut stats, Duration::from_millis(100))
        .unwrap();
    let (read, most) = stats;
    assert!(
        written < SENT,
        "the peer could write all 16 MiB: nothing pushed back"
    );
    assert!(most <= HIGH + (64 << 10), "queue grew to {most} bytes");
    assert!(
        read <= HIGH + (1 << 20),
        "read {read} bytes while the peer read nothing"
    );
}

#[test]
fn reading_resumes_at_the_low_mark_and_every_byte_is_echoed_in_order() {
    const TOTAL: usize = 4 << 20;
    let (ours, theirs) = tcp_pair();
    set_buffer(&ours, libc::SO_SNDBUF, 64 << 10);
    let mut base = EventBase::<Log>::new().unwrap();
    base.add_conn(ours, ConnOptions::new().high_water(128 << 10), echo)
        .unwrap();
    let mut writer = theirs.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 253) as u8).collect();
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = theirs;
    let drain = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            std::thread::sleep(Duration::from_micros(200)); // a slow reader
            match reader.read(&mut chunk) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let mut log = Log::default();
    base.run_for(&mut log, Duration::from_secs(30)).unwrap();
    feeder.join().unwrap();
    let got = drain.join().unwrap();
    assert_eq!(log.closed, Some(Ok(())));
    assert!(
        log.events.iter().any(|e| e == "Drained"),
        "{:?}",
        log.events
    );
    assert_eq!(got.len(), TOTAL);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8));
}

#[test]
fn a_connection_that_never_reads_its_input_hears_the_peer_leave() {
    let (ours, theirs) = tcp_pair();
    let mut base = EventBase::<Log>::new().unwrap();
    base.add_conn(ours, ConnOptions::new(), |base, log, _, event| {
        if let ConnEvent::PeerShutdown = event {
            log.events.push("peer shutdown".into());
            base.exit();
        }
    })
    .unwrap();
    drop(theirs);
    let mut log = Log::default();
    base.run_for(&mut log, Duration::from_secs(10)).unwrap();
    assert_eq!(log.events, ["peer shutdown"]);
}

#[test]
fn a_failed_write_is_told_once_as_closed_with_the_error() {
    let (ours, theirs) = tcp_pair();
    let mut base = EventBase::<Log>::new().unwrap();
    let id = base.add_conn(ours, ConnOptions::new(), echo).unwrap();
    // A reset: SO_LINGER 0 makes close send RST.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the linger value outlives the call, with its size.
    unsafe {
        libc::setsockopt(
            theirs.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(theirs);
    std::thread::sleep(Duration::from_millis(20));
    let mut log = Log::default();
    for _ in 0..3 {
        let _ = base.conn_write(id, b"hello");
    }
    base.run_for(&mut log, Duration::from_secs(10)).unwrap();
    assert!(matches!(log.closed, Some(Err(_))), "{:?}", log.closed);
    assert!(!base.conn_is_open(id));
    assert_eq!(
        base.conn_write(id, b"x").unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}

#[test]
fn a_silent_connection_times_out_and_a_slow_steady_reader_does_not() {
    const ANSWER: usize = 2 << 20;
    let (silent, _silent_peer) = tcp_pair();
    let (busy, slow_peer) = tcp_pair();
    set_buffer(&busy, libc::SO_SNDBUF, 16 << 10);
    set_buffer(&slow_peer, libc::SO_RCVBUF, 16 << 10);
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    let options = ConnOptions::new().idle_timeout(Duration::from_millis(300));
    let record = |name: &'static str| {
        move |base: &mut EventBase<Vec<String>>,
              log: &mut Vec<String>,
              _: ConnId,
              event: ConnEvent<'_>| match event {
            ConnEvent::Timeout(which) => log.push(format!("{name} {which:?}")),
            ConnEvent::Closed(r) => {
                log.push(format!("{name} closed {:?}", r.map_err(|e| e.kind())));
                if log.iter().filter(|l| l.contains("closed")).count() == 2 {
                    base.exit();
                }
            }
            _ => {}
        }
    };
    base.add_conn(silent, options, record("silent")).unwrap();
    let busy = base.add_conn(busy, options, record("busy")).unwrap();
    let _ = base.conn_write_owned(busy, vec![1u8; ANSWER]);
    base.conn_finish(busy).unwrap();
    // Reads 2 MiB in ~1.2 s, some bytes every 10 ms: slow, never idle for 300 ms.
    let reader = std::thread::spawn(move || {
        let mut peer = slow_peer;
        let (mut got, mut chunk) = (0, vec![0u8; 20 << 10]);
        loop {
            std::thread::sleep(Duration::from_millis(10));
            match peer.read(&mut chunk) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
        }
    });
    let mut log = Vec::new();
    base.run_for(&mut log, Duration::from_secs(20)).unwrap();
    assert_eq!(reader.join().unwrap(), ANSWER);
    assert!(log.contains(&"silent Idle".to_string()), "{log:?}");
    assert!(
        log.contains(&"silent closed Err(TimedOut)".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"busy closed Ok(())".to_string()), "{log:?}");
    assert!(!log.contains(&"busy Idle".to_string()), "{log:?}");
}

#[test]
fn a_deadline_fires_despite_activity_and_conn_keep_keeps_the_connection() {
    let (ours, mut theirs) = tcp_pair();
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    let id = base
        .add_conn(
            ours,
            ConnOptions::new(),
            |base, log, id, event| match event {
                ConnEvent::Timeout(ConnTimeout::Deadline) if log.is_empty() => {
                    log.push("kept".into());
                    base.conn_keep(id);
                    base.conn_set_deadline(id, Some(Duration::from_millis(50)));
                }
                ConnEvent::Timeout(which) => log.push(format!("{which:?}")),
                ConnEvent::Closed(r) => {
                    log.push(format!("closed {:?}", r.map_err(|e| e.kind())));
                    base.exit();
                }
                _ => {}
            },
        )
        .unwrap();
    base.conn_set_deadline(id, Some(Duration::from_millis(100)));
    let trickle = std::thread::spawn(move || {
        for _ in 0..20 {
            if theirs.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let mut log = Vec::new();
    base.run_for(&mut log, Duration::from_secs(10)).unwrap();
    trickle.join().unwrap();
    assert_eq!(log, ["kept", "Deadline", "closed Err(TimedOut)"]);
}

#[test]
fn close_removes_handler_queue_timers_and_fd_at_once_and_the_id_dies_with_it() {
    let (ours, mut theirs) = tcp_pair();
    set_buffer(&ours, libc::SO_SNDBUF, 16 << 10);
    let mut base = EventBase::<Log>::new().unwrap();
    let options = ConnOptions::new().idle_timeout(Duration::from_secs(60));
    let before = base.metrics();
    let id = base.add_conn(ours, options, echo).unwrap();
    base.conn_set_deadline(id, Some(Duration::from_secs(60)));
    let _ = base.conn_write_owned(id, vec![0u8; 4 << 20]);
    assert!(base.conn_queued(id) > 0);
    assert!(base.conn_close(id).unwrap() > 0);
    let after = base.metrics();
    assert_eq!(
        (after.fd_handlers, after.timers),
        (before.fd_handlers, before.timers)
    );
    assert!(!base.is_alive());
    // The peer sees the end (after the bytes that left), not a writer that lives on.
    let mut sink = Vec::new();
    let _ = theirs.read_to_end(&mut sink);
    // A new connection takes the same slot (and maybe fd number); the old id reaches nothing.
    let (again, _peer) = tcp_pair();
    let new = base.add_conn(again, ConnOptions::new(), echo).unwrap();
    assert_ne!(new, id);
    assert!(base.conn_write(id, b"meant for the old one").is_err());
    assert_eq!(base.conn_close(id), None);
    assert_eq!(base.conn_queued(new), 0);
}

#[test]
fn finishing_while_the_peer_still_sends_delivers_the_whole_answer_without_a_reset() {
    const ANSWER: usize = 4 << 20;
    let (ours, mut theirs) = tcp_pair();
    let mut base = EventBase::<Log>::new().unwrap();
    base.add_conn(
        ours,
        ConnOptions::new(),
        |base, log, id, event| match event {
            ConnEvent::Data(_) if !log.events.iter().any(|e| e == "answered") => {
                log.events.push("answered".into());
                let _ = base.conn_write_owned(id, vec![9u8; ANSWER]);
                base.conn_finish(id).unwrap();
            }
            ConnEvent::Closed(r) => {
                log.closed = Some(r.map_err(|e| e.kind()));
                base.exit();
            }
            _ => {}
        },
    )
    .unwrap();
    // A pipelining client: a request, and more it will never see answered.
    theirs.write_all(b"first request").unwrap();
    let mut client = theirs.try_clone().unwrap();
    let pusher = std::thread::spawn(move || {
        for _ in 0..50 {
            if client.write_all(&[1u8; 1024]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let mut got = Vec::new();
        let _ = theirs.read_to_end(&mut got);
        got.len()
    });
    let mut log = Log::default();
    base.run_for(&mut log, Duration::from_secs(20)).unwrap();
    pusher.join().unwrap();
    assert_eq!(reader.join().unwrap(), ANSWER);
    assert_eq!(log.closed, Some(Ok(())));
}

#[test]
fn serve_accepts_unix_and_tcp_listeners_and_says_who_connected() {
    let dir = std::env::temp_dir().join(format!("aioloop-conn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let unix = UnixListener::bind(&path).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    let handler = |base: &mut EventBase<Vec<String>>,
                   log: &mut Vec<String>,
                   id: ConnId,
                   event: ConnEvent<'_>| match event {
        ConnEvent::Opened => log.push(format!("opened {}", base.conn_peer(id).is_some())),
        ConnEvent::Data(bytes) => drop(base.conn_write(id, bytes)),
        ConnEvent::PeerShutdown => drop(base.conn_finish(id)),
        ConnEvent::Closed(_) => {
            log.push("closed".into());
            if log.len() == 4 {
                base.exit();
            }
        }
        _ => {}
    };
    base.serve(unix, ConnOptions::new(), handler).unwrap();
    base.serve(tcp, ConnOptions::new().nodelay(true), handler)
        .unwrap();
    let client = std::thread::spawn(move || {
        let mut u = UnixStream::connect(&path).unwrap();
        u.write_all(b"unix").unwrap();
        u.shutdown(Shutdown::Write).unwrap();
        let mut t = TcpStream::connect(tcp_addr).unwrap();
        t.write_all(b"tcp").unwrap();
        t.shutdown(Shutdown::Write).unwrap();
        let (mut a, mut b) = (String::new(), String::new());
        u.read_to_string(&mut a).unwrap();
        t.read_to_string(&mut b).unwrap();
        (a, b)
    });
    let mut log = Vec::new();
    base.run_for(&mut log, Duration::from_secs(10)).unwrap();
    assert_eq!(client.join().unwrap(), ("unix".into(), "tcp".into()));
    log.sort();
    assert_eq!(log, ["closed", "closed", "opened false", "opened true"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_acceptor_under_its_fd_reserve_waits_and_accepts_once_the_reserve_is_lowered() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut base = EventBase::<u32>::new().unwrap();
    let acceptor = base
        .serve(tcp, ConnOptions::new(), |_, opened: &mut u32, _, event| {
            if let ConnEvent::Opened = event {
                *opened += 1;
            }
        })
        .unwrap();
    acceptor.set_fd_reserve(u32::MAX); // more than any RLIMIT_NOFILE leaves free
    let _client = TcpStream::connect(addr).unwrap();
    let mut opened = 0;
    base.run_for(&mut opened, Duration::from_millis(200))
        .unwrap();
    assert_eq!(opened, 0);
    assert!(acceptor.is_backing_off());
    acceptor.set_fd_reserve(16);
    base.run_for(&mut opened, Duration::from_secs(2)).unwrap();
    assert_eq!(opened, 1);
}

#[test]
fn shut_down_stops_accepting_finishes_every_connection_and_ends_the_run() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut base = EventBase::<Vec<ConnId>>::new().unwrap();
    base.serve(tcp, ConnOptions::new(), |base, open, id, event| {
        if let ConnEvent::Opened = event {
            open.push(id);
            let _ = base.conn_write(id, b"welcome\n");
            if open.len() == 3 {
                base.shut_down(Duration::from_secs(10));
            }
        }
    })
    .unwrap();
    let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let started = Instant::now();
    let mut open = Vec::new();
    base.run_for(&mut open, Duration::from_secs(20)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the grace period"
    );
    assert_eq!(base.conn_count(), 0);
    for mut client in clients {
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert_eq!(got, "welcome\n");
    }
    assert!(TcpStream::connect(addr).is_err(), "still accepting");
}

#[test]
fn conn_write_full_means_the_queue_is_over_the_high_mark() {
    let (ours, _theirs) = tcp_pair();
    set_buffer(&ours, libc::SO_SNDBUF, 16 << 10);
    let mut base = EventBase::<()>::new().unwrap();
    let id = base
        .add_conn(
            ours,
            ConnOptions::new().high_water(64 << 10),
            |_, _, _, _| {},
        )
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(base.conn_write(id, &[0u8; 32 << 10]).unwrap());
    }
    assert_eq!(statuses.first(), Some(&WriteStatus::Open));
    assert_eq!(statuses.last(), Some(&WriteStatus::Full));
}

#[test]
fn a_handler_that_panics_on_data_closes_its_connection_and_the_base_goes_on() {
    let (ours, mut theirs) = tcp_pair();
    let (other, mut other_peer) = tcp_pair();
    let mut base = EventBase::<Log>::new().unwrap();
    let id = base
        .add_conn(ours, ConnOptions::new(), |_, _, _, event| {
            if let ConnEvent::Data(_) = event {
                panic!("handler bug");
            }
        })
        .unwrap();
    let other = base.add_conn(other, ConnOptions::new(), echo).unwrap();
    theirs.write_all(b"boom").unwrap();
    let mut log = Log::default();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        base.run_for(&mut log, Duration::from_secs(5))
    }));
    assert!(outcome.is_err(), "the panic did not propagate");
    assert!(!base.conn_is_open(id));
    let mut rest = Vec::new();
    theirs.read_to_end(&mut rest).unwrap(); // closed: EOF, not a hang
    assert!(base.conn_is_open(other));
    other_peer.write_all(b"still served").unwrap();
    other_peer.shutdown(Shutdown::Write).unwrap();
    base.run_for(&mut log, Duration::from_secs(5)).unwrap();
    let mut got = Vec::new();
    other_peer.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"still served");
}

#[test]
fn a_deadline_set_while_lingering_leaves_the_linger_time_in_charge() {
    // The peer takes the answer but never closes: the linger time must end the connection,
    // whatever the handler does with its deadline meanwhile.
    for deadline in [None, Some(Duration::from_secs(60))] {
        let (ours, mut theirs) = tcp_pair();
        let mut base = EventBase::<Log>::new().unwrap();
        let options = ConnOptions::new().linger(Duration::from_millis(100));
        let id = base.add_conn(ours, options, echo).unwrap();
        assert_eq!(base.conn_write(id, b"answer").unwrap(), WriteStatus::Open);
        base.conn_finish(id).unwrap();
        let mut answer = [0u8; 6];
        theirs.read_exact(&mut answer).unwrap();
        // The answer is out and the write side shut: the connection lingers now.
        base.add_timer(Duration::from_millis(20), move |base, _, _| {
            base.conn_set_deadline(id, deadline);
        });
        let mut log = Log::default();
        base.run_for(&mut log, Duration::from_secs(5)).unwrap();
        assert_eq!(log.closed, Some(Ok(())), "{deadline:?}: {:?}", log.events);
        assert!(!base.conn_is_open(id));
    }
}

#[test]
fn add_conn_refuses_a_listening_socket_and_a_datagram_socket_with_a_clear_error() {
    let mut base = EventBase::<Log>::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = base
        .add_conn(listener, ConnOptions::new(), echo)
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("listening"), "{e}");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let e = base.add_conn(udp, ConnOptions::new(), echo).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("stream"), "{e}");
    assert_eq!((base.conn_count(), base.metrics().fd_handlers), (0, 0));
    // Any stream fd that is not a socket (a pipe) is a connection.
    let (read, write) = common::pipe();
    let mut write = std::fs::File::from(write);
    let reader = |base: &mut EventBase<Log>, log: &mut Log, id, event: ConnEvent<'_>| match event {
        ConnEvent::Data(bytes) => log.data.extend_from_slice(bytes),
        ConnEvent::PeerShutdown => {
            log.events.push("peer shutdown".into());
            base.conn_close(id);
        }
        _ => {}
    };
    base.add_conn(read, ConnOptions::new(), reader).unwrap();
    write.write_all(b"through a pipe").unwrap();
    drop(write);
    let mut log = Log::default();
    base.run_for(&mut log, Duration::from_secs(5)).unwrap();
    assert_eq!(log.data, b"through a pipe");
    assert_eq!(log.events, ["peer shutdown"]);
}

#[test]
fn a_connection_whose_answer_is_out_when_the_grace_period_ends_closes_ok() {
    // Its answer is out and its write side shut; only the peer's close is awaited (lingering).
    let (ours, mut theirs) = tcp_pair();
    let mut base = EventBase::<Log>::new().unwrap();
    let options = ConnOptions::new().linger(Duration::from_secs(60));
    let id = base.add_conn(ours, options, echo).unwrap();
    assert_eq!(base.conn_write(id, b"answer").unwrap(), WriteStatus::Open);
    base.conn_finish(id).unwrap();
    let mut answer = [0u8; 6];
    theirs.read_exact(&mut answer).unwrap();
    base.add_timer(Duration::from_millis(20), |base, _, _| {
        base.shut_down(Duration::from_millis(100))
    });
    let mut log = Log::default();
    base.run_for(&mut log, Duration::from_secs(10)).unwrap();
    assert_eq!(log.closed, Some(Ok(())));
    assert_eq!(base.conn_count(), 0);
}

#[test]
fn a_peer_that_trickles_bytes_while_never_reading_its_answer_still_times_out() {
    // Over the high mark the connection reads nothing: bytes waiting in the kernel are not
    // progress, or a client could hold its fd and queue for ever, one byte at a time.
    let (ours, theirs) = tcp_pair();
    set_buffer(&ours, libc::SO_SNDBUF, 16 << 10);
    set_buffer(&theirs, libc::SO_RCVBUF, 16 << 10);
    let mut base = EventBase::<Log>::new().unwrap();
    let options = ConnOptions::new()
        .high_water(64 << 10)
        .idle_timeout(Duration::from_millis(300));
    let id = base.add_conn(ours, options, echo).unwrap();
    assert_eq!(
        base.conn_write_owned(id, vec![0u8; 4 << 20]).unwrap(),
        WriteStatus::Full
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peer = theirs;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if peer.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut log = Log::default();
    base.run_for(&mut log, Duration::from_secs(5)).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickler.join().unwrap();
    assert_eq!(
        log.closed,
        Some(Err(std::io::ErrorKind::TimedOut)),
        "{:?}",
        log.events
    );
}

#[test]
fn a_steady_reader_is_progress_even_while_the_producer_refills_the_queue_faster() {
    // The queue and the kernel's send buffer hold more at each idle check (the producer
    // outpaces the reader, 800 against 400 KB/s), yet bytes leave all the time: that is
    // progress, not idleness.
    let (ours, theirs) = tcp_pair();
    set_buffer(&ours, libc::SO_SNDBUF, 1 << 20);
    set_buffer(&theirs, libc::SO_RCVBUF, 16 << 10);
    let mut base = EventBase::<Log>::new().unwrap();
    let options = ConnOptions::new()
        .high_water(64 << 20)
        .idle_timeout(Duration::from_millis(500));
    let id = base.add_conn(ours, options, echo).unwrap();
    let _ = base.conn_write_owned(id, vec![0u8; 8 << 20]);
    let period = Duration::from_millis(10);
    base.add_repeating_timer(period, Schedule::FixedRate, move |base, _, _| {
        let _ = base.conn_write(id, &[1u8; 8 << 10]);
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut peer, mut chunk) = (theirs, [0u8; 4096]);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if matches!(peer.read(&mut chunk), Ok(0) | Err(_)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut log = Log::default();
    base.run_for(&mut log, Duration::from_secs(2)).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let open = base.conn_is_open(id);
    drop(base);
    reader.join().unwrap();
    assert!(open, "closed as idle: {:?} {:?}", log.events, log.closed);
}

#[test]
fn a_shut_down_once_done_leaves_nothing_to_end_a_later_run() {
    let mut base = EventBase::<bool>::new().unwrap();
    base.shut_down(Duration::from_millis(100)); // no connection: done at once
    let mut ran = false;
    base.run_for(&mut ran, Duration::from_secs(5)).unwrap();
    assert_eq!(base.metrics().timers, 0);
    // The base goes on with other work: neither the old grace timer nor the last connection
    // closing may exit this run.
    let (ours, _theirs) = tcp_pair();
    let id = base
        .add_conn(ours, ConnOptions::new(), |_, _, _, _| {})
        .unwrap();
    base.add_timer(Duration::from_millis(50), move |base, _, _| {
        base.conn_close(id);
    });
    base.add_timer(Duration::from_millis(300), |base, ran, _| {
        *ran = true;
        base.exit();
    });
    base.run_for(&mut ran, Duration::from_secs(5)).unwrap();
    assert!(ran);
}
