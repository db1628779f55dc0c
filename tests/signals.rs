//! Signals through signalfd, against the real kernel: `kill`, `sigqueue`, other threads.
//!
//! `main` blocks the test signals before any thread exists (the documented daemon pattern),
//! then runs each test in turn and prints a libtest-style summary.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use aioloop::{EventBase, SignalInfo};

const TEST_SIGNALS: [i32; 4] = [libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP, libc::SIGCHLD];

fn rt() -> i32 {
    libc::SIGRTMIN()
}

fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

fn kill_self(signo: i32) {
    // SAFETY: sending a blocked signal to our own process.
    assert_eq!(unsafe { libc::kill(pid(), signo) }, 0);
}

fn sigqueue_self(signo: i32, value: i32) {
    let val = libc::sigval {
        sival_ptr: value as usize as *mut libc::c_void,
    };
    // SAFETY: sending a blocked signal to our own process with a plain integer payload.
    assert_eq!(unsafe { libc::sigqueue(pid(), signo, val) }, 0);
}

fn thread_blocks(signo: i32) -> bool {
    // SAFETY: sigset_t is plain data; all-zero is a valid (empty) value.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: reading the mask into a valid set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
        libc::sigismember(&set, signo) == 1
    }
}

/// Runs the base until `done` says so, or fails after 5 s.
fn run_until<S>(base: &mut EventBase<S>, state: &mut S, done: impl Fn(&S) -> bool) {
    let start = std::time::Instant::now();
    while !done(state) {
        assert!(start.elapsed() < Duration::from_secs(5), "timed out");
        base.run_once(state, Some(Duration::from_millis(100)))
            .unwrap();
    }
}

fn kill_to_self_reaches_the_handler_with_its_siginfo() {
    let mut base = EventBase::<Vec<SignalInfo>>::new().unwrap();
    base.add_signal_handler(libc::SIGUSR1, |_, seen, info| seen.push(info))
        .unwrap();
    kill_self(libc::SIGUSR1);
    let mut seen = Vec::new();
    run_until(&mut base, &mut seen, |s| !s.is_empty());
    let info = seen[0];
    assert_eq!(info.signo, libc::SIGUSR1);
    assert_eq!(info.code, libc::SI_USER);
    assert_eq!(info.pid, pid() as u32);
    // SAFETY: getuid has no preconditions.
    assert_eq!(info.uid, unsafe { libc::getuid() });
}

fn sigqueue_value_is_delivered() {
    let mut base = EventBase::<Vec<SignalInfo>>::new().unwrap();
    base.add_signal_handler(libc::SIGUSR2, |_, seen, info| seen.push(info))
        .unwrap();
    sigqueue_self(libc::SIGUSR2, 4242);
    let mut seen = Vec::new();
    run_until(&mut base, &mut seen, |s| !s.is_empty());
    assert_eq!(seen[0].code, libc::SI_QUEUE);
    assert_eq!(seen[0].value as i32, 4242);
}

fn signal_from_another_thread_is_delivered() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_signal_handler(libc::SIGUSR1, |_, n, _| *n += 1)
        .unwrap();
    let sender = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(20));
        kill_self(libc::SIGUSR1);
    });
    let mut n = 0;
    run_until(&mut base, &mut n, |n| *n == 1);
    sender.join().unwrap();
}

fn ten_signals_with_the_loop_running_between_are_all_counted() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_signal_handler(libc::SIGUSR1, |_, n, _| *n += 1)
        .unwrap();
    let mut n = 0;
    for i in 1..=10 {
        kill_self(libc::SIGUSR1);
        run_until(&mut base, &mut n, |n| *n == i);
    }
    assert_eq!(n, 10);
}

fn ten_signals_sent_at_once_coalesce_into_at_least_one() {
    let mut base = EventBase::<u32>::new().unwrap();
    base.add_signal_handler(libc::SIGUSR1, |_, n, _| *n += 1)
        .unwrap();
    for _ in 0..10 {
        kill_self(libc::SIGUSR1);
    }
    let mut n = 0;
    run_until(&mut base, &mut n, |n| *n >= 1);
    base.run_once(&mut n, Some(Duration::from_millis(20)))
        .unwrap();
    assert!((1..=10).contains(&n), "standard signals coalesce: {n}");
}

fn realtime_signals_queue_and_each_is_delivered_in_order() {
    let mut base = EventBase::<Vec<u64>>::new().unwrap();
    base.add_signal_handler(rt(), |_, seen, info| seen.push(info.value))
        .unwrap();
    for i in 0..40 {
        sigqueue_self(rt(), i);
    }
    let mut seen = Vec::new();
    run_until(&mut base, &mut seen, |s| s.len() == 40);
    assert_eq!(seen, (0..40).collect::<Vec<u64>>());
}

fn two_handlers_for_one_signal_run_in_registration_order() {
    let mut base = EventBase::<Vec<&str>>::new().unwrap();
    base.add_signal_handler(libc::SIGUSR2, |_, log, _| log.push("first"))
        .unwrap();
    base.add_signal_handler(libc::SIGHUP, |_, log, _| log.push("hup"))
        .unwrap();
    base.add_signal_handler(libc::SIGUSR2, |_, log, _| log.push("second"))
        .unwrap();
    kill_self(libc::SIGUSR2);
    let mut log = Vec::new();
    run_until(&mut base, &mut log, |l| l.len() == 2);
    assert_eq!(log, ["first", "second"]);
}

fn one_shot_handler_runs_once() {
    let mut base = EventBase::<Vec<&str>>::new().unwrap();
    base.add_signal_handler_once(libc::SIGUSR1, |_, log, _| log.push("once"))
        .unwrap();
    base.add_signal_handler(libc::SIGUSR1, |_, log, _| log.push("always"))
        .unwrap();
    let mut log = Vec::new();
    for round in 1..=2 {
        kill_self(libc::SIGUSR1);
        run_until(&mut base, &mut log, |l| {
            l.iter().filter(|e| **e == "always").count() == round
        });
    }
    assert_eq!(log, ["once", "always", "always"]);
}

fn exit_between_two_handlers_of_one_signal_loses_nothing() {
    let mut base = EventBase::<Vec<&str>>::new().unwrap();
    base.add_signal_handler(libc::SIGUSR1, |base, log, _| {
        log.push("first");
        base.exit();
    })
    .unwrap();
    base.add_signal_handler(libc::SIGUSR1, |_, log, _| log.push("second"))
        .unwrap();
    kill_self(libc::SIGUSR1);
    let mut log = Vec::new();
    run_until(&mut base, &mut log, |l| !l.is_empty());
    assert_eq!(log, ["first"]);
    base.run_once(&mut log, Some(Duration::ZERO)).unwrap();
    assert_eq!(log, ["first", "second"]);
}

fn removed_handler_gets_nothing_and_the_signal_stays_blocked_while_wanted() {
    let mut a = EventBase::<u32>::new().unwrap();
    let mut b = EventBase::<u32>::new().unwrap();
    let in_a = a
        .add_signal_handler(libc::SIGHUP, |_, n, _| *n += 1)
        .unwrap();
    b.add_signal_handler(libc::SIGHUP, |_, n, _| *n += 1)
        .unwrap();
    assert!(a.remove_signal_handler(in_a));
    assert!(!a.remove_signal_handler(in_a));
    assert!(thread_blocks(libc::SIGHUP), "b still wants it");
    kill_self(libc::SIGHUP);
    let (mut na, mut nb) = (0, 0);
    run_until(&mut b, &mut nb, |n| *n == 1);
    a.run_once(&mut na, Some(Duration::from_millis(20)))
        .unwrap();
    assert_eq!(na, 0);
}

/// On a fresh thread that leaves SIGUSR2 unblocked: the mask is restored when the last handler
/// goes and when the base is dropped, and a signal pending at removal is not delivered to the
/// default action (which would kill this process).
fn mask_is_restored_after_the_last_handler_and_after_drop() {
    std::thread::spawn(|| {
        let set = {
            // SAFETY: sigset_t is plain data; all-zero is a valid (empty) value.
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: building a set on the stack.
            unsafe {
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR2);
            }
            set
        };
        // SAFETY: unblocking SIGUSR2 in this thread only.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        assert!(!thread_blocks(libc::SIGUSR2));

        let mut base = EventBase::<u32>::new().unwrap();
        let id = base
            .add_signal_handler(libc::SIGUSR2, |_, n, _| *n += 1)
            .unwrap();
        assert!(thread_blocks(libc::SIGUSR2));
        // SAFETY: a thread-directed signal to ourselves; it stays pending while blocked.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
        assert!(base.remove_signal_handler(id));
        assert!(!thread_blocks(libc::SIGUSR2), "restored to unblocked");

        base.add_signal_handler(libc::SIGUSR2, |_, n, _| *n += 1)
            .unwrap();
        assert!(thread_blocks(libc::SIGUSR2));
        drop(base);
        assert!(!thread_blocks(libc::SIGUSR2), "restored by drop");
    })
    .join()
    .unwrap();
    assert!(thread_blocks(libc::SIGUSR2), "main's own mask is untouched");
}

fn uncatchable_fault_reserved_and_invalid_signals_are_refused() {
    let mut base = EventBase::<()>::new().unwrap();
    for signo in [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        0,
        -3,
        32,
        33,
        65,
        1000,
    ] {
        let err = base.add_signal_handler(signo, |_, _, _| {}).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "signal {signo}"
        );
        assert!(!err.to_string().is_empty());
    }
    assert!(!base.is_alive());
}

fn unrefd_signal_handler_does_not_keep_the_loop_alive() {
    let mut base = EventBase::<u32>::new().unwrap();
    let id = base
        .add_signal_handler(libc::SIGHUP, |_, n, _| *n += 1)
        .unwrap();
    assert!(base.is_alive());
    assert!(base.set_signal_ref(id, false));
    assert!(!base.is_alive());
    base.set_exit_when_empty(true);
    base.run(&mut 0).unwrap();
}

fn handler_can_remove_itself_and_add_another() {
    let ids = Rc::new(RefCell::new(Vec::new()));
    let mut base = EventBase::<Vec<&str>>::new().unwrap();
    let mine = ids.clone();
    let id = base
        .add_signal_handler(libc::SIGUSR1, move |base, log, _| {
            log.push("old");
            base.remove_signal_handler(mine.borrow()[0]);
            base.add_signal_handler(libc::SIGUSR1, |_, log, _| log.push("new"))
                .unwrap();
        })
        .unwrap();
    ids.borrow_mut().push(id);
    let mut log = Vec::new();
    kill_self(libc::SIGUSR1);
    run_until(&mut base, &mut log, |l| !l.is_empty());
    base.run_once(&mut log, Some(Duration::from_millis(20)))
        .unwrap();
    assert_eq!(
        log,
        ["old"],
        "a handler added while a signal is dispatched does not get it"
    );
    kill_self(libc::SIGUSR1);
    run_until(&mut base, &mut log, |l| l.len() == 2);
    assert_eq!(log, ["old", "new"]);
}

fn main() {
    aioloop::block_signals(&TEST_SIGNALS).unwrap();
    aioloop::block_signals(&[rt()]).unwrap();
    let tests: &[(&str, fn())] = &[
        (
            "kill_to_self_reaches_the_handler_with_its_siginfo",
            kill_to_self_reaches_the_handler_with_its_siginfo,
        ),
        ("sigqueue_value_is_delivered", sigqueue_value_is_delivered),
        (
            "signal_from_another_thread_is_delivered",
            signal_from_another_thread_is_delivered,
        ),
        (
            "ten_signals_with_the_loop_running_between_are_all_counted",
            ten_signals_with_the_loop_running_between_are_all_counted,
        ),
        (
            "ten_signals_sent_at_once_coalesce_into_at_least_one",
            ten_signals_sent_at_once_coalesce_into_at_least_one,
        ),
        (
            "realtime_signals_queue_and_each_is_delivered_in_order",
            realtime_signals_queue_and_each_is_delivered_in_order,
        ),
        (
            "two_handlers_for_one_signal_run_in_registration_order",
            two_handlers_for_one_signal_run_in_registration_order,
        ),
        ("one_shot_handler_runs_once", one_shot_handler_runs_once),
        (
            "exit_between_two_handlers_of_one_signal_loses_nothing",
            exit_between_two_handlers_of_one_signal_loses_nothing,
        ),
        (
            "removed_handler_gets_nothing_and_the_signal_stays_blocked_while_wanted",
            removed_handler_gets_nothing_and_the_signal_stays_blocked_while_wanted,
        ),
        (
            "mask_is_restored_after_the_last_handler_and_after_drop",
            mask_is_restored_after_the_last_handler_and_after_drop,
        ),
        (
            "uncatchable_fault_reserved_and_invalid_signals_are_refused",
            uncatchable_fault_reserved_and_invalid_signals_are_refused,
        ),
        (
            "unrefd_signal_handler_does_not_keep_the_loop_alive",
            unrefd_signal_handler_does_not_keep_the_loop_alive,
        ),
        (
            "handler_can_remove_itself_and_add_another",
            handler_can_remove_itself_and_add_another,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out\n",
        selected.len() - failed.len(),
        failed.len(),
        tests.len() - selected.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}
