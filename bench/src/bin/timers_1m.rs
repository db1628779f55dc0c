//! A million one-shot timers: added with delays spread over 0–100 ms, half of them cancelled
//! at random, the rest fired; aioloop against tokio-util's `DelayQueue` on a `current_thread`
//! runtime and calloop's `Timer` sources; aioloop runs twice, precise and with 1 ms of timer
//! slack (`set_timer_slack`), since `DelayQueue` itself rounds deadlines to 1 ms.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin timers_1m -- [TIMERS] [ROUNDS] [--only NAME]
//!     [--churn ROUNDS]
//! ```
//!
//! Without `--only`, every contender runs in this process, alternating round by round, and
//! each prints `round R NAME add cancel fire`: the CPU time (user + system, `getrusage`) per
//! timer of each phase: adding all, cancelling half, and firing the rest (the firing phase's
//! CPU time, not its wall time, which is the 100 ms the delays span). calloop's timers are
//! sources whose add and cancel cost grows with their number, so it runs only up to 200,000.
//!
//! With `--only NAME` (`aioloop`, `aioloop-slack`, `tokio`, `calloop`), one contender runs
//! one round in a fresh process, then `--churn` more rounds (default 0) on the same loop, and
//! prints `result add cancel fire peak_bytes_per_timer churn_bytes_per_timer`: the peak
//! resident memory the rounds added, and what is still resident after the churn, per timer.
//!
//! Each callback adds its timer's index to a sum, which is checked, so no contender can skip
//! work.

use std::time::Duration;

use aioloop::{EventBase, TimerId};
use aioloop_bench::process::{cpu_time as cpu, peak_rss_kib, rss_kib};
use aioloop_bench::xorshift;

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
    let mut next = move || xorshift(&mut rng);
    let delays = (0..n)
        .map(|_| Duration::from_micros(next() % 100_000))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    order.truncate(n / 2);
    let mut cancelled = vec![false; n];
    for &i in &order {
        cancelled[i] = true;
    }
    let expected = (0..n).filter(|&i| !cancelled[i]).map(|i| i as u64).sum();
    Plan {
        delays,
        cancel: order,
        expected,
    }
}

/// CPU time per timer of (add, cancel, fire) in the first round, and the resident memory
/// (KiB) after the last.
struct Outcome {
    phases: [f64; 3],
    rss_after_kib: u64,
}

/// A contender: its name and its run of 1 + churn rounds on one loop.
type Contender = (&'static str, fn(&Plan, usize) -> Outcome);

fn per_timer(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e9 / n as f64
}

/// The phases' cost per timer from the CPU times at their boundaries: all `n` timers added,
/// half cancelled, the other half fired.
fn phases([t0, t1, t2, t3]: [Duration; 4], n: usize) -> [f64; 3] {
    [
        per_timer(t1 - t0, n),
        per_timer(t2 - t1, n / 2),
        per_timer(t3 - t2, n - n / 2),
    ]
}

/// Runs `round` `1 + churn` times, keeping the first round's phases.
fn rounds(churn: usize, mut round: impl FnMut() -> [f64; 3]) -> Outcome {
    let phases = round();
    for _ in 0..churn {
        round();
    }
    Outcome {
        phases,
        rss_after_kib: rss_kib(),
    }
}

fn aioloop(plan: &Plan, churn: usize) -> Outcome {
    aioloop_with_slack(plan, churn, Duration::ZERO)
}

fn aioloop_slack_1ms(plan: &Plan, churn: usize) -> Outcome {
    aioloop_with_slack(plan, churn, Duration::from_millis(1))
}

fn aioloop_with_slack(plan: &Plan, churn: usize, slack: Duration) -> Outcome {
    let n = plan.delays.len();
    let mut base = EventBase::<u64>::new().unwrap();
    base.reserve_timers(n); // as DelayQueue::with_capacity below
    base.set_timer_slack(slack);
    base.set_exit_when_empty(true);
    rounds(churn, || {
        let t0 = cpu();
        let ids: Vec<TimerId> = (plan.delays.iter().enumerate())
            .map(|(i, &d)| base.add_timer(d, move |_, sum, _| *sum += i as u64))
            .collect();
        let t1 = cpu();
        for &i in &plan.cancel {
            base.cancel_timer(ids[i]);
        }
        let t2 = cpu();
        let mut sum = 0;
        base.run(&mut sum).unwrap();
        let t3 = cpu();
        assert_eq!(sum, plan.expected);
        phases([t0, t1, t2, t3], n)
    })
}

fn tokio(plan: &Plan, churn: usize) -> Outcome {
    use tokio_util::time::DelayQueue;
    let n = plan.delays.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut queue = DelayQueue::with_capacity(n);
        let mut outcome = Outcome {
            phases: [0.0; 3],
            rss_after_kib: 0,
        };
        for round in 0..=churn {
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
            if round == 0 {
                outcome.phases = phases([t0, t1, t2, t3], n);
            }
        }
        outcome.rss_after_kib = rss_kib();
        outcome
    })
}

fn calloop(plan: &Plan, churn: usize) -> Outcome {
    use calloop::timer::{TimeoutAction, Timer};
    let n = plan.delays.len();
    let mut event_loop = calloop::EventLoop::<u64>::try_new().unwrap();
    let handle = event_loop.handle();
    rounds(churn, || {
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
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while sum != plan.expected && std::time::Instant::now() < deadline {
            event_loop
                .dispatch(Duration::from_millis(10), &mut sum)
                .unwrap();
        }
        let t3 = cpu();
        assert_eq!(sum, plan.expected);
        phases([t0, t1, t2, t3], n)
    })
}

const CONTENDERS: [(&str, Contender); 4] = [
    ("aioloop", ("aioloop", aioloop)),
    ("aioloop-slack", ("aioloop, 1 ms slack", aioloop_slack_1ms)),
    ("tokio", ("tokio DelayQueue", tokio)),
    ("calloop", ("calloop Timer", calloop)),
];

/// One contender in this fresh process: its phases and its memory per timer.
fn only(key: &str, plan: &Plan, churn: usize) {
    let Some((_, (_, run))) = CONTENDERS.iter().find(|(k, _)| *k == key) else {
        panic!("--only takes aioloop, aioloop-slack, tokio or calloop");
    };
    let n = plan.delays.len() as f64;
    let before = rss_kib();
    let outcome = run(plan, churn);
    let per_timer = |kib: u64| kib.saturating_sub(before) as f64 * 1024.0 / n;
    let [add, cancel, fire] = outcome.phases;
    println!(
        "result {add:.0} {cancel:.0} {fire:.0} {:.0} {:.0}",
        per_timer(peak_rss_kib()),
        per_timer(outcome.rss_after_kib)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        let i = args.iter().position(|a| a == name)?;
        Some(args.get(i + 1).expect("a flag needs a value").clone())
    };
    let mut positional = args.iter().take_while(|a| !a.starts_with("--"));
    let n: usize = positional
        .next()
        .map_or(1_000_000, |a| a.parse().expect("TIMERS"));
    let rounds: usize = positional.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    let churn: usize = flag("--churn").map_or(0, |c| c.parse().expect("--churn ROUNDS"));
    let plan = plan(n);
    if let Some(key) = flag("--only") {
        return only(&key, &plan, churn);
    }
    println!("{n} timers over 0-100 ms, half cancelled; CPU ns per timer: add / cancel / fire");
    for round in 1..=rounds {
        for (_, (name, run)) in CONTENDERS {
            // calloop's add and cancel grow with the number of timers (17 and 103 µs each at
            // 100k, 33 and 224 µs at 200k here): a million would take hours.
            if name.starts_with("calloop") && n > 200_000 {
                println!("round {round} {name:20} skipped above 200,000 timers (quadratic)");
                continue;
            }
            let [add, cancel, fire] = run(&plan, 0).phases;
            println!("round {round} {name:20} {add:7.0} {cancel:7.0} {fire:7.0}");
        }
    }
}
