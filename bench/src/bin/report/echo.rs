//! Socket echo: 64-byte ping-pong at 1, 100 and 1,000 connections, one load client for all.

use std::process::Command;
use std::time::Duration;

use aioloop_bench::chart;
use aioloop_bench::process::cpu_time_of;
use aioloop_bench::stats::thousands;

use crate::run::{number_after, output, pinned, rotated, start_server, stop_server};
use crate::table::{ratio, Results, Table};
use crate::{Ctx, Section};

/// The servers: a name and how to start it on an address.
pub const SERVERS: [(&str, &str, &[&str]); 4] = [
    ("aioloop", "examples/echo", &["--addr"]),
    ("raw mio", "mio_echo", &[]),
    ("tokio", "tokio_echo", &[]),
    ("calloop", "calloop_echo", &[]),
];

/// The command that starts server `i` on `addr`.
pub fn server_command(ctx: &Ctx, i: usize, addr: &str, pin: Option<usize>) -> Command {
    let (_, program, args) = SERVERS[i];
    let mut cmd = match pin {
        Some(cpu) => pinned(cpu, &ctx.tool(program)),
        None => Command::new(ctx.tool(program)),
    };
    cmd.args(args).arg(addr);
    cmd
}

/// Round trips per second, and the server's CPU time per round trip in µs (over the
/// client's whole run, warm-up included: both are counted from its first message).
fn measure(ctx: &Ctx, server: usize, connections: usize) -> (f64, f64) {
    let mut cmd = server_command(ctx, server, "127.0.0.1:0", Some(0));
    let (child, addr) = start_server(&mut cmd, Duration::from_secs(5));
    let server_cpu = || cpu_time_of(child.id()).expect("the server's CPU time");
    let before = server_cpu();
    let text = output(pinned(1, &ctx.tool("echo_client")).args([
        addr.clone(),
        connections.to_string(),
        format!("{}", ctx.seconds.ceil() as u64),
    ]));
    let cpu = server_cpu() - before;
    stop_server(child);
    let total = number_after(&text, "(");
    (number_after(&text, "s:"), cpu.as_secs_f64() * 1e6 / total)
}

pub fn section(ctx: &Ctx) -> Section {
    let counts = [1, 100, 1000];
    // Per connection count: round trips per second, and server CPU µs per round trip.
    let mut rates: Vec<Results> = counts.iter().map(|_| Results::default()).collect();
    let mut cpus: Vec<Results> = counts.iter().map(|_| Results::default()).collect();
    let servers: Vec<usize> = (0..SERVERS.len()).collect();
    for round in 0..ctx.rounds {
        for (c, &connections) in counts.iter().enumerate() {
            for i in rotated(&servers, round) {
                let name = SERVERS[i].0;
                let (rate, cpu) = measure(ctx, i, connections);
                rates[c].push(name, rate);
                cpus[c].push(name, cpu);
            }
        }
    }
    let mut table = Table::new(&[
        "connections",
        "server",
        "round trips/s",
        "vs raw mio",
        "server CPU µs per round trip",
        "vs raw mio",
    ]);
    let (mut rate_groups, mut cpu_groups) = (Vec::new(), Vec::new());
    let mut headlines = Vec::new();
    for (c, &connections) in counts.iter().enumerate() {
        let (rate, cpu) = (&rates[c], &cpus[c]);
        let (raw_rate, raw_cpu) = (rate.median("raw mio"), cpu.median("raw mio"));
        for (name, samples) in &rate.entries {
            let used = cpu.get(name).unwrap();
            table.row(&[
                connections.to_string(),
                name.clone(),
                format!("{} {}", thousands(samples.median(), 0), samples.spread()),
                ratio(samples.median(), raw_rate),
                format!("{:.2} {}", used.median(), used.spread()),
                ratio(used.median(), raw_cpu),
            ]);
        }
        let label = format!(
            "{connections} connection{}",
            if connections == 1 { "" } else { "s" }
        );
        rate_groups.push(rate.group(&label));
        cpu_groups.push(cpu.group(&label));
        let ours = cpu.median("aioloop");
        let leanest_peer = ["tokio", "calloop"]
            .into_iter()
            .min_by(|a, b| cpu.median(a).total_cmp(&cpu.median(b)))
            .unwrap();
        headlines.push(format!(
            "Echo, {label}: aioloop uses {} the raw mio loop's server CPU per round \
             trip and {} {leanest_peer}'s (the leaner peer), at {} its rate.",
            ratio(ours, raw_cpu),
            ratio(ours, cpu.median(leanest_peer)),
            ratio(rate.median("aioloop"), rate.median(leanest_peer)),
        ));
    }
    let rate_svg = chart::bars(
        "Echo: 64-byte round trips per second",
        "higher is better; whiskers show the range of the rounds",
        &rate_groups,
    );
    let cpu_svg = chart::bars(
        "Echo: server CPU time per round trip, µs (user + system)",
        "lower is better; the kernel's TCP work for the server's sends is counted here too",
        &cpu_groups,
    );
    let mut md = String::from(
        "## Socket echo\n\n\
         64-byte ping-pong over TCP on 127.0.0.1: every connection keeps one message in \
         flight, and the load client (`echo_client`, its own process on CPU 1) counts round \
         trips per second after a one-second warm-up. The server runs on CPU 0; its CPU \
         time (`/proc/PID/stat`, user + system) over the client's whole run, divided by \
         every round trip, is the cost of one. Over loopback both processes run out of CPU \
         (the sender's CPU does the receiver's TCP work too), so the rate is set by client \
         and server together, and the CPU per round trip is the fairer measure of a \
         server.\n\n",
    );
    md.push_str(&ctx.chart("echo_cpu", "echo server CPU per round trip", cpu_svg));
    md.push_str(&ctx.chart("echo", "echo round trips per second", rate_svg));
    md.push_str(&table.render());
    md.push_str(&ctx.measured_on());
    let best: Vec<String> = (counts.iter().zip(&cpus))
        .map(|(n, r)| format!("{} at {n}", r.best(true)))
        .collect();
    md.push_str(&format!(
        "Least CPU per round trip in this run: {}.\n\n",
        best.join(", ")
    ));
    md.push_str(
        "Contenders: `examples/echo` (connections the loop owns: the accept helper, a \
         write queue with back-pressure, one read buffer shared by all connections, and a \
         short read taken as \"drained\" unless the peer also closed); \
         `mio_echo`, the textbook raw mio loop (edge-triggered, reads until `WouldBlock`); \
         `tokio_echo`, a `current_thread` runtime with one task per connection; \
         `calloop_echo`, one `Generic` source per connection. All set `TCP_NODELAY` and \
         reuse one buffer per connection or loop.\n\n\
         Why: at one connection every server waits on the round trip through the kernel \
         (two system calls and a wake-up on each side), so all sit close together. With \
         many connections each poll returns many events and the work per event decides: \
         aioloop, like tokio, takes a short read on a stream socket as \"drained\" and \
         skips the read that would end in `WouldBlock`, which the textbook mio loop pays \
         for; calloop and tokio pay for their own dispatch (see the instruction counts \
         below). The system calls dominate either way, so the servers differ by less than \
         their user-space instruction counts suggest: about 6 µs of a round trip is the \
         kernel's, and a few hundred instructions are a fraction of a microsecond.\n\n",
    );
    Section {
        markdown: md,
        headlines,
    }
}
