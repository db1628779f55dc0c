//! Timers at scale: many one-shot timers added, half cancelled, the rest fired; CPU time per
//! timer and memory, against tokio-util's `DelayQueue` and calloop's `Timer`.

use aioloop_bench::chart::{self, Group};
use aioloop_bench::stats::thousands;

use crate::run::{output, pinned, result_fields, rotated};
use crate::table::{ratio, Results, Table};
use crate::{Ctx, Section};

const CONTENDERS: [(&str, &str); 4] = [
    ("aioloop", "aioloop"),
    ("aioloop, 1 ms slack", "aioloop-slack"),
    ("tokio DelayQueue", "tokio"),
    ("calloop Timer", "calloop"),
];

const FIGURES: [&str; 5] = [
    "add, ns",
    "cancel, ns",
    "fire, ns",
    "peak memory, bytes",
    "resident after churn, bytes",
];

/// Per figure, per contender, the samples of `timers` timers with `churn` extra rounds.
fn measure(ctx: &Ctx, timers: usize, churn: usize, contenders: &[(&str, &str)]) -> Vec<Results> {
    let mut figures: Vec<Results> = FIGURES.iter().map(|_| Results::default()).collect();
    for round in 0..ctx.rounds {
        for (name, key) in rotated(contenders, round) {
            let text = output(pinned(0, &ctx.tool("timers_1m")).args([
                &timers.to_string(),
                "1",
                "--only",
                key,
                "--churn",
                &churn.to_string(),
            ]));
            for (figure, value) in figures.iter_mut().zip(result_fields(&text)) {
                figure.push(name, value);
            }
        }
    }
    figures
}

fn table(figures: &[Results], churn: usize) -> String {
    let churned = format!("resident after {churn} more rounds, B/timer");
    let mut headers = vec![
        "contender",
        "add, ns/timer",
        "cancel, ns/timer",
        "fire, ns/timer",
        "peak memory, B/timer",
    ];
    if churn > 0 {
        headers.push(&churned);
    }
    let mut t = Table::new(&headers);
    for (name, _) in &figures[0].entries {
        let mut cells = vec![name.clone()];
        for figure in &figures[..headers.len() - 1] {
            let s = figure.get(name).unwrap();
            cells.push(format!("{} {}", thousands(s.median(), 0), s.spread()));
        }
        t.row(&cells);
    }
    t.render()
}

pub fn section(ctx: &Ctx) -> Section {
    let (small, large, churn) = if ctx.quick {
        (20_000, 100_000, 3)
    } else {
        (100_000, 1_000_000, 10)
    };
    let all = measure(ctx, small, 0, &CONTENDERS);
    let at_scale = measure(ctx, large, churn, &CONTENDERS[..3]);
    let groups: Vec<Group> = (FIGURES.iter().zip(&at_scale))
        .map(|(label, r)| r.group(&format!("{label} per timer")))
        .collect();
    let svg = chart::bars(
        &format!(
            "{} timers: CPU time and memory per timer",
            thousands(large as f64, 0)
        ),
        "lower is better; add all, cancel half at random, fire the rest",
        &groups[..4],
    );
    let fire = |r: &[Results], who: &str| r[2].median(who);
    let headlines = vec![format!(
        "Timers, {} added, half cancelled, the rest fired: aioloop's CPU per timer {} tokio's \
         `DelayQueue` to add, {} to cancel, {} to fire ({} with 1 ms of slack, `DelayQueue`'s \
         own resolution); {} its peak memory.",
        thousands(large as f64, 0),
        ratio(
            at_scale[0].median("aioloop"),
            at_scale[0].median("tokio DelayQueue")
        ),
        ratio(
            at_scale[1].median("aioloop"),
            at_scale[1].median("tokio DelayQueue")
        ),
        ratio(
            fire(&at_scale, "aioloop"),
            fire(&at_scale, "tokio DelayQueue")
        ),
        ratio(
            fire(&at_scale, "aioloop, 1 ms slack"),
            fire(&at_scale, "tokio DelayQueue")
        ),
        ratio(
            at_scale[3].median("aioloop"),
            at_scale[3].median("tokio DelayQueue")
        ),
    )];
    let mut md = format!(
        "## Timers\n\n\
         One-shot timers with delays drawn uniformly over 0–100 ms are added, half of them \
         are cancelled in random order, and the loop runs until the rest have fired; each \
         callback adds its index to a sum that is checked. Figures are CPU time (user + \
         system, `getrusage`) per timer of each phase, and the resident memory the timers \
         added at their peak (`ru_maxrss` less the resident size before), per timer. Each \
         contender runs in a fresh process on CPU 0 (`timers_1m --only`).\n\n\
         ### {} timers\n\n",
        thousands(large as f64, 0)
    );
    md.push_str(&ctx.chart("timers", "timers at scale", svg));
    md.push_str(&table(&at_scale, churn));
    md.push_str(&ctx.measured_on());
    md.push_str(&format!(
        "Lowest in this run: to add, {}; to cancel, {}; to fire, {}; in memory, {}.\n\n",
        at_scale[0].best(true),
        at_scale[1].best(true),
        at_scale[2].best(true),
        at_scale[3].best(true)
    ));
    md.push_str(&format!(
        "### {} timers, with calloop\n\n\
         calloop's timers are event sources, and its add and cancel cost grows with the \
         number of sources, so a million would take hours; it joins at this size.\n\n",
        thousands(small as f64, 0)
    ));
    md.push_str(&table(&all, 0));
    md.push_str(&ctx.measured_on());
    md.push_str(
        "Contenders: aioloop's `add_timer` and `cancel_timer` (a hierarchical timing wheel \
         of intrusive lists with an exact heap for the next 65 µs, the callbacks inline in \
         40-byte entries), precise to the microsecond, and again with \
         `set_timer_slack(1 ms)`, which lets one wake-up fire every timer due within the \
         millisecond; tokio-util's `DelayQueue` (a hierarchical timing wheel of 1 ms slots) \
         polled on a `current_thread` runtime, its most favourable form for this \
         workload since it needs no task per timer; calloop's `Timer` sources.\n\n\
         Why: in both wheels adding is a list append and cancelling an unlink; aioloop's \
         entry holds the callback inline (no box for a closure of one word, as here) and its \
         `TimerId` is 8 bytes, so the memory column is its 40-byte entry plus the 8-byte id \
         the benchmark keeps per timer (at small counts the resident size moves in steps of \
         the allocator's heap growth). Cancelling in random order is \
         cache misses in both: aioloop touches the entry and its two list neighbours. To \
         fire, aioloop moves one 65 µs slot at a time into a heap of a few hundred timers, \
         in cache, and fires them in exact deadline order; `DelayQueue` hands out each 1 ms \
         slot's values unordered. Exact deadlines also mean a wake-up per distinct deadline: \
         at 100,000 timers over 100 ms that is a timerfd arm and a poll for nearly every \
         timer, and the precise row's firing cost is then mostly the kernel's sleep and \
         wake-up, not the timer structure; 1 ms of slack, `DelayQueue`'s own resolution, \
         lets one wake-up fire every timer due within the millisecond. At a million the \
         deadlines are dense enough that each wake-up already finds many due.\n\n",
    );
    Section {
        markdown: md,
        headlines,
    }
}
