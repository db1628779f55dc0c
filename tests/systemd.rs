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

/// The other side of the `listen_fds_*` tests below, in a child process whose `LISTEN_PID` is
/// its own pid: each scenario asserts what `listen_fds` must do there.
#[test]
#[ignore = "run by the listen_fds_* tests"]
fn listen_scenario() {
    use std::os::fd::{FromRawFd, OwnedFd};

    let Ok(scenario) = std::env::var("AIOLOOP_LISTEN_SCENARIO") else {
        return;
    };
    let fd3_is_open = || {
        // SAFETY: F_GETFD only reads the flags of fd 3, if it is open.
        unsafe { libc::fcntl(3, libc::F_GETFD) >= 0 }
    };
    match scenario.as_str() {
        // A re-exec with the same pid: the sockets went with the old image (close-on-exec);
        // fd 3 is now a file this program opened.
        "reexec" => {
            let file = std::fs::File::open("/proc/self/status").unwrap();
            let own = if file.as_raw_fd() == 3 {
                file
            } else {
                // SAFETY: dup3 puts a close-on-exec copy of our file at fd 3, which is free.
                assert_eq!(
                    unsafe { libc::dup3(file.as_raw_fd(), 3, libc::O_CLOEXEC) },
                    3
                );
                // SAFETY: fd 3 is the copy just made, owned by nobody else.
                std::fs::File::from(unsafe { OwnedFd::from_raw_fd(3) })
            };
            assert!(systemd::listen_fds().unwrap().is_empty(), "took our file");
            assert!(own.metadata().is_ok());
            drop(own);
        }
        "not_a_socket" => {
            let err = systemd::listen_fds().unwrap_err();
            assert_eq!(aioloop::os_error(&err), Some(libc::ENOTSOCK), "{err}");
            assert!(err.to_string().contains("fd 3"), "{err}");
            assert!(fd3_is_open(), "a refused fd was closed");
            let again = systemd::listen_fds().unwrap_err();
            assert_eq!(aioloop::os_error(&again), Some(libc::ENOTSOCK));
            // SAFETY: fd 3 was inherited and nothing in this process took it.
            let taken = unsafe { systemd::listen_fds_unchecked() }.unwrap();
            assert_eq!(taken.len(), 1);
            assert!(
                systemd::listen_fds().unwrap().is_empty(),
                "handed over once"
            );
        }
        "one_closed" => {
            let err = systemd::listen_fds().unwrap_err();
            assert_eq!(aioloop::os_error(&err), Some(libc::EBADF), "{err}");
            assert!(err.to_string().contains("fd 4"), "{err}");
            assert!(fd3_is_open(), "the good socket was closed");
            let again = systemd::listen_fds().unwrap_err();
            assert_eq!(
                aioloop::os_error(&again),
                Some(libc::EBADF),
                "a retry lost the error"
            );
            assert!(fd3_is_open(), "the good socket was closed");
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// Runs `listen_scenario` in a child that systemd would have started with `LISTEN_FDS=count`:
/// `place` runs between fork and exec to put fds in place. Returns whether the child passed.
fn run_listen_scenario(
    scenario: &str,
    count: u32,
    place: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
) -> bool {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh");
    child
        .args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
        .arg(exe)
        .args([
            "--exact",
            "listen_scenario",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AIOLOOP_LISTEN_SCENARIO", scenario)
        .env("LISTEN_FDS", count.to_string())
        .stdout(std::process::Stdio::null());
    // SAFETY: `place` only makes async-signal-safe calls (dup2, close, fcntl).
    unsafe { child.pre_exec(place) };
    let mut child = child.spawn().unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Puts `fd` at `at` without close-on-exec, as systemd passes it.
fn pass_at(fd: i32, at: i32) -> std::io::Result<()> {
    // SAFETY: dup2 and fcntl are async-signal-safe; when `fd` is `at` already, dup2 does
    // nothing, so the close-on-exec flag is cleared instead.
    let placed = unsafe {
        if fd == at {
            libc::fcntl(at, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, at)
        }
    };
    if placed < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn listen_fds_after_a_re_exec_with_the_same_pid_leaves_the_programs_own_file_alone() {
    // fd 3 is closed across the exec: the new image opens its own file there.
    let passed = run_listen_scenario("reexec", 1, || {
        // SAFETY: closing fd 3 of the child before exec (close is async-signal-safe).
        unsafe { libc::close(3) };
        Ok(())
    });
    assert!(passed, "listen_fds took a file the program owned");
}

#[test]
fn listen_fds_refuses_an_fd_that_is_not_a_socket_and_keeps_it_open() {
    let file = std::fs::File::open("/dev/null").unwrap();
    let fd = file.as_raw_fd();
    assert!(run_listen_scenario("not_a_socket", 1, move || pass_at(
        fd, 3
    )));
}

#[test]
fn listen_fds_failure_on_one_announced_fd_keeps_the_good_sockets() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = listener.as_raw_fd();
    assert!(run_listen_scenario("one_closed", 2, move || {
        pass_at(fd, 3)?;
        // SAFETY: closing fd 4 of the child before exec (close is async-signal-safe).
        unsafe { libc::close(4) };
        Ok(())
    }));
}
