//! Never block: how long file operations on a stalling FUSE file system hold the loop, with
//! the helper threads and without them (`never_block`).

use std::process::Command;

use aioloop_bench::chart::{self, Bar, Group};

use crate::run::try_output;
use crate::{Ctx, Section};

/// The cells of `never_block`'s Markdown rows: operation, helpers, took, hold, p50, p99,
/// max, ticks missed.
fn rows(text: &str) -> Vec<Vec<String>> {
    (text.lines())
        .filter(|l| l.starts_with("| ") && !l.starts_with("| operation"))
        .map(|l| {
            (l.trim_matches('|').split('|'))
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The section when `never_block` cannot run (it mounts a FUSE file system: root and
/// `/dev/fuse`), saying why.
fn not_run(error: &str) -> Section {
    eprintln!("report: never-block left out: {error}");
    let first = error.lines().last().unwrap_or(error);
    Section {
        markdown: format!(
            "## Never block\n\nNot measured in this run: `never_block` failed ({first}). It \
             mounts a FUSE file system, so it needs root and `/dev/fuse`.\n\n"
        ),
        headlines: vec!["Never block: not measured in this run (needs root and /dev/fuse).".into()],
    }
}

pub fn section(ctx: &Ctx) -> Section {
    let mut cmd = Command::new(ctx.tool("never_block"));
    if ctx.quick {
        cmd.arg("--quick");
    }
    let text = match try_output(&mut cmd) {
        Ok(text) => text,
        Err(e) => return not_run(&e),
    };
    let rows = rows(&text);
    let mut groups: Vec<Group> = Vec::new();
    for row in &rows {
        let hold: f64 = row[3].parse().unwrap_or(f64::NAN);
        let label = if row[1] == "on" {
            "aioloop"
        } else {
            "aioloop, helpers off"
        };
        let bar = Bar {
            label: label.into(),
            value: hold,
            range: (hold, hold),
        };
        let operation = row[0].replace('`', "");
        match groups.last_mut() {
            Some(g) if g.label == operation => g.bars.push(bar),
            _ => groups.push(Group {
                label: operation,
                bars: vec![bar],
            }),
        }
    }
    let groups: Vec<Group> = groups
        .into_iter()
        .filter(|g| !g.label.starts_with("idle"))
        .collect();
    let worst = |helpers: &str| {
        (rows.iter())
            .filter(|r| r[1] == helpers && !r[0].starts_with("idle"))
            .filter_map(|r| r[3].parse::<f64>().ok())
            .fold(0.0, f64::max)
    };
    let svg = chart::bars(
        "Longest loop hold while a file operation is pending, ms",
        "lower is better; FUSE requests stall, a 10 ms timer must keep ticking",
        &groups,
    );
    let headlines = vec![format!(
        "Never block: with a file system that stalls every request, the loop's longest hold \
         is {:.2} ms with the helper threads and {:.0} ms without them.",
        worst("on"),
        worst("off")
    )];
    let table_start = text.find("| operation").unwrap_or(0);
    let mut md = String::from(
        "## Never block\n\n\
         Each row starts one file operation on a loop that also runs a 10 ms repeating \
         timer, on a FUSE file system (`fuse-tests/tests/slowfs`) whose open, getattr, read and \
         readdir each stall for 2 s (200 ms in quick mode), and where the machine allows, on the root \
         disk throttled to 64 KiB/s. Reported: how long the operation took, the loop's \
         longest hold (`Metrics::longest_hold`: from a poll's return to the next poll) and \
         the timer's lateness; times in ms.\n\n",
    );
    md.push_str(&ctx.chart("never_block", "longest loop hold", svg));
    md.push_str(&text[table_start..]);
    md.push('\n');
    md.push_str(&format!("*One run, on {}.*\n\n", ctx.machine.short()));
    md.push_str(
        "Who wins and why: with the helpers (the default), what could block (a page-cache \
         miss, a FUSE request, `open`, `stat`, a listing) runs on a helper thread and calls \
         back on the loop, so the timer keeps its time; without them the same operation \
         runs inside `io_submit` or a plain system call on the loop thread and holds it for \
         the whole stall. The exception is the throttled-disk `O_DIRECT` row: kernel AIO \
         reads a local disk asynchronously, so that read never holds the loop. \
         `tokio::fs` is not in this table: it runs every file operation on its blocking \
         pool, so it would not hold its loop either, and the issue asks for it \
         only once a later issue brings it in.\n\n",
    );
    Section {
        markdown: md,
        headlines,
    }
}
