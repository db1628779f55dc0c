//! File operations on a FUSE file system that stalls every request never hold the loop.
//!
//! Each test runs its operations on a base that also runs a 10 ms repeating timer and serves a
//! TCP echo connection to a client thread, and checks the loop's longest hold
//! ([`Metrics::longest_hold`]) and the echo's slowest answer against a bound far below the
//! stall: "not frozen", not a latency figure (those are in `bench/src/bin/never_block.rs`).
#[path = "../../tests/scratch/mod.rs"]
mod scratch;
mod slowfs;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aioloop::{
    AioFile, AioOptions, AlignedBuf, Direction, EventBase, IoOptions, Metrics, Schedule,
};
use slowfs::{pattern, SlowFs};

/// A hold or an echo answer this long means the loop froze (the stall is several times more).
const FROZEN: Duration = Duration::from_millis(300);

const SMALL: usize = 128 << 10;
const BIG: usize = 1 << 20;
const FILES: &[(&str, usize)] = &[("small", SMALL), ("big", BIG)];

/// What the operations report, on the loop thread.
#[derive(Default)]
struct Outcome {
    pending: usize,
    done: Vec<String>,
    failures: Vec<String>,
}

impl Outcome {
    fn check(&mut self, what: String, ok: bool) {
        self.pending -= 1;
        if ok {
            self.done.push(what);
        } else {
            self.failures.push(what);
        }
    }
}

/// One operation of the test, started on the base.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Open, read the whole file at offset 0 and compare, close.
    Read {
        name: &'static str,
        direct: bool,
    },
    Stat(&'static str),
    ListRoot,
}

const EVERY_OP: &[Op] = &[
    Op::Read {
        name: "small",
        direct: false,
    },
    Op::Read {
        name: "small",
        direct: true,
    },
    Op::Read {
        name: "big",
        direct: false,
    },
    Op::Read {
        name: "big",
        direct: true,
    },
    Op::Stat("big"),
    Op::ListRoot,
];

fn start(base: &mut EventBase<Outcome>, root: &Path, op: Op, out: &mut Outcome) {
    out.pending += 1;
    let what = format!("{op:?}");
    let result = match op {
        Op::Read { name, direct } => {
            let mut options = OpenOptions::new();
            options.read(true);
            if direct {
                options.custom_flags(libc::O_DIRECT);
            }
            let len = FILES.iter().find(|f| f.0 == name).unwrap().1;
            base.open(
                root.join(name),
                &options,
                move |base, out, file| match file {
                    Ok(file) => read_and_close(base, file, name, len, what),
                    Err(e) => out.check(format!("{what}: open: {e}"), false),
                },
            )
        }
        Op::Stat(name) => base.stat(root.join(name), move |_, out, meta| {
            let size = meta.map(|m| m.len());
            out.check(
                format!("{what}: {size:?}"),
                size.as_ref().ok() == Some(&(BIG as u64)),
            )
        }),
        Op::ListRoot => base.read_dir(root, move |_, out, entries| {
            let mut names: Vec<_> = (entries.into_iter().flatten())
                .map(|e| e.name.into_string().unwrap())
                .collect();
            names.sort();
            out.check(format!("{what}: {names:?}"), names == ["big", "small"])
        }),
    };
    result.unwrap();
}

fn read_and_close(
    base: &mut EventBase<Outcome>,
    file: AioFile,
    name: &str,
    len: usize,
    what: String,
) {
    let expected = pattern(name, len);
    let buf = AlignedBuf::new(len, 4096).unwrap();
    let reading = file.clone();
    let submitted = base.read_at(&reading, 0, buf, move |base, _, buf, n| {
        let ok = n.as_ref().ok() == Some(&len) && buf[..] == expected[..];
        let what = format!("{what}: read {n:?}");
        base.close(file, move |_, out, closed| {
            out.check(format!("{what}, close {closed:?}"), ok && closed.is_ok())
        })
        .unwrap();
    });
    submitted.map_err(|e| e.into_parts().0).unwrap();
}

/// A client on its own thread that sends a byte every 10 ms to the base's echo connection and
/// times each answer.
struct EchoClient {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u32, Duration)>,
}

impl EchoClient {
    /// Connects a client to a fresh listener and hands the base the server's end.
    fn start(base: &mut EventBase<Outcome>) -> (EchoClient, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let fd = server.as_raw_fd();
        let echo = move |_: &mut EventBase<Outcome>, _: &mut Outcome, _| {
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = rw(fd, &mut buf, false) {
                rw(fd, &mut buf[..n], true).unwrap();
            }
        };
        base.set_io_handler(&server, Direction::Read, IoOptions::new(), echo)
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut answers, mut slowest) = (0, Duration::ZERO);
            client
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            while !running.load(Ordering::Relaxed) {
                let sent = Instant::now();
                client.write_all(b"x").unwrap();
                let mut byte = [0u8];
                client.read_exact(&mut byte).unwrap();
                slowest = slowest.max(sent.elapsed());
                answers += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (answers, slowest)
        });
        (EchoClient { stop, thread }, server)
    }

    /// Stops the client: (answers, slowest answer).
    fn finish(self) -> (u32, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// One `read(2)` or `write(2)` on a raw socket fd.
fn rw(fd: i32, buf: &mut [u8], write: bool) -> std::io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe {
        match write {
            true => libc::write(fd, buf.as_ptr().cast(), buf.len()),
            false => libc::read(fd, buf.as_mut_ptr().cast(), buf.len()),
        }
    };
    match n {
        -1 => Err(std::io::Error::last_os_error()),
        n => Ok(n as usize),
    }
}

/// What a run of operations looked like from the loop.
struct Report {
    outcome: Outcome,
    metrics: Metrics,
    worst_tick_gap: Duration,
    echo_answers: u32,
    slowest_echo: Duration,
    took: Duration,
}

impl Report {
    /// Every one of the `ops` operations called back with the right data.
    fn assert_all_done(&self, ops: usize) {
        let Outcome { done, failures, .. } = &self.outcome;
        assert!(failures.is_empty(), "failed: {failures:?} (done: {done:?})");
        assert_eq!(done.len(), ops, "{done:?}");
    }
}

/// Runs `ops` on the files under `root` (on `slow`, stalled by its duration, if given) on a
/// base with a 10 ms timer and an echo connection, until every operation has called back.
fn run_ops(root: &Path, slow: Option<(&SlowFs, Duration)>, ops: &[Op], helpers: bool) -> Report {
    let mut base = EventBase::<Outcome>::new().unwrap();
    if !helpers {
        base.set_aio_options(AioOptions::new().helper_threads(0))
            .unwrap();
    }
    let (echo, _server) = EchoClient::start(&mut base);
    let mut last_tick = Instant::now();
    let worst_tick_gap = std::rc::Rc::new(std::cell::Cell::new(Duration::ZERO));
    let worst = worst_tick_gap.clone();
    let period = Duration::from_millis(10);
    base.add_repeating_timer(period, Schedule::FixedRate, move |_, _, _| {
        let now = Instant::now();
        worst.set(worst.get().max(now - last_tick));
        last_tick = now;
    });
    // Let the echo client get going before the file system turns slow.
    base.run_for(&mut Outcome::default(), Duration::from_millis(50))
        .unwrap();
    if let Some((fs, stall)) = slow {
        fs.set_stall(stall);
    }
    let started = Instant::now();
    // Started from a callback, so that a blocking start counts as a hold of the loop.
    let (root, todo) = (root.to_path_buf(), ops.to_vec());
    base.add_timer(Duration::ZERO, move |base, outcome, _| {
        for op in todo {
            start(base, &root, op, outcome);
        }
        outcome.pending -= 1;
    });
    let mut outcome = Outcome {
        pending: 1, // the timer above
        ..Outcome::default()
    };
    let deadline = started + Duration::from_secs(120);
    while outcome.pending > 0 {
        assert!(
            Instant::now() < deadline,
            "operations still pending: {}",
            outcome.pending
        );
        base.run_once(&mut outcome, None).unwrap();
    }
    let took = started.elapsed();
    if let Some((fs, _)) = slow {
        fs.set_stall(Duration::ZERO);
    }
    let (echo_answers, slowest_echo) = echo.finish();
    Report {
        metrics: base.metrics(),
        outcome,
        worst_tick_gap: worst_tick_gap.get(),
        echo_answers,
        slowest_echo,
        took,
    }
}

#[test]
fn open_stat_list_and_read_on_a_stalling_file_system_never_hold_the_loop() {
    let Some(fs) = SlowFs::mount_or_skip("helpers-on", FILES) else {
        return;
    };
    let stall = Duration::from_secs(2);
    let report = run_ops(&fs.root, Some((&fs, stall)), EVERY_OP, true);
    report.assert_all_done(EVERY_OP.len());
    let metrics = &report.metrics;
    assert!(
        report.took >= stall,
        "the file system did not stall: {:?}",
        report.took
    );
    assert!(metrics.longest_hold < FROZEN, "the loop froze: {metrics:?}");
    assert!(
        report.worst_tick_gap < FROZEN,
        "timer gap {:?}",
        report.worst_tick_gap
    );
    assert!(
        report.slowest_echo < FROZEN,
        "echo took {:?}",
        report.slowest_echo
    );
    assert!(
        report.echo_answers > 50,
        "echo answered {} times",
        report.echo_answers
    );
    assert_eq!(
        metrics.aio_on_helpers, 4,
        "FUSE reads go straight to helpers: {metrics:?}"
    );
    assert_eq!(
        metrics.aio_submit_calls, 0,
        "no io_submit on a FUSE file: {metrics:?}"
    );
}

#[test]
fn with_helpers_disabled_every_operation_holds_the_loop_for_the_stall() {
    let Some(fs) = SlowFs::mount_or_skip("helpers-off", FILES) else {
        return;
    };
    let stall = Duration::from_millis(500);
    for &op in EVERY_OP {
        let report = run_ops(&fs.root, Some((&fs, stall)), &[op], false);
        report.assert_all_done(1);
        let metrics = &report.metrics;
        assert!(
            metrics.longest_hold >= stall,
            "{op:?} did not hold the loop: {metrics:?}"
        );
        assert!(
            report.worst_tick_gap >= stall,
            "{op:?}: tick gap {:?}",
            report.worst_tick_gap
        );
        assert_eq!(metrics.aio_on_helpers, 0, "{op:?} used a helper");
    }
}

#[test]
fn o_direct_reads_on_a_real_disk_stay_on_kernel_aio_with_no_helper_hop() {
    let root = scratch::ScratchDir::new("real-disk");
    for &(name, len) in FILES {
        let mut file = std::fs::File::create(root.join(name)).unwrap();
        file.write_all(&pattern(name, len)).unwrap();
        file.sync_all().unwrap(); // no dirty page cache for O_DIRECT to write back first
    }
    let reads = [
        Op::Read {
            name: "small",
            direct: true,
        },
        Op::Read {
            name: "big",
            direct: true,
        },
    ];
    let report = run_ops(&root, None, &reads, true);
    report.assert_all_done(reads.len());
    let metrics = &report.metrics;
    assert_eq!(metrics.aio_completions, 2, "{metrics:?}");
    assert!(metrics.aio_submit_calls >= 1, "{metrics:?}");
    assert_eq!(
        metrics.aio_on_helpers + metrics.aio_nowait_retries,
        0,
        "{metrics:?}"
    );
    assert!(metrics.longest_hold < FROZEN, "{metrics:?}");
}
