//! File reads: `O_DIRECT` random and sequential reads against fio's libaio and io_uring
//! engines and a `pread` thread pool; cached buffered reads against a `pread` loop.

use std::path::Path;
use std::process::Command;

use aioloop_bench::chart;
use aioloop_bench::process::drop_cached_pages;
use aioloop_bench::stats::thousands;

use crate::run::{number_after, output, pinned, rotated, try_output};
use crate::table::{ratio, Results, Table};
use crate::{data_file, Ctx, Section};

struct Workload {
    label: &'static str,
    block: u64,
    depth: u32,
    sequential: bool,
    buffered: bool,
}

const WORKLOADS: [Workload; 5] = [
    Workload {
        label: "4 KiB random, depth 1",
        block: 4096,
        depth: 1,
        sequential: false,
        buffered: false,
    },
    Workload {
        label: "4 KiB random, depth 32",
        block: 4096,
        depth: 32,
        sequential: false,
        buffered: false,
    },
    Workload {
        label: "4 KiB random, depth 128",
        block: 4096,
        depth: 128,
        sequential: false,
        buffered: false,
    },
    Workload {
        label: "128 KiB sequential, depth 32",
        block: 128 << 10,
        depth: 32,
        sequential: true,
        buffered: false,
    },
    Workload {
        label: "4 KiB random from the page cache, depth 1",
        block: 4096,
        depth: 1,
        sequential: false,
        buffered: true,
    },
];

#[derive(Clone, Copy)]
enum Contender {
    Aioloop,
    Threads,
    Fio(&'static str),
}

impl Contender {
    /// The contender's name, the same in every group so that its bars share a colour.
    fn name(self, w: &Workload) -> String {
        match self {
            Contender::Aioloop => "aioloop".into(),
            Contender::Threads if w.buffered => "pread loop".into(),
            Contender::Threads => "pread threads".into(),
            Contender::Fio(engine) => format!("fio {engine}"),
        }
    }
}

/// IOPS, MB/s, mean and p99 latency (µs), CPU µs per I/O.
type Figures = [f64; 5];

fn ours(ctx: &Ctx, file: &Path, w: &Workload, threads: bool) -> Figures {
    let mut cmd = pinned(0, &ctx.tool("random_read"));
    cmd.arg(file)
        .args(["--depth", &w.depth.to_string()])
        .args(["--block", &w.block.to_string()])
        .args(["--seconds", &ctx.seconds.to_string()]);
    for (on, flag) in [
        (w.sequential, "--seq"),
        (w.buffered, "--buffered"),
        (threads, "--threads"),
    ] {
        if on {
            cmd.arg(flag);
        }
    }
    let text = output(&mut cmd);
    ["iops", "mb/s", "lat_mean_us", "lat_p99_us", "cpu_us_per_io"].map(|k| number_after(&text, k))
}

/// fio's figures, or `None` (with a warning) where fio cannot run the engine, e.g. a
/// kernel with io_uring disabled.
fn fio(ctx: &Ctx, file: &Path, w: &Workload, engine: &str) -> Option<Figures> {
    let mut cmd = Command::new("fio");
    cmd.args([
        "--name=bench",
        "--cpus_allowed=0",
        "--time_based",
        "--norandommap",
        "--randrepeat=0",
        "--iomem=mmap",
        "--lat_percentiles=1",
        "--output-format=json",
        "--direct=1",
    ])
    .arg(format!("--filename={}", file.display()))
    .arg(format!(
        "--rw={}",
        if w.sequential { "read" } else { "randread" }
    ))
    .arg(format!("--bs={}", w.block))
    .arg(format!("--iodepth={}", w.depth))
    .arg(format!("--runtime={}", ctx.seconds.ceil() as u64))
    .arg(format!("--ioengine={engine}"));
    match engine {
        "libaio" => cmd.arg("--userspace_reap=1"),
        _ => cmd.args(["--fixedbufs=1", "--registerfiles=1"]),
    };
    let json = match try_output(&mut cmd) {
        Ok(json) => json,
        Err(e) => {
            eprintln!("report: fio {engine} left out: {e}");
            return None;
        }
    };
    let read = &json[json.find("\"read\"").expect("fio's read figures")..];
    let lat = &read[read.find("\"lat_ns\"").expect("fio's latency figures")..];
    let ios = number_after(read, "\"total_ios\"");
    let cpu_pct = number_after(&json, "\"usr_cpu\"") + number_after(&json, "\"sys_cpu\"");
    let runtime_s = number_after(&json, "\"job_runtime\"") / 1e3;
    Some([
        number_after(read, "\"iops\""),
        number_after(read, "\"bw_bytes\"") / 1e6,
        number_after(lat, "\"mean\"") / 1e3,
        number_after(lat, "\"99.000000\"") / 1e3,
        cpu_pct / 100.0 * runtime_s * 1e6 / ios,
    ])
}

fn contenders(w: &Workload) -> Vec<Contender> {
    if w.buffered {
        vec![Contender::Aioloop, Contender::Threads]
    } else {
        vec![
            Contender::Aioloop,
            Contender::Fio("libaio"),
            Contender::Fio("io_uring"),
            Contender::Threads,
        ]
    }
}

/// Reads the whole file once, so the buffered workload finds it cached.
fn warm(file: &Path) {
    std::io::copy(
        &mut std::fs::File::open(file).expect("the data file"),
        &mut std::io::sink(),
    )
    .expect("reading the data file");
}

pub fn section(ctx: &Ctx) -> Section {
    let file = data_file(ctx);
    // Per workload, per figure.
    let mut results: Vec<[Results; 5]> = WORKLOADS.iter().map(|_| Default::default()).collect();
    for round in 0..ctx.rounds {
        for (w, figures) in WORKLOADS.iter().zip(&mut results) {
            if w.buffered {
                warm(&file);
            }
            for c in rotated(&contenders(w), round) {
                let values = match c {
                    Contender::Aioloop => ours(ctx, &file, w, false),
                    Contender::Threads => ours(ctx, &file, w, true),
                    Contender::Fio(engine) => match fio(ctx, &file, w, engine) {
                        Some(values) => values,
                        None => continue,
                    },
                };
                for (figure, v) in figures.iter_mut().zip(values) {
                    figure.push(&c.name(w), v);
                }
            }
            if w.buffered {
                // The next round's `O_DIRECT` reads find the file as the first round did.
                let opened = std::fs::File::open(&file).expect("the data file");
                drop_cached_pages(&opened).expect("posix_fadvise");
            }
        }
    }
    let mut table = Table::new(&[
        "workload",
        "contender",
        "IOPS",
        "MB/s",
        "mean latency, µs",
        "p99 latency, µs",
        "CPU µs per read",
        "IOPS vs fio libaio",
    ]);
    let mut groups = Vec::new();
    let mut headlines = Vec::new();
    for (w, figures) in WORKLOADS.iter().zip(&results) {
        let reference = if w.buffered {
            figures[0].median("pread loop")
        } else {
            figures[0].median("fio libaio")
        };
        for (name, iops) in &figures[0].entries {
            let m = |i: usize, decimals| thousands(figures[i].median(name), decimals);
            table.row(&[
                w.label.to_string(),
                name.clone(),
                format!("{} {}", m(0, 0), iops.spread()),
                m(1, 1),
                m(2, 1),
                m(3, 1),
                m(4, 2),
                if w.buffered {
                    "—".into()
                } else {
                    ratio(iops.median(), reference)
                },
            ]);
        }
        let (figure, unit) = if w.sequential {
            (1, "MB/s")
        } else {
            (0, "IOPS")
        };
        groups.push(figures[figure].group(&format!("{}, {unit}", w.label)));
        let peer = if w.buffered {
            "a pread loop"
        } else {
            "fio libaio"
        };
        headlines.push(format!(
            "File reads, {}: aioloop {} {peer}'s IOPS{}.",
            w.label,
            ratio(figures[0].median("aioloop"), reference),
            if w.buffered {
                String::new()
            } else {
                format!(
                    ", {} fio io_uring's",
                    ratio(
                        figures[0].median("aioloop"),
                        figures[0].median("fio io_uring")
                    )
                )
            }
        ));
    }
    let svg = chart::bars(
        "File reads: aioloop beside fio and a pread thread pool",
        "higher is better; O_DIRECT unless the page cache is named",
        &groups,
    );
    let mut md = format!(
        "## File reads\n\n\
         Reads of a {} file of random data on the machine's disk, for {} s per run: \
         `O_DIRECT` random 4 KiB reads at depths 1, 32 and 128, and 128 KiB sequential reads \
         at depth 32; then buffered 4 KiB random reads of the same file fully cached. \
         aioloop (`random_read`) keeps DEPTH `read_at` requests in flight, each completion \
         submitting the next from its callback; latency runs from the request to its \
         callback. Everything runs on CPU 0.\n\n",
        if ctx.quick { "256 MiB" } else { "1 GiB" },
        ctx.seconds
    );
    md.push_str(&ctx.chart("files", "file read throughput", svg));
    md.push_str(&table.render());
    md.push_str(&ctx.measured_on());
    let best: Vec<String> = (WORKLOADS.iter().zip(&results))
        .map(|(w, figures)| format!("{}: {}", w.label, figures[0].best(false)))
        .collect();
    md.push_str(&format!(
        "Most reads per second in this run: {}.\n\n",
        best.join("; ")
    ));
    md.push_str(
        "Contenders: fio 3 with `--ioengine=libaio --userspace_reap=1` (completions reaped \
         from the ring in user space, as aioloop does) and with `--ioengine=io_uring \
         --fixedbufs=1 --registerfiles=1` (pre-registered buffers and file; no \
         `sqthread_poll`, which would add a kernel thread on another CPU), both with \
         `--iomem=mmap`; `random_read --threads`, DEPTH threads each doing blocking `pread` \
         after `pread`, the shape of `tokio::fs` or a libuv thread pool without their \
         hand-offs; for the cached row, one thread doing `pread` after `pread`. fio's CPU \
         time is its `usr_cpu + sys_cpu` over the run; ours is `getrusage` of the whole \
         process.\n\n",
    );
    md.push_str(
        "Why: at depth 1 each read waits on the device, so every contender shows the \
         disk's latency, and the CPU per read is mostly the kernel's. With many reads in \
         flight what counts is how soon each request reaches the device. fio's libaio \
         engine submits each read on its own; aioloop submits a sequential run in one \
         `io_submit`, where the block layer's plug merges it, and scattered reads two per \
         call, because a call of more than two plugs the queue and holds the first read \
         until the last is prepared (measured while writing this report: one call for \
         all 32 cost ~20% of the IOPS at depth 32). Both reap completions from the \
         ring in user space. io_uring's lead on 128 KiB reads comes from its registered \
         buffers (`--fixedbufs`), which spare the kernel pinning each read's 32 user \
         pages: without them it read at libaio's speed on this machine (about 950 MB/s \
         each, measured while writing this report). Kernel AIO has no registered \
         buffers, so matching it there would take io_uring itself. A thread pool pays a context switch per read. From the page \
         cache, aioloop reads inline with `preadv2(RWF_NOWAIT)`, one system call like the \
         plain loop, plus boxing the callback and dispatching it on the next turn of the \
         loop.\n\n",
    );
    Section {
        markdown: md,
        headlines,
    }
}
