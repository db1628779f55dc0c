//! A signal interrupting `epoll_wait` does not cut the wait short or surface as an error.

use std::time::{Duration, Instant};

use aioloop::EventBase;

extern "C" fn ignore(_: libc::c_int) {}

/// Installs a no-op SIGUSR1 handler without SA_RESTART, so the signal interrupts syscalls.
fn install_interrupting_handler() {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler is an
    // async-signal-safe no-op that lives for the whole program.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
}

/// Sends SIGUSR1 to the calling thread a few times, from another thread.
fn interrupt_me_repeatedly() -> std::thread::JoinHandle<()> {
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    std::thread::spawn(move || {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: `me` is a live thread: the test joins this thread before returning.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR1) };
        }
    })
}

#[test]
fn interrupted_poll_waits_out_the_remaining_time() {
    install_interrupting_handler();
    let mut base = EventBase::<u32>::new().unwrap();
    let start = Instant::now();
    base.add_timer(Duration::from_millis(200), |base, n, _| {
        *n += 1;
        base.exit();
    });
    let signals = interrupt_me_repeatedly();
    let mut n = 0;
    base.run(&mut n).unwrap();
    signals.join().unwrap();
    assert_eq!(n, 1);
    assert!(start.elapsed() >= Duration::from_millis(200));

    let signals = interrupt_me_repeatedly();
    let start = Instant::now();
    assert_eq!(
        base.run_once(&mut n, Some(Duration::from_millis(150)))
            .unwrap(),
        0
    );
    assert!(start.elapsed() >= Duration::from_millis(150));
    signals.join().unwrap();
}
