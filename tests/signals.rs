//! Signals through signalfd, against the real kernel: `kill`, `sigqueue`, other threads.
//!
//! `main` blocks the test signals before any thread exists (the documented daemon pattern),
//! then runs each test in turn and prints a libtest-style summary.

mod runner;

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

/// Defect 1: a one-shot handler owed a signal after an `exit` keeps the base alive; once it
/// has run, nothing does, and the run must end at once rather than block in `epoll_wait`.
fn owed_one_shot_handler_after_exit_ends_the_next_run_with_exit_when_empty() {
    let mut base = EventBase::<Vec<&str>>::new().unwrap();
    let first = base
        .add_signal_handler(libc::SIGHUP, |base, log, _| {
            log.push("first");
            base.exit();
        })
        .unwrap();
    base.set_signal_ref(first, false);
    base.add_signal_handler_once(libc::SIGHUP, |_, log, _| log.push("once"))
        .unwrap();
    kill_self(libc::SIGHUP);
    let mut log = Vec::new();
    run_until(&mut base, &mut log, |l| !l.is_empty());
    assert_eq!(log, ["first"]);
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(20));
    let started = std::time::Instant::now();
    base.run(&mut log).unwrap();
    assert_eq!(log, ["first", "once"]);
    assert!(started.elapsed() < Duration::from_secs(10), "the run hung");
}

/// Defect 2: every base with a handler gets every signal exactly once, in whatever thread it
/// runs, while bases with handlers come and go in another thread.
fn one_signal_reaches_every_base_in_every_thread_despite_churn() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{Arc, Barrier};

    const THREADS: usize = 3;
    const ROUNDS: u32 = 20;
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicU32>> = (0..THREADS + 2).map(|_| Arc::default()).collect();
    let ready = Arc::new(Barrier::new(THREADS + 1));
    let mut threads = Vec::new();
    for count in &counts[..THREADS] {
        let (stop, ready, count) = (stop.clone(), ready.clone(), count.clone());
        threads.push(std::thread::spawn(move || {
            let mut base = EventBase::<()>::new().unwrap();
            base.add_signal_handler(libc::SIGUSR1, move |_, _, _| {
                count.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            ready.wait();
            while !stop.load(Ordering::SeqCst) {
                base.run_once(&mut (), Some(Duration::from_millis(5)))
                    .unwrap();
            }
        }));
    }
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut churned = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let mut base = EventBase::<()>::new().unwrap();
                base.add_signal_handler(libc::SIGUSR1, |_, _, _| {})
                    .unwrap();
                base.run_once(&mut (), Some(Duration::ZERO)).unwrap();
                churned += 1;
            }
            churned
        })
    };
    // Two more bases share the main thread.
    let mut local: Vec<EventBase<()>> = counts[THREADS..]
        .iter()
        .map(|count| {
            let count = count.clone();
            let mut base = EventBase::<()>::new().unwrap();
            base.add_signal_handler(libc::SIGUSR1, move |_, _, _| {
                count.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            base
        })
        .collect();
    ready.wait();
    for round in 1..=ROUNDS {
        kill_self(libc::SIGUSR1);
        let start = std::time::Instant::now();
        while counts.iter().any(|c| c.load(Ordering::SeqCst) < round) {
            let seen: Vec<u32> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "round {round}: {seen:?}"
            );
            for base in &mut local {
                base.run_once(&mut (), Some(Duration::from_millis(1)))
                    .unwrap();
            }
        }
    }
    for base in &mut local {
        base.run_once(&mut (), Some(Duration::from_millis(20)))
            .unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert!(churn.join().unwrap() > 0);
    let seen: Vec<u32> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(
        seen,
        vec![ROUNDS; THREADS + 2],
        "each base, each signal, once"
    );
}

/// Runs `f` on a fresh thread in which `signo` starts unblocked.
fn on_thread_with_unblocked(signo: i32, f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: sigset_t is plain data; all-zero is a valid (empty) value.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: building a one-signal set on the stack, then unblocking it in this thread.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signo);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        assert!(!thread_blocks(signo));
        f();
    })
    .join()
    .unwrap();
}

/// Defect 3: the program's own `block_signals` after a base added its handler survives the
/// base: dropping the base must not unblock the signal.
fn block_signals_made_after_a_handler_survives_the_base() {
    on_thread_with_unblocked(libc::SIGUSR2, || {
        let mut base = EventBase::<()>::new().unwrap();
        base.add_signal_handler(libc::SIGUSR2, |_, _, _| {})
            .unwrap();
        aioloop::block_signals(&[libc::SIGUSR2]).unwrap();
        drop(base);
        assert!(
            thread_blocks(libc::SIGUSR2),
            "the program's block was undone"
        );
    });
}

static OWN_HANDLER_RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn count_own_handler(_: i32) {
    OWN_HANDLER_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn set_disposition(signo: i32, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction is "no flags, empty mask"; the handler, if any, only does an
    // atomic add, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        assert_eq!(libc::sigaction(signo, &action, std::ptr::null_mut()), 0);
    }
}

/// Defect 3: with the program's own `sigaction` handler installed, a signal pending when the
/// last aioloop handler goes reaches that handler instead of being discarded.
fn pending_signal_reaches_the_programs_own_handler_when_the_last_handler_goes() {
    set_disposition(
        libc::SIGUSR2,
        count_own_handler as *const () as libc::sighandler_t,
    );
    on_thread_with_unblocked(libc::SIGUSR2, || {
        let mut base = EventBase::<()>::new().unwrap();
        let id = base
            .add_signal_handler(libc::SIGUSR2, |_, _, _| {})
            .unwrap();
        // SAFETY: a thread-directed signal to ourselves; it stays pending while blocked.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
        assert!(base.remove_signal_handler(id));
        assert!(!thread_blocks(libc::SIGUSR2));
    });
    set_disposition(libc::SIGUSR2, libc::SIG_DFL);
    assert_eq!(
        OWN_HANDLER_RUNS.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// A thread whose last handler goes unblocks the signal at once, even while a base elsewhere
/// still handles it: the forwarding handler carries what this thread then takes to that base,
/// instead of the default action (which would kill the process).
fn thread_that_lets_go_of_a_signal_handled_elsewhere_unblocks_it_and_forwards_what_it_takes() {
    let mut main_base = EventBase::<u32>::new().unwrap();
    main_base
        .add_signal_handler(libc::SIGUSR2, |_, n, _| *n += 1)
        .unwrap();
    on_thread_with_unblocked(libc::SIGUSR2, || {
        let mut base = EventBase::<()>::new().unwrap();
        base.add_signal_handler(libc::SIGUSR2, |_, _, _| {})
            .unwrap();
        // SAFETY: a thread-directed signal to this thread, pending while blocked.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
        drop(base);
        assert!(!thread_blocks(libc::SIGUSR2), "the thread's mask was kept");
        // SAFETY: a thread-directed signal to this thread, which does not block it now.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
    });
    let mut n = 0;
    run_until(&mut main_base, &mut n, |n| *n == 2); // the pending one, then the later one
}

/// A thread that blocked the signal before its first handler came keeps it blocked after its
/// last handler goes, without claiming it through `block_signals`.
fn signal_blocked_in_a_thread_before_its_first_handler_stays_blocked() {
    assert!(thread_blocks(libc::SIGHUP));
    std::thread::spawn(|| {
        assert!(thread_blocks(libc::SIGHUP), "inherited from main");
        let mut base = EventBase::<()>::new().unwrap();
        base.add_signal_handler(libc::SIGHUP, |_, _, _| {}).unwrap();
        drop(base);
        assert!(
            thread_blocks(libc::SIGHUP),
            "the thread's own block was undone"
        );
    })
    .join()
    .unwrap();
}

/// A signal the program ignores keeps `SIG_IGN`: aioloop never replaces it.
fn ignored_signal_keeps_sig_ign_while_handled_and_after() {
    set_disposition(libc::SIGUSR2, libc::SIG_IGN);
    let mut base = EventBase::<()>::new().unwrap();
    let id = base
        .add_signal_handler(libc::SIGUSR2, |_, _, _| {})
        .unwrap();
    assert_eq!(current_handler(libc::SIGUSR2), libc::SIG_IGN);
    base.remove_signal_handler(id);
    assert_eq!(current_handler(libc::SIGUSR2), libc::SIG_IGN);
    set_disposition(libc::SIGUSR2, libc::SIG_DFL);
}

/// A block aioloop kept in a thread is aioloop's: once no base of the process handles the
/// signal, the thread's mask is what it was, however many bases came and went in the thread
/// while another base handled the signal.
fn thread_mask_is_restored_once_no_base_handles_the_signal_after_a_base_elsewhere_did() {
    let mut main_base = EventBase::<u32>::new().unwrap();
    let in_main = main_base
        .add_signal_handler(libc::SIGUSR2, |_, n, _| *n += 1)
        .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (gone_tx, gone_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: sigset_t is plain data; building a one-signal set and unblocking it here.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        for _ in 0..2 {
            let mut base = EventBase::<()>::new().unwrap();
            base.add_signal_handler(libc::SIGUSR2, |_, _, _| {})
                .unwrap();
            drop(base);
        }
        done_tx.send(()).unwrap();
        gone_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        thread_blocks(libc::SIGUSR2)
    });
    done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(main_base.remove_signal_handler(in_main));
    gone_tx.send(()).unwrap();
    assert!(
        !thread.join().unwrap(),
        "the thread's mask was never restored"
    );
}

/// A signal that no thread-blocked signalfd can read goes through the forwarding handler and a
/// pipe; the loop must get every real-time instance, far past the 2,048 that a default 64 KiB
/// pipe held.
fn realtime_signals_caught_by_the_forwarding_handler_are_all_delivered_past_2048() {
    let (seen, dropped) = send_while_the_loop_waits(rt() + 1, 3000);
    assert_eq!((seen, dropped), (3000, 0));
}

/// Blocked in every thread, real-time instances queue in the kernel (up to
/// `RLIMIT_SIGPENDING`), far past the forwarding pipe's bound, and none is lost.
fn realtime_signals_blocked_in_every_thread_all_arrive_past_the_pipes_bound() {
    const COUNT: u64 = 30_000;
    let mut base = EventBase::<Vec<u64>>::new().unwrap();
    base.add_signal_handler(rt(), |_, seen, info| seen.push(info.value))
        .unwrap();
    let dropped = base.metrics().signals_dropped;
    for i in 0..COUNT {
        sigqueue_self(rt(), i as i32);
    }
    let mut seen = Vec::new();
    run_until(&mut base, &mut seen, |s| s.len() as u64 == COUNT);
    assert!(seen.iter().copied().eq(0..COUNT), "out of order");
    assert_eq!(base.metrics().signals_dropped, dropped);
}

/// Past the forwarding pipe's bound, each instance lost is counted in `Metrics`.
fn forwarding_pipe_overflow_is_counted_in_metrics() {
    let (seen, dropped) = send_while_the_loop_waits(rt() + 1, 27_000);
    assert_eq!(seen + dropped, 27_000);
    assert!(
        seen >= 26_000,
        "the pipe holds about 26,000 instances: {seen}"
    );
    assert!(dropped > 0);
}

/// `main` (which leaves `signo` unblocked) sends `count` instances to itself while a base on
/// another thread has a handler but does not run; then the base runs until every instance is
/// seen or counted as dropped. Returns (seen, dropped).
fn send_while_the_loop_waits(signo: i32, count: u64) -> (u64, u64) {
    assert!(!thread_blocks(signo));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let mut base = EventBase::<(u64, u64)>::new().unwrap();
        base.add_signal_handler(signo, |_, (n, last), info| {
            assert!(*n == 0 || info.value > *last, "out of order");
            *n += 1;
            *last = info.value;
        })
        .unwrap();
        let dropped_before = base.metrics().signals_dropped;
        ready_tx.send(()).unwrap();
        go_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let mut state = (0, 0);
        let start = std::time::Instant::now();
        loop {
            base.run_once(&mut state, Some(Duration::from_millis(50)))
                .unwrap();
            let dropped = base.metrics().signals_dropped - dropped_before;
            if state.0 + dropped >= count || start.elapsed() > Duration::from_secs(20) {
                return (state.0, dropped);
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    for i in 0..count {
        sigqueue_self(signo, i as i32);
    }
    go_tx.send(()).unwrap();
    thread.join().unwrap()
}

/// A record the forwarding handler wrote while a base handled the signal, left unread when the
/// base was dropped, never reaches a handler added later: a handler only gets signals that
/// arrive after it was added.
fn record_left_in_the_forwarding_pipe_never_reaches_a_handler_added_later() {
    let signo = rt() + 2;
    assert!(!thread_blocks(signo));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let mut base = EventBase::<()>::new().unwrap();
        base.add_signal_handler(signo, |_, _, _| {}).unwrap();
        ready_tx.send(()).unwrap();
        sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        drop(base); // without running: the record stays in the pipe
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    sigqueue_self(signo, 1); // caught in main, which does not block it
    sent_tx.send(()).unwrap();
    thread.join().unwrap();

    let mut base = EventBase::<Vec<u64>>::new().unwrap();
    base.add_signal_handler(signo, |_, seen, info| seen.push(info.value))
        .unwrap();
    let mut seen = Vec::new();
    base.run_for(&mut seen, Duration::from_millis(300)).unwrap();
    assert_eq!(seen, [] as [u64; 0], "a stale record reached a new handler");
    sigqueue_self(signo, 2);
    run_until(&mut base, &mut seen, |s| !s.is_empty());
    assert_eq!(seen, [2]);
}

/// Two bases read the same kernel queue: the instance one of them read first (and forwarded)
/// reaches the other before an instance that one read itself afterwards.
fn realtime_instances_keep_their_order_across_bases() {
    let mut a = EventBase::<Vec<u64>>::new().unwrap();
    let mut b = EventBase::<Vec<u64>>::new().unwrap();
    a.add_signal_handler(rt(), |_, seen, info| seen.push(info.value))
        .unwrap();
    b.add_signal_handler(rt(), |_, seen, info| seen.push(info.value))
        .unwrap();
    let (mut in_a, mut in_b) = (Vec::new(), Vec::new());
    sigqueue_self(rt(), 0);
    run_until(&mut a, &mut in_a, |s| s.len() == 1); // A reads 0 and forwards it to B
    sigqueue_self(rt(), 1); // pending for B's own signalfd
    run_until(&mut b, &mut in_b, |s| s.len() == 2);
    assert_eq!(in_b, [0, 1]);
    run_until(&mut a, &mut in_a, |s| s.len() == 2);
    assert_eq!(in_a, [0, 1]);
}

fn current_handler(signo: i32) -> libc::sighandler_t {
    // SAFETY: reading the current action into a zeroed sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signo, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

/// Runs a base with a handler for `signo` on a new thread while `main` leaves the signal
/// unblocked, sends it process-wide, and returns how many the base saw.
fn count_on_a_thread_while_main_leaves_it_unblocked(signo: i32) -> u32 {
    assert!(
        !thread_blocks(signo),
        "main must leave it unblocked for this test"
    );
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut base = EventBase::<u32>::new().unwrap();
        base.add_signal_handler(signo, |_, n, _| *n += 1).unwrap();
        ready_tx.send(()).unwrap();
        let mut n = 0;
        run_until(&mut base, &mut n, |n| *n == 1);
        base.run_once(&mut n, Some(Duration::from_millis(20)))
            .unwrap();
        n
    });
    ready_rx.recv().unwrap();
    kill_self(signo);
    thread.join().unwrap()
}

/// Defect 3: SIGWINCH's default action is to ignore it, so while `main` does not block it the
/// kernel would drop it before any signalfd could read it; the forwarding handler delivers it.
fn default_ignored_signal_reaches_a_base_on_a_thread_while_main_leaves_it_unblocked() {
    assert_eq!(
        count_on_a_thread_while_main_leaves_it_unblocked(libc::SIGWINCH),
        1
    );
    assert_eq!(
        current_handler(libc::SIGWINCH),
        libc::SIG_DFL,
        "SIG_DFL is back"
    );
}

/// SIGALRM's default action terminates the process: with `main` leaving it unblocked, the
/// instance reaches the base instead of killing this test binary.
fn terminating_signal_left_unblocked_in_main_reaches_the_base_instead_of_killing() {
    assert_eq!(
        count_on_a_thread_while_main_leaves_it_unblocked(libc::SIGALRM),
        1
    );
    assert_eq!(current_handler(libc::SIGALRM), libc::SIG_DFL);
}

/// The program's own `sigaction` handler is never replaced by aioloop's forwarding handler.
fn programs_own_handler_is_left_in_place() {
    set_disposition(
        libc::SIGUSR2,
        count_own_handler as *const () as libc::sighandler_t,
    );
    let mut base = EventBase::<()>::new().unwrap();
    let id = base
        .add_signal_handler(libc::SIGUSR2, |_, _, _| {})
        .unwrap();
    let own = count_own_handler as *const () as libc::sighandler_t;
    assert_eq!(current_handler(libc::SIGUSR2), own);
    base.remove_signal_handler(id);
    assert_eq!(current_handler(libc::SIGUSR2), own);
    set_disposition(libc::SIGUSR2, libc::SIG_DFL);
}

/// Real-time instances in bulk, while three bases on three threads run their loops and a
/// fourth thread's base comes and goes: every base sees every instance once, in order.
fn realtime_signals_in_bulk_reach_every_running_base_once_and_in_order() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const COUNT: u64 = 5000;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let ready_tx = ready_tx.clone();
            std::thread::spawn(move || {
                let mut base = EventBase::<Vec<u64>>::new().unwrap();
                base.add_signal_handler(rt(), |_, seen, info| seen.push(info.value))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut seen = Vec::new();
                let start = std::time::Instant::now();
                while (seen.len() as u64) < COUNT && start.elapsed() < Duration::from_secs(20) {
                    base.run_once(&mut seen, Some(Duration::from_millis(50)))
                        .unwrap();
                }
                seen
            })
        })
        .collect();
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let mut base = EventBase::<u32>::new().unwrap();
                base.add_signal_handler(rt(), |_, n, _| *n += 1).unwrap();
                base.run_once(&mut 0, Some(Duration::ZERO)).unwrap();
            }
        })
    };
    for _ in 0..3 {
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    for i in 0..COUNT {
        sigqueue_self(rt(), i as i32);
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let seen: Vec<Vec<u64>> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, Ordering::SeqCst);
    churn.join().unwrap();
    for seen in seen {
        assert_eq!(seen.len() as u64, COUNT);
        assert!(
            seen.iter().copied().eq(0..COUNT),
            "out of order or duplicated"
        );
    }
}

/// A base that does not run while another base of the process reads a standard signal again
/// and again keeps one instance of it, as the kernel would, instead of a queue that grows with
/// every instance: standard signals coalesce.
fn standard_signal_coalesces_for_a_base_that_does_not_run() {
    let mut reader = EventBase::<u32>::new().unwrap();
    let mut idle = EventBase::<u32>::new().unwrap();
    reader
        .add_signal_handler(libc::SIGUSR1, |_, n, _| *n += 1)
        .unwrap();
    idle.add_signal_handler(libc::SIGUSR1, |_, n, _| *n += 1)
        .unwrap();
    let mut read = 0;
    for i in 1..=100 {
        kill_self(libc::SIGUSR1);
        run_until(&mut reader, &mut read, |n| *n == i);
    }
    let mut seen = 0;
    idle.run_for(&mut seen, Duration::from_millis(50)).unwrap();
    assert_eq!(seen, 1, "the idle base queued every instance");
}

/// A base that does not run while another base reads a flood of real-time instances keeps as
/// many as the kernel would queue (`RLIMIT_SIGPENDING`, here lowered to 1,000 while the bases
/// join), and counts the rest as dropped, rather than growing without limit at the pace of
/// whoever sends signals.
fn inbox_of_a_base_that_does_not_run_is_bounded_and_counts_what_it_drops() {
    const LIMIT: u64 = 1000;
    const COUNT: u64 = 4000;
    let signo = rt() + 3;
    aioloop::block_signals(&[signo]).unwrap();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit on rlimit values that outlive the calls; the soft limit
    // is lowered only while the bases join, then put back.
    let (mut reader, mut idle) = unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut limit), 0);
        let lowered = libc::rlimit {
            rlim_cur: LIMIT,
            ..limit
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_SIGPENDING, &lowered), 0);
        let mut bases = (
            EventBase::<u64>::new().unwrap(),
            EventBase::<u64>::new().unwrap(),
        );
        // A base joins the process-wide registry with its first signal handler.
        bases
            .0
            .add_signal_handler(signo, |_, n, _| *n += 1)
            .unwrap();
        bases
            .1
            .add_signal_handler(signo, |_, n, _| *n += 1)
            .unwrap();
        assert_eq!(libc::setrlimit(libc::RLIMIT_SIGPENDING, &limit), 0);
        bases
    };
    let dropped = idle.metrics().signals_dropped;
    let mut read = 0;
    for batch in 0..COUNT / 500 {
        for i in 0..500 {
            sigqueue_self(signo, (batch * 500 + i) as i32);
        }
        run_until(&mut reader, &mut read, |n| *n == (batch + 1) * 500);
    }
    let mut seen = 0;
    run_until(&mut idle, &mut seen, |n| *n > 0);
    idle.run_for(&mut seen, Duration::from_millis(50)).unwrap();
    let lost = idle.metrics().signals_dropped - dropped;
    assert_eq!((seen, lost), (LIMIT, COUNT - LIMIT));
}

/// A thread spawned while its parent thread handles a signal inherits the block (threads
/// inherit the mask), and keeps it as the thread's own: aioloop cannot tell it from a block
/// the program chose, so it is never given back there (what the docs say).
fn thread_spawned_while_a_signal_is_handled_keeps_the_inherited_block() {
    let signo = libc::SIGWINCH;
    on_thread_with_unblocked(signo, move || {
        let mut base = EventBase::<()>::new().unwrap();
        let id = base.add_signal_handler(signo, |_, _, _| {}).unwrap();
        let spawned = std::thread::spawn(move || {
            let inherited = thread_blocks(signo);
            let mut own = EventBase::<()>::new().unwrap();
            let id = own.add_signal_handler(signo, |_, _, _| {}).unwrap();
            own.remove_signal_handler(id);
            drop(own);
            (inherited, thread_blocks(signo))
        });
        assert_eq!(spawned.join().unwrap(), (true, true));
        base.remove_signal_handler(id);
        assert!(
            !thread_blocks(signo),
            "the handling thread's own mask is given back"
        );
    });
}

fn main() {
    aioloop::block_signals(&TEST_SIGNALS).unwrap();
    aioloop::block_signals(&[rt()]).unwrap();
    let tests: &[(&str, fn())] = &[
        (
            "thread_spawned_while_a_signal_is_handled_keeps_the_inherited_block",
            thread_spawned_while_a_signal_is_handled_keeps_the_inherited_block,
        ),
        (
            "inbox_of_a_base_that_does_not_run_is_bounded_and_counts_what_it_drops",
            inbox_of_a_base_that_does_not_run_is_bounded_and_counts_what_it_drops,
        ),
        (
            "standard_signal_coalesces_for_a_base_that_does_not_run",
            standard_signal_coalesces_for_a_base_that_does_not_run,
        ),
        (
            "realtime_signals_in_bulk_reach_every_running_base_once_and_in_order",
            realtime_signals_in_bulk_reach_every_running_base_once_and_in_order,
        ),
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
        (
            "owed_one_shot_handler_after_exit_ends_the_next_run_with_exit_when_empty",
            owed_one_shot_handler_after_exit_ends_the_next_run_with_exit_when_empty,
        ),
        (
            "one_signal_reaches_every_base_in_every_thread_despite_churn",
            one_signal_reaches_every_base_in_every_thread_despite_churn,
        ),
        (
            "block_signals_made_after_a_handler_survives_the_base",
            block_signals_made_after_a_handler_survives_the_base,
        ),
        (
            "pending_signal_reaches_the_programs_own_handler_when_the_last_handler_goes",
            pending_signal_reaches_the_programs_own_handler_when_the_last_handler_goes,
        ),
        (
            "default_ignored_signal_reaches_a_base_on_a_thread_while_main_leaves_it_unblocked",
            default_ignored_signal_reaches_a_base_on_a_thread_while_main_leaves_it_unblocked,
        ),
        (
            "terminating_signal_left_unblocked_in_main_reaches_the_base_instead_of_killing",
            terminating_signal_left_unblocked_in_main_reaches_the_base_instead_of_killing,
        ),
        (
            "programs_own_handler_is_left_in_place",
            programs_own_handler_is_left_in_place,
        ),
        (
            "thread_that_lets_go_of_a_signal_handled_elsewhere_unblocks_it_and_forwards_what_it_takes",
            thread_that_lets_go_of_a_signal_handled_elsewhere_unblocks_it_and_forwards_what_it_takes,
        ),
        (
            "signal_blocked_in_a_thread_before_its_first_handler_stays_blocked",
            signal_blocked_in_a_thread_before_its_first_handler_stays_blocked,
        ),
        (
            "ignored_signal_keeps_sig_ign_while_handled_and_after",
            ignored_signal_keeps_sig_ign_while_handled_and_after,
        ),
        (
            "thread_mask_is_restored_once_no_base_handles_the_signal_after_a_base_elsewhere_did",
            thread_mask_is_restored_once_no_base_handles_the_signal_after_a_base_elsewhere_did,
        ),
        (
            "realtime_signals_caught_by_the_forwarding_handler_are_all_delivered_past_2048",
            realtime_signals_caught_by_the_forwarding_handler_are_all_delivered_past_2048,
        ),
        (
            "realtime_signals_blocked_in_every_thread_all_arrive_past_the_pipes_bound",
            realtime_signals_blocked_in_every_thread_all_arrive_past_the_pipes_bound,
        ),
        (
            "forwarding_pipe_overflow_is_counted_in_metrics",
            forwarding_pipe_overflow_is_counted_in_metrics,
        ),
        (
            "record_left_in_the_forwarding_pipe_never_reaches_a_handler_added_later",
            record_left_in_the_forwarding_pipe_never_reaches_a_handler_added_later,
        ),
        (
            "realtime_instances_keep_their_order_across_bases",
            realtime_instances_keep_their_order_across_bases,
        ),
    ];
    runner::run(tests);
}
