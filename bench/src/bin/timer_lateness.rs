//! How late a 10 ms repeating timer fires on an otherwise idle loop.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin timer_lateness -- [SAMPLES] [PERIOD_MS] [SPIN_US]
//! ```
//!
//! `SPIN_US` sets `EventBase::set_timer_spin` (default 0).
//!
//! Lateness is measured inside the callback as `Instant::now()` minus the deadline the timer
//! was scheduled for (start + k × period, drift-free). Prints p50, p99 and max in
//! microseconds, and the number of polls per tick.

use std::time::{Duration, Instant};

use aioloop::{EventBase, Schedule};

struct Run {
    start: Instant,
    period: Duration,
    ticks: u32,
    samples: u32,
    late_us: Vec<f64>,
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let samples: u32 = args.next().map_or(500, |a| a.parse().expect("SAMPLES"));
    let period_ms: u64 = args.next().map_or(10, |a| a.parse().expect("PERIOD_MS"));
    let spin_us: u64 = args.next().map_or(0, |a| a.parse().expect("SPIN_US"));
    let period = Duration::from_millis(period_ms);
    let mut base = EventBase::<Run>::new()?;
    base.set_timer_spin(Duration::from_micros(spin_us));
    let mut run = Run {
        start: Instant::now(),
        period,
        ticks: 0,
        samples,
        late_us: Vec::with_capacity(samples as usize),
    };
    base.add_repeating_timer(period, Schedule::FixedRate, |base, run, me| {
        run.ticks += 1;
        let due = run.start + run.period * run.ticks;
        run.late_us
            .push(Instant::now().saturating_duration_since(due).as_secs_f64() * 1e6);
        if run.ticks == run.samples {
            base.cancel_timer(me);
        }
    });
    run.start = Instant::now();
    base.set_exit_when_empty(true);
    base.run(&mut run)?;
    let polls = base.metrics().polls;
    let mut late = run.late_us;
    late.sort_by(f64::total_cmp);
    let pct = |p: f64| late[((late.len() - 1) as f64 * p).round() as usize];
    println!(
        "{samples} ticks of {period_ms} ms, spin {spin_us} us: late p50 {:.1} us, p99 {:.1} us, max {:.1} us; {:.2} polls per tick",
        pct(0.5),
        pct(0.99),
        late[late.len() - 1],
        polls as f64 / f64::from(samples)
    );
    Ok(())
}
