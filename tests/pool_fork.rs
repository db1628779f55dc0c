//! A child forked while the helpers are busy can drop the parent's base and build its own,
//! whatever lock a helper of the parent held at the fork.

use std::time::{Duration, Instant};

use aioloop::{EventBase, Schedule};

#[derive(Default)]
struct St {
    child: bool,
    pids: Vec<libc::pid_t>,
}

/// A tiny job that resubmits itself, so that the helpers take and hand back the pool's locks
/// all the time.
fn churn(base: &mut EventBase<St>) {
    base.run_blocking(
        || {
            let until = Instant::now() + Duration::from_micros(5);
            while Instant::now() < until {}
            Ok(())
        },
        |base, st, r: std::io::Result<()>| {
            r.unwrap();
            if !st.child {
                churn(base);
            }
        },
    )
    .unwrap();
}

/// What a forked child does with the base it inherited: drop it, then work with a new one.
fn child(base: EventBase<St>) -> ! {
    drop(base);
    let mut base = EventBase::<bool>::new().unwrap();
    base.run_blocking(|| Ok(()), |_, ran, r: std::io::Result<()>| *ran = r.is_ok())
        .unwrap();
    base.set_exit_when_empty(true);
    let mut ran = false;
    base.run(&mut ran).unwrap();
    // SAFETY: ends the child at once, without the parent's atexit handlers.
    unsafe { libc::_exit(if ran { 0 } else { 1 }) }
}

#[test]
fn a_child_forked_while_helpers_churn_drops_the_parents_base_and_makes_its_own() {
    let mut base = EventBase::<St>::new().unwrap();
    for _ in 0..8 {
        churn(&mut base);
    }
    let mut forks = 0;
    base.add_repeating_timer(
        Duration::from_millis(2),
        Schedule::FixedDelay,
        move |base, st, _| {
            forks += 1;
            if forks > 150 {
                return base.exit();
            }
            // SAFETY: the child only drops the base and runs a new one (see `child`), bounded by
            // an alarm.
            match unsafe { libc::fork() } {
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                0 => {
                    // SAFETY: async-signal-safe.
                    unsafe { libc::alarm(10) };
                    st.child = true;
                    base.exit();
                }
                pid => st.pids.push(pid),
            }
        },
    );
    let mut st = St::default();
    base.run(&mut st).unwrap();
    if st.child {
        child(base);
    }
    let mut failed = Vec::new();
    for pid in st.pids {
        let mut status = 0;
        // SAFETY: waits for our own child (each has an alarm, so none waits for ever).
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed.push(status);
        }
    }
    assert!(failed.is_empty(), "children stuck or failing: {failed:?}");
}
