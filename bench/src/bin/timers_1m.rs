//! A million one-shot timers: added with delays spread over 0–100 ms, half of them cancelled
//! at random, the rest fired; aioloop against tokio-util's `DelayQueue` on a `current_thread`
//! runtime and calloop's `Timer` sources, in one process, alternating round by round;
//! aioloop runs twice, precise and with 1 ms of timer slack (`set_timer_slack`), since
//! `DelayQueue` itself rounds deadlines to 1 ms.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin timers_1m -- [TIMERS] [ROUNDS]
//! ```
//!
//! calloop's timers are sources whose add and cancel cost grows with their number, so it
//! runs only up to 200,000 timers. Reports, per contender and round, the CPU time (user + system, `getrusage`) per timer of
//! each phase: adding all, cancelling half, and firing the rest (the firing phase's CPU time,
//! not its wall time, which is the 100 ms the delays span). Each callback adds its timer's
//! index to a sum, which is checked, so no contender can skip work.

use std::time::Duration;

use aioloop::{EventBase, TimerId};

/// User plus system CPU time of this process so far.
fn cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` outlives the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The delays and the cancel set, the same for every contender.
struct Plan {
    delays: Vec<Duration>,
    /// Indices to cancel, in random order.
    cancel: Vec<usize>,
    /// The sum of the indices of the timers that must fire.
    expected: u64,
}

fn plan(n: usize) -> Plan {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let delays = (0..n)
        .map(|_| Duration::from_micros(next() % 100_000))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    order.truncate(n / 2);
    let cancelled: std::collections::HashSet<usize> = order.iter().copied().collect();
    let expected = (0..n)
        .filter(|i| !cancelled.contains(i))
        .map(|i| i as u64)
        .sum();
    Plan {
        delays,
        cancel: order,
        expected,
    }
}

/// CPU time per timer of (add, cancel, fire).
type Phases = [f64; 3];

/// A contender: its name and its run.
type Contender = (&'static str, fn(&Plan) -> Phases);

fn per_timer(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e9 / n as f64
}

/// The phases' cost per timer from the CPU times at their boundaries: all `n` timers added,
/// half cancelled, the other half fired.
fn phases([t0, t1, t2, t3]: [Duration; 4], n: usize) -> Phases {
    [
        per_timer(t1 - t0, n),
        per_timer(t2 - t1, n / 2),
        per_timer(t3 - t2, n - n / 2),
    ]
}

fn aioloop(plan: &Plan) -> Phases {
    aioloop_with_slack(plan, Duration::ZERO)
}

fn aioloop_slack_1ms(plan: &Plan) -> Phases {
    aioloop_with_slack(plan, Duration::from_millis(1))
}

fn aioloop_with_slack(plan: &Plan, slack: Duration) -> Phases {
    let n = plan.delays.len();
    let mut base = EventBase::<u64>::new().unwrap();
    base.set_timer_slack(slack);
    let t0 = cpu();
    let ids: Vec<TimerId> = (plan.delays.iter().enumerate())
        .map(|(i, &d)| base.add_timer(d, move |_, sum, _| *sum += i as u64))
        .collect();
    let t1 = cpu();
    for &i in &plan.cancel {
        base.cancel_timer(ids[i]);
    }
    let t2 = cpu();
    base.set_exit_when_empty(true);
    let mut sum = 0;
    base.run(&mut sum).unwrap();
    let t3 = cpu();
    assert_eq!(sum, plan.expected);
    phases([t0, t1, t2, t3], n)
}

fn tokio(plan: &Plan) -> Phases {
    use tokio_util::time::DelayQueue;
    let n = plan.delays.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut queue = DelayQueue::with_capacity(n);
        let t0 = cpu();
        let keys: Vec<_> = (plan.delays.iter().enumerate())
            .map(|(i, &d)| queue.insert(i, d))
            .collect();
        let t1 = cpu();
        for &i in &plan.cancel {
            queue.remove(&keys[i]);
        }
        let t2 = cpu();
        let mut sum = 0u64;
        while let Some(expired) = std::future::poll_fn(|cx| queue.poll_expired(cx)).await {
            sum += expired.into_inner() as u64;
        }
        let t3 = cpu();
        assert_eq!(sum, plan.expected);
        phases([t0, t1, t2, t3], n)
    })
}

fn calloop(plan: &Plan) -> Phases {
    use calloop::timer::{TimeoutAction, Timer};
    let n = plan.delays.len();
    let mut event_loop = calloop::EventLoop::<u64>::try_new().unwrap();
    let handle = event_loop.handle();
    let t0 = cpu();
    let tokens: Vec<_> = (plan.delays.iter().enumerate())
        .map(|(i, &d)| {
            let timer = Timer::from_duration(d);
            handle
                .insert_source(timer, move |_, _, sum| {
                    *sum += i as u64;
                    TimeoutAction::Drop
                })
                .unwrap()
        })
        .collect();
    let t1 = cpu();
    for &i in &plan.cancel {
        handle.remove(tokens[i]);
    }
    let t2 = cpu();
    let mut sum = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sum != plan.expected && std::time::Instant::now() < deadline {
        event_loop
            .dispatch(Duration::from_millis(10), &mut sum)
            .unwrap();
    }
    let t3 = cpu();
    assert_eq!(sum, plan.expected);
    phases([t0, t1, t2, t3], n)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("TIMERS"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    let plan = plan(n);
    println!("{n} timers over 0-100 ms, half cancelled; CPU ns per timer: add / cancel / fire");
    let contenders: [Contender; 4] = [
        ("aioloop", aioloop),
        ("aioloop, 1 ms slack", aioloop_slack_1ms),
        ("tokio DelayQueue", tokio),
        ("calloop Timer", calloop),
    ];
    for round in 1..=rounds {
        for (name, run) in contenders {
            // calloop's add and cancel grow with the number of timers (17 and 103 µs each at
            // 100k, 33 and 224 µs at 200k here): a million would take hours.
            if name.starts_with("calloop") && n > 200_000 {
                println!("round {round} {name:20} skipped above 200,000 timers (quadratic)");
                continue;
            }
            let [add, cancel, fire] = run(&plan);
            println!("round {round} {name:20} {add:7.0} {cancel:7.0} {fire:7.0}");
        }
    }
}
