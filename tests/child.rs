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
