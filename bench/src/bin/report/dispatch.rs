//! Dispatch cost: user-space instructions per echo round trip under callgrind (deterministic,
//! unlike time), and heap allocations per event.

use std::process::Command;
use std::time::Duration;

use aioloop_bench::chart::{self, Bar, Group};
use aioloop_bench::stats::thousands;

use crate::echo::{server_command, SERVERS};
use crate::run::{output, result_fields, start_server, stop_server};
use crate::table::{ratio, Table};
use crate::{data_file, Ctx, Section};

/// Total instructions callgrind counted for a server that answered `round_trips` pings.
fn instructions(ctx: &Ctx, server: usize, round_trips: u64) -> f64 {
    let out = ctx.scratch.join("callgrind.out");
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()));
    let server_cmd = server_command(ctx, server, "127.0.0.1:0", None);
    cmd.arg(server_cmd.get_program())
        .args(server_cmd.get_args());
    let (child, addr) = start_server(&mut cmd, Duration::from_secs(60));
    output(Command::new(ctx.tool("pingpong")).args([addr, round_trips.to_string()]));
    std::thread::sleep(Duration::from_millis(300));
    stop_server(child);
    let text = std::fs::read_to_string(&out).expect("callgrind's output");
    let _ = std::fs::remove_file(&out);
    let totals = (text.lines())
        .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:")))
        .expect("a callgrind summary line");
    totals.trim().parse().expect("an instruction count")
}

pub fn section(ctx: &Ctx) -> Section {
    // Two runs per server; their difference leaves start-up, the probe connection and
    // shutdown out.
    let (short, long) = if ctx.quick {
        (1_000, 3_000)
    } else {
        (5_000, 15_000)
    };
    let per_trip: Vec<f64> = (0..SERVERS.len())
        .map(|i| {
            let a = instructions(ctx, i, short);
            let b = instructions(ctx, i, long);
            (b - a) / (long - short) as f64
        })
        .collect();
    let raw = per_trip[1];
    let mut table = Table::new(&["server", "instructions per round trip", "vs raw mio"]);
    for ((name, _, _), n) in SERVERS.iter().zip(&per_trip) {
        table.row(&[name.to_string(), thousands(*n, 0), ratio(*n, raw)]);
    }
    let group = Group {
        label: "one connection, 64-byte ping-pong".into(),
        bars: (SERVERS.iter().zip(&per_trip))
            .map(|((name, _, _), &n)| Bar {
                label: name.to_string(),
                value: n,
                range: (n, n),
            })
            .collect(),
    };
    let svg = chart::bars(
        "User-space instructions per echo round trip (callgrind)",
        "lower is better; each round trip is one readable event, a read and a write",
        &[group],
    );
    let allocs = result_fields(&output(
        Command::new(ctx.tool("allocs")).arg(data_file(ctx)),
    ));
    let best_peer = per_trip[2].min(per_trip[3]);
    let headlines = vec![format!(
        "Dispatch: {} user-space instructions per echo round trip, {} the raw mio loop and \
         {} the leaner of tokio and calloop; 0 heap allocations per readiness event.",
        thousands(per_trip[0], 0),
        ratio(per_trip[0], raw),
        ratio(per_trip[0], best_peer)
    )];
    let mut md = String::from(
        "## Dispatch cost\n\n\
         The same echo servers under `valgrind --tool=callgrind`, which counts instructions \
         run in user space (the kernel's share is the same for all: one `epoll_wait`, one \
         `read`, one `write` per round trip, plus the read that finds the socket drained, \
         where a server makes it). One connection; `pingpong` sends a 64-byte message and \
         waits for it back, for two run lengths whose difference, divided by the extra round \
         trips, gives the cost of one.\n\n",
    );
    md.push_str(&ctx.chart("dispatch", "instructions per round trip", svg));
    md.push_str(&table.render());
    md.push_str(&format!(
        "*Deterministic (one run each), {}.*\n\n",
        ctx.machine.short()
    ));
    md.push_str(
        "Why: the raw mio loop is the floor, with one buffer, no callbacks and no timers. \
         aioloop's extra instructions buy: two clock reads per poll (before it, for the \
         timeout and the `longest_hold` metric; after it, the loop time that timers and \
         inactivity timeouts use), the handler table's generation and install checks \
         that keep a stale event or a handler replaced mid-batch from running, lending the \
         boxed callback out and back (a callback may remove its own handler), each \
         connection's idle timeout, the writer's queue check, and the other sources' \
         before-poll checks (AIO submission, timerfd). tokio pays for its tasks and wakers, \
         calloop for its source dispatch and shared `RefCell`s. Reaching 2× the raw loop \
         would take about 40 more instructions off: the before-poll clock read when no \
         deadline is near and metrics are off, or a cheaper readiness conversion.\n\n",
    );
    let mut allocations = Table::new(&["what is dispatched", "heap allocations each"]);
    let rows = [
        "a readiness event, or a repeating timer's expiry",
        "a one-shot timer, added then fired",
        "an `O_DIRECT` `read_at`, submitted then completed",
    ];
    for (what, n) in rows.iter().zip(&allocs) {
        allocations.row(&[what.to_string(), format!("{n:.2}")]);
    }
    md.push_str(
        "Heap allocations per event in steady state, counted by a global allocator \
         (`allocs`; `tests/alloc.rs` pins the first two rows at 0):\n\n",
    );
    md.push_str(&allocations.render());
    md.push_str(
        "A one-shot timer stores its callback in its table entry when the closure fits in \
         a word (it captures one integer, index or pointer, as here), and in a box otherwise; \
         a file request stores its callback in a box (one allocation unless the closure \
         captures nothing), because each callback has its own type; persistent handlers and \
         repeating timers are boxed once, when they are set.\n\n",
    );
    Section {
        markdown: md,
        headlines,
    }
}
