//! Socket echo: 64-byte ping-pong at 1, 100 and 1,000 connections, one load client for all.

use std::process::Command;
use std::time::Duration;

use aioloop_bench::chart;
use aioloop_bench::stats::thousands;

use crate::run::{number_after, output, pinned, start_server, stop_server};
use crate::table::{ratio, Results, Table};
use crate::{Ctx, Section};

/// The servers: a name and how to start it on an address.
pub const SERVERS: [(&str, &str, &[&str]); 5] = [
    ("aioloop, edge", "examples/echo", &["--addr"]),
    ("aioloop, level", "examples/echo", &["--level", "--addr"]),
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

fn measure(ctx: &Ctx, server: usize, connections: usize, port: &mut u16) -> f64 {
    *port += 1;
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = server_command(ctx, server, &addr, Some(0));
    let child = start_server(&mut cmd, &addr, Duration::from_secs(5));
    let text = output(pinned(1, &ctx.tool("echo_client")).args([
        addr.clone(),
        connections.to_string(),
        format!("{}", ctx.seconds.ceil() as u64),
    ]));
    stop_server(child);
    number_after(&text, "s:")
}

pub fn section(ctx: &Ctx) -> Section {
    let counts = [1, 100, 1000];
    let mut results: Vec<Results> = counts.iter().map(|_| Results::default()).collect();
    let mut port = 47000;
    for _ in 0..ctx.rounds {
        for (c, &connections) in counts.iter().enumerate() {
            for (i, (name, _, _)) in SERVERS.iter().enumerate() {
                let rate = measure(ctx, i, connections, &mut port);
                results[c].push(name, rate);
            }
        }
    }
    let mut table = Table::new(&[
        "connections",
        "server",
        "round trips/s",
        "spread",
        "vs raw mio",
    ]);
    let mut groups = Vec::new();
    let mut headlines = Vec::new();
    for (c, &connections) in counts.iter().enumerate() {
        let r = &results[c];
        let raw = r.median("raw mio");
        for (name, samples) in &r.entries {
            table.row(&[
                connections.to_string(),
                name.clone(),
                thousands(samples.median(), 0),
                samples.spread(),
                ratio(samples.median(), raw),
            ]);
        }
        let label = format!(
            "{connections} connection{}",
            if connections == 1 { "" } else { "s" }
        );
        groups.push(r.group(&label));
        let ours = r.median("aioloop, edge");
        let best_peer = ["tokio", "calloop"]
            .into_iter()
            .max_by(|a, b| r.median(a).total_cmp(&r.median(b)))
            .unwrap();
        headlines.push(format!(
            "Echo, {label}: aioloop (edge) {} the raw mio loop, {} {best_peer} (the faster peer).",
            ratio(ours, raw),
            ratio(ours, r.median(best_peer)),
        ));
    }
    let svg = chart::bars(
        "Echo: 64-byte round trips per second",
        "higher is better; whiskers show the range of the rounds",
        &groups,
    );
    let mut md = String::from(
        "## Socket echo\n\n\
         64-byte ping-pong over TCP on 127.0.0.1: every connection keeps one message in \
         flight, and the load client (`echo_client`, its own process on CPU 1) counts round \
         trips per second after a one-second warm-up. The server runs on CPU 0.\n\n",
    );
    md.push_str(&ctx.chart("echo", "echo round trips per second", svg));
    md.push_str(&table.render());
    md.push_str(&ctx.measured_on());
    md.push_str(
        "Contenders: `examples/echo` (edge- and level-triggered: the accept helper, a \
         buffered writer, one reused read buffer, and a short read taken as \"drained\"); \
         `mio_echo`, the textbook raw mio loop (edge-triggered, reads until `WouldBlock`); \
         `tokio_echo`, a `current_thread` runtime with one task per connection; \
         `calloop_echo`, one `Generic` source per connection. All set `TCP_NODELAY` and \
         reuse one buffer per connection or loop.\n\n\
         Who wins: at one connection every server waits on the round trip through the \
         kernel, so all sit within noise of each other. With many connections the work per \
         event decides, and aioloop saves the read that would end in `WouldBlock` as tokio \
         does (a short read on a stream socket means the socket is drained), which the \
         textbook mio loop pays for; see the dispatch cost below for the instructions \
         behind it.\n\n",
    );
    Section {
        markdown: md,
        headlines,
    }
}
