//! Child-process exits through pidfds: exact statuses, many at once, already exited, killed.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use aioloop::{ChildExit, EventBase};

fn sh(script: &str) -> std::process::Child {
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn fifty_children_exiting_at_once_are_all_reported_with_exact_statuses() {
    let mut base = EventBase::<HashMap<u32, i32>>::new().unwrap();
    let mut expected = HashMap::new();
    for code in 0..50 {
        let child = sh(&format!("sleep 0.05; exit {code}"));
        expected.insert(child.id(), code);
        base.watch_child(child, |_, seen, exit: ChildExit| {
            seen.insert(exit.pid, exit.status.code().unwrap());
        })
        .unwrap();
    }
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(30));
    let mut seen = HashMap::new();
    base.run(&mut seen).unwrap();
    assert_eq!(seen, expected);
    assert_eq!(base.metrics().fd_handlers, 0, "every pidfd watch is gone");
}

#[test]
fn child_killed_by_a_signal_reports_that_signal() {
    let mut base = EventBase::<Option<ChildExit>>::new().unwrap();
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    base.watch_child(child, |_, seen, exit| *seen = Some(exit))
        .unwrap();
    // SAFETY: `pid` is our unreaped child, so the number cannot name another process yet.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    base.set_exit_when_empty(true);
    let mut seen = None;
    base.run(&mut seen).unwrap();
    let exit = seen.unwrap();
    assert_eq!(exit.pid, pid);
    assert_eq!(exit.status.signal(), Some(libc::SIGKILL));
    assert_eq!(exit.status.code(), None);
}

#[test]
fn child_that_already_exited_when_watched_is_reported() {
    let child = sh("exit 7");
    std::thread::sleep(Duration::from_millis(100)); // a zombie by now
    let mut base = EventBase::<Option<i32>>::new().unwrap();
    base.watch_child(child, |_, code, exit| *code = exit.status.code())
        .unwrap();
    base.set_exit_when_empty(true);
    let mut code = None;
    base.run(&mut code).unwrap();
    assert_eq!(code, Some(7));
}

#[test]
fn watch_pid_of_a_child_spawned_elsewhere_works() {
    let child = sh("exit 5");
    let pid = child.id();
    std::mem::forget(child); // as if spawned by other code that hands us only the pid
    let mut base = EventBase::<Option<i32>>::new().unwrap();
    base.watch_pid(pid, |_, code, exit| *code = exit.status.code())
        .unwrap();
    base.set_exit_when_empty(true);
    let mut code = None;
    base.run(&mut code).unwrap();
    assert_eq!(code, Some(5));
}

#[test]
fn watching_a_process_that_is_not_our_child_is_refused() {
    let mut base = EventBase::<()>::new().unwrap();
    let err = base.watch_pid(1, |_, _, _| {}).unwrap_err();
    assert_eq!(aioloop::os_error(&err), Some(libc::ECHILD), "{err}");
    assert!(err.to_string().contains("not an unreaped child"), "{err}");
    let err = base
        .watch_pid(std::process::id(), |_, _, _| {})
        .unwrap_err();
    assert_eq!(aioloop::os_error(&err), Some(libc::ECHILD), "{err}");
    let err = base.watch_pid(u32::MAX, |_, _, _| {}).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(!base.is_alive());
}

#[test]
fn reaping_one_child_leaves_the_others_alone() {
    let mut base = EventBase::<Vec<u32>>::new().unwrap();
    let quick = sh("exit 0");
    let quick_pid = quick.id();
    let mut slow = Command::new("sleep").arg("0.3").spawn().unwrap();
    base.watch_child(quick, |base, seen, exit| {
        seen.push(exit.pid);
        base.exit();
    })
    .unwrap();
    let mut seen = Vec::new();
    base.run(&mut seen).unwrap();
    assert_eq!(seen, [quick_pid]);
    // The unwatched child was not reaped by mistake: its own wait still works.
    assert!(slow.wait().unwrap().success());
}

/// `SigBlk` and `SigIgn` of `/proc/PID/status`, as the child (`grep`, which leaves its signal
/// state alone, unlike `sh`) reports them.
fn signal_state(command: &mut Command) -> String {
    let out = command
        .args(["-E", "^(SigBlk|SigIgn)", "/proc/self/status"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn children_spawned_through_the_library_start_with_no_blocked_or_ignored_signal() {
    // A loop thread handling SIGTERM and SIGHUP blocks them; Rust ignores SIGPIPE.
    let mut base = EventBase::<()>::new().unwrap();
    base.add_signal_handler(libc::SIGTERM, |_, _, _| {})
        .unwrap();
    base.add_signal_handler(libc::SIGHUP, |_, _, _| {}).unwrap();
    let inherited = signal_state(&mut Command::new("grep"));
    assert!(
        !inherited.contains("SigBlk:\t0000000000000000"),
        "the plain child should show the inherited mask: {inherited}"
    );
    let clean = signal_state(aioloop::reset_signals_on_exec(&mut Command::new("grep")));
    assert_eq!(
        clean,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}

#[test]
fn child_spawned_from_a_loop_thread_handling_sigterm_dies_of_sigterm_sent_through_its_handle() {
    let mut base = EventBase::<Vec<ChildExit>>::new().unwrap();
    base.add_signal_handler(libc::SIGTERM, |_, _, _| {})
        .unwrap();
    let mut command = Command::new("sleep");
    command.arg("60");
    let child = base
        .spawn_child(&mut command, |base, exits, exit| {
            exits.push(exit);
            base.exit();
        })
        .unwrap();
    assert!(child.pid() > 0);
    child.signal(aioloop::signals::SIGTERM).unwrap();
    base.exit_after(Duration::from_secs(20));
    let mut exits = Vec::new();
    base.run(&mut exits).unwrap();
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0].pid, child.pid());
    assert_eq!(exits[0].status.signal(), Some(libc::SIGTERM));
    let err = child.signal(libc::SIGTERM).unwrap_err();
    assert_eq!(aioloop::os_error(&err), Some(libc::ESRCH));
    assert!(err.to_string().contains("reaped"), "{err}");
    assert!(
        !base.unwatch_child(&child),
        "the watch ended with the callback"
    );
}

#[test]
fn unwatched_child_calls_nothing_back_and_is_left_for_its_parent_to_reap() {
    let mut base = EventBase::<u32>::new().unwrap();
    let child = base
        .spawn_child(&mut Command::new("true"), |_, calls, _| *calls += 1)
        .unwrap();
    assert!(base.unwatch_child(&child));
    assert!(!base.unwatch_child(&child));
    base.set_exit_when_empty(true);
    let mut calls = 0;
    base.run_for(&mut calls, Duration::from_millis(200))
        .unwrap();
    assert_eq!(calls, 0);
    drop(base); // an unwatched child is not the base's to reap, even when it goes
    let start = std::time::Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child by pid, without blocking, into a valid pointer.
        let reaped = unsafe { libc::waitpid(child.pid() as i32, &mut status, libc::WNOHANG) };
        if reaped != 0 {
            assert_eq!(reaped, child.pid() as i32);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "`true` never exited"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn spawning_a_missing_program_names_it() {
    let mut base = EventBase::<()>::new().unwrap();
    let err = base
        .spawn_child(&mut Command::new("/nonexistent/prog"), |_, _, _| {})
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
}

/// The `State:` line of `/proc/PID/status` (`Z (zombie)`...), or `None` once the process is
/// gone (reaped).
fn proc_state(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("State:"))?;
    Some(line.trim_start_matches("State:").trim().to_string())
}

/// Waits at most 10 s for `done(state of pid)`.
fn wait_for_state(pid: u32, done: impl Fn(Option<&str>) -> bool) -> Option<String> {
    let start = std::time::Instant::now();
    loop {
        let state = proc_state(pid);
        if done(state.as_deref()) || start.elapsed() > Duration::from_secs(10) {
            return state;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn dropping_a_base_reaps_the_exited_child_it_watched() {
    let mut base = EventBase::<()>::new().unwrap();
    let child = base
        .spawn_child(&mut Command::new("true"), |_, _, _| {})
        .unwrap();
    let pid = child.pid();
    let zombie = wait_for_state(pid, |s| s.is_some_and(|s| s.starts_with('Z')));
    assert!(zombie.is_some_and(|s| s.starts_with('Z')), "never exited");
    drop(base);
    assert_eq!(proc_state(pid), None, "child {pid} left a zombie");
}

#[test]
fn dropping_a_base_reaps_a_running_child_it_watched_once_that_exits() {
    let mut base = EventBase::<()>::new().unwrap();
    let mut command = Command::new("sleep");
    command.arg("0.2");
    let child = base.spawn_child(&mut command, |_, _, _| {}).unwrap();
    let pid = child.pid();
    drop(base);
    assert!(proc_state(pid).is_some_and(|s| !s.starts_with('Z')));
    let state = wait_for_state(pid, |s| s.is_none());
    assert_eq!(state, None, "child {pid} left a zombie");
}

#[test]
fn spawn_child_hands_out_nonblocking_close_on_exec_stdio_pipes_the_loop_can_watch() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[derive(Default)]
    struct Seen {
        out: Vec<u8>,
        err: Vec<u8>,
        exit: Option<i32>,
    }
    let mut base = EventBase::<Seen>::new().unwrap();
    let mut command = Command::new("sh");
    command
        .args(["-c", "read line; echo \"got $line\"; echo oops >&2; exit 4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = base
        .spawn_child(&mut command, |_, seen, exit| seen.exit = exit.status.code())
        .unwrap();
    let mut stdin = child.take_stdin().unwrap();
    let mut stdout = child.take_stdout().unwrap();
    let mut stderr = child.take_stderr().unwrap();
    assert!(child.clone().take_stdout().is_none(), "taken once");
    for fd in [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()] {
        // SAFETY: reading the flags of fds we own.
        let (status, fd_flags) = unsafe {
            (
                libc::fcntl(fd, libc::F_GETFL),
                libc::fcntl(fd, libc::F_GETFD),
            )
        };
        assert_ne!(status & libc::O_NONBLOCK, 0, "fd {fd} blocks");
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "fd {fd} leaks into exec");
    }
    let mut empty = [0; 16];
    let err = stdout.read(&mut empty).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);

    let out_fd = stdout.as_raw_fd();
    base.set_io_handler(
        &out_fd,
        aioloop::Direction::Read,
        aioloop::IoOptions::new(),
        move |base, seen, _| drain(base, &mut stdout, out_fd, &mut seen.out),
    )
    .unwrap();
    let err_fd = stderr.as_raw_fd();
    base.set_io_handler(
        &err_fd,
        aioloop::Direction::Read,
        aioloop::IoOptions::new(),
        move |base, seen, _| drain(base, &mut stderr, err_fd, &mut seen.err),
    )
    .unwrap();
    stdin.write_all(b"hello\n").unwrap();
    drop(stdin);
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(20));
    let mut seen = Seen::default();
    base.run(&mut seen).unwrap();
    assert_eq!(seen.out, b"got hello\n");
    assert_eq!(seen.err, b"oops\n");
    assert_eq!(seen.exit, Some(4));
}

/// Reads `from` until `WouldBlock`; at EOF removes its handlers.
fn drain(
    base: &mut EventBase<impl Sized>,
    from: &mut impl std::io::Read,
    fd: i32,
    into: &mut Vec<u8>,
) {
    let mut chunk = [0; 256];
    loop {
        match from.read(&mut chunk) {
            Ok(0) => {
                base.remove_fd_handlers(&fd, aioloop::Handlers::ALL);
                return;
            }
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A pipe the caller never took closes with the last `ChildHandle`, as it does with a
/// `std::process::Child`: a child that reads its stdin to the end (`cat`) then exits, rather
/// than waiting forever on a write end the watch kept open.
#[test]
fn dropping_the_child_handle_closes_the_stdin_pipe_nobody_took() {
    let mut base = EventBase::<Option<i32>>::new().unwrap();
    let mut command = Command::new("cat");
    command.stdin(Stdio::piped()).stdout(Stdio::null());
    let child = base
        .spawn_child(&mut command, |_, code, exit| *code = exit.status.code())
        .unwrap();
    let pid = child.pid();
    drop(child);
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(5));
    let mut code = None;
    base.run(&mut code).unwrap();
    if code.is_none() {
        // SAFETY: `pid` is our unreaped child (its watch is still installed).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert_eq!(code, Some(0), "cat never saw EOF on its stdin");
}

/// The thread that reaps a running child after its base is dropped blocks every signal, as
/// aioloop's helper threads do: with its small stack it must never run a signal handler of the
/// program's, nor take a signal meant for another thread.
#[test]
fn reaper_thread_blocks_every_signal() {
    let mut base = EventBase::<()>::new().unwrap();
    let mut command = Command::new("sleep");
    command.arg("0.5");
    let child = base.spawn_child(&mut command, |_, _, _| {}).unwrap();
    let pid = child.pid();
    drop(base);
    let mut reaper_mask = None;
    let start = std::time::Instant::now();
    while reaper_mask.is_none() && start.elapsed() < Duration::from_secs(5) {
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if name.trim() == "aioloop-reaper" {
                let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
                reaper_mask = status
                    .lines()
                    .find_map(|l| l.strip_prefix("SigBlk:"))
                    .map(|m| u64::from_str_radix(m.trim(), 16).unwrap());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let state = wait_for_state(pid, |s| s.is_none());
    assert_eq!(state, None, "child {pid} left a zombie");
    let mask = reaper_mask.expect("no aioloop-reaper thread");
    // Every signal but the two that cannot be blocked (and the C library's own two, which
    // pthread_sigmask leaves alone).
    let unblockable = (1u64 << (libc::SIGKILL - 1)) | (1u64 << (libc::SIGSTOP - 1));
    assert_eq!(
        mask & (1u64 << (libc::SIGTERM - 1)),
        1u64 << (libc::SIGTERM - 1)
    );
    assert_eq!(mask & unblockable, 0);
    assert_eq!(
        mask.count_ones(),
        64 - 2 - 2,
        "SigBlk {mask:#x}: not every signal is blocked"
    );
}

/// A base that handles SIGCHLD and spawns children through `spawn_child` gets both: every
/// exit callback, and SIGCHLD (at least one: standard signals coalesce), whichever thread the
/// kernel hands it to.
#[test]
fn sigchld_handler_and_child_watches_work_together() {
    #[derive(Default)]
    struct Seen {
        sigchld: u32,
        exits: HashMap<u32, i32>,
    }
    let mut base = EventBase::<Seen>::new().unwrap();
    base.add_signal_handler(libc::SIGCHLD, |_, seen, _| seen.sigchld += 1)
        .unwrap();
    let mut expected = HashMap::new();
    for code in 0..20 {
        let mut command = Command::new("sh");
        command.args(["-c", &format!("exit {code}")]);
        let child = base
            .spawn_child(&mut command, |_, seen: &mut Seen, exit| {
                seen.exits.insert(exit.pid, exit.status.code().unwrap());
            })
            .unwrap();
        expected.insert(child.pid(), code);
    }
    let mut seen = Seen::default();
    let start = std::time::Instant::now();
    while (seen.exits.len() < 20 || seen.sigchld == 0) && start.elapsed() < Duration::from_secs(20)
    {
        base.run_once(&mut seen, Some(Duration::from_millis(50)))
            .unwrap();
    }
    assert_eq!(seen.exits, expected);
    assert!(seen.sigchld >= 1, "no SIGCHLD reached the handler");
}
