//! systemd's protocols, driven for real: the test plays the service manager. It passes a
//! listening socket as fd 3 with `LISTEN_FDS`, reads `NOTIFY_SOCKET` datagrams on its own
//! socket, and asks for a watchdog, for a daemon run in a child process.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use aioloop::{systemd, EventBase};

/// The daemon, run by `socket_activated_daemon_notifies_and_keeps_the_watchdog_fed` in a
/// child process: takes its listening socket from systemd, says it is ready, feeds the
/// watchdog, greets one client, says it is stopping, and exits.
#[test]
#[ignore = "run by socket_activated_daemon_notifies_and_keeps_the_watchdog_fed"]
fn daemon() {
    if std::env::var_os("AIOLOOP_SYSTEMD_DAEMON").is_none() {
        return;
    }
    let mut sockets = systemd::listen_fds().unwrap();
    assert_eq!(sockets.len(), 1);
    assert!(
        systemd::listen_fds().unwrap().is_empty(),
        "fds are handed out once"
    );
    let socket = sockets.pop().unwrap();
    assert_eq!(socket.name.as_deref(), Some("web"));
    let listener = std::net::TcpListener::from(socket.fd);
    listener.set_nonblocking(true).unwrap();
    let listener = aioloop::mio::net::TcpListener::from_std(listener);
    let mut base = EventBase::<()>::new().unwrap();
    base.accept_connections(listener, |base, _, mut stream, _| {
        use std::io::Write;
        stream.write_all(b"hi").unwrap();
        // Let the watchdog tick a few times before going.
        base.exit_after(Duration::from_millis(300));
    })
    .unwrap();
    assert!(base.start_watchdog().unwrap().is_some());
    assert!(systemd::notify_ready().unwrap());
    base.run(&mut ()).unwrap();
    assert!(systemd::notify_stopping().unwrap());
}

#[test]
fn socket_activated_daemon_notifies_and_keeps_the_watchdog_fed() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("systemd");
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify");
    let _ = std::fs::remove_file(&notify_path);
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener_fd = listener.as_raw_fd();

    // `LISTEN_PID` must be the daemon's own pid: the shell sets it to its pid, then execs the
    // daemon, which keeps that pid.
    let exe = std::env::current_exe().unwrap();
    let mut daemon = Command::new("sh");
    daemon
        .args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
        .arg(exe)
        .args([
            "--exact",
            "daemon",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AIOLOOP_SYSTEMD_DAEMON", "1")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "web")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "100000")
        .stdout(std::process::Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; they put the listener at fd 3, without
    // close-on-exec. If it is fd 3 already, dup2 does nothing (it would keep close-on-exec and
    // the daemon would find fd 3 closed), so the flag is cleared instead.
    unsafe {
        daemon.pre_exec(move || {
            let placed = match listener_fd {
                3 => libc::fcntl(3, libc::F_SETFD, 0),
                fd => libc::dup2(fd, 3),
            };
            if placed < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = daemon.spawn().unwrap();
    drop(listener);

    let mut message = [0u8; 256];
    let mut next = || {
        let n = manager
            .recv(&mut message)
            .expect("no message from the daemon");
        String::from_utf8_lossy(&message[..n]).into_owned()
    };
    assert_eq!(next(), "WATCHDOG=1", "the first keep-alive comes at once");
    assert_eq!(next(), "READY=1");
    let mut greeting = String::new();
    TcpStream::connect(addr)
        .unwrap()
        .read_to_string(&mut greeting)
        .unwrap();
    assert_eq!(greeting, "hi");
    let started = Instant::now();
    let mut keepalives = 0;
    loop {
        match next().as_str() {
            "WATCHDOG=1" => keepalives += 1,
            "STOPPING=1" => break,
            other => panic!("unexpected message {other:?}"),
        }
    }
    // 300 ms at one keep-alive per 50 ms.
    assert!(
        keepalives >= 3,
        "{keepalives} keep-alives in {:?}",
        started.elapsed()
    );
    assert!(daemon.wait().unwrap().success());
}

#[test]
fn outside_systemd_every_call_is_a_no_op() {
    // This test binary was not started by systemd (and the daemon test passes its variables
    // to its child only).
    assert!(!systemd::notify_ready().unwrap());
    assert!(systemd::watchdog_interval().is_none());
    assert!(systemd::listen_fds().unwrap().is_empty());
    let mut base = EventBase::<()>::new().unwrap();
    assert!(base.start_watchdog().unwrap().is_none());
}
