//! Signals: `kill` to the start of the callback, against the raw floor of `kill` +
//! `epoll_wait` + `read(signalfd)` (`signal_latency`).

use aioloop_bench::chart;

use crate::run::{output, pinned, result_fields};
use crate::table::{ratio, Results, Table};
use crate::{Ctx, Section};

pub fn section(ctx: &Ctx) -> Section {
    let samples = if ctx.quick { 2_000 } else { 20_000 };
    let (mut median, mut p99) = (Results::default(), Results::default());
    for _ in 0..ctx.rounds {
        let text = output(pinned(0, &ctx.tool("signal_latency")).arg(samples.to_string()));
        let f = result_fields(&text);
        median.push("aioloop", f[0] / 1e3);
        median.push("raw floor", f[2] / 1e3);
        p99.push("aioloop", f[1] / 1e3);
        p99.push("raw floor", f[3] / 1e3);
    }
    let mut table = Table::new(&["path", "median, µs", "p99, µs", "median vs floor"]);
    for (name, m) in &median.entries {
        let p = p99.get(name).unwrap();
        table.row(&[
            name.clone(),
            format!("{:.2} {}", m.median(), m.spread()),
            format!("{:.2} {}", p.median(), p.spread()),
            ratio(m.median(), median.median("raw floor")),
        ]);
    }
    let svg = chart::bars(
        "Signal latency: kill() to the callback, µs",
        "lower is better",
        &[median.group("median"), p99.group("99th percentile")],
    );
    let headlines = vec![format!(
        "Signals: kill to callback in {:.2} µs (median), {} the raw signalfd floor.",
        median.median("aioloop"),
        ratio(median.median("aioloop"), median.median("raw floor"))
    )];
    let mut md = String::from(
        "## Signals\n\n\
         A process sends itself `SIGUSR1` and runs the loop until the handler has run; the \
         handler reads the clock first thing. Interleaved with each sample, the floor: \
         `kill`, `epoll_wait` and `read` on a bare signalfd, with no loop around them.\n\n",
    );
    md.push_str(&ctx.chart("signals", "signal latency", svg));
    md.push_str(&table.render());
    md.push_str(&format!(
        "*{samples} samples per round after a 10% warm-up; {}",
        &ctx.measured_on()[1..]
    ));
    md.push_str(
        "Who wins and why: the floor has to win, since aioloop makes the same three system \
         calls; what is left is the loop's own work between them (finding the handler, \
         reading the clock, dispatching), a fraction of a microsecond.\n\n",
    );
    Section {
        markdown: md,
        headlines,
    }
}
