//! How long file operations hold the loop on a slow file system, with the helper threads and
//! without them: the figures behind `fuse-tests/tests/slow_fs.rs`.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin never_block -- [--stall-ms MS] [--quick]
//! ```
//!
//! Each row starts one operation (from a callback, so that whatever blocks counts as a hold)
//! on a base that runs a 10 ms repeating timer, and runs until it completes and 100 ms more.
//! Reported: how long the operation took, the loop's longest hold (`Metrics::longest_hold`),
//! and the timer's lateness p50/p99/max (`Instant::now()` in the callback minus the deadline
//! it was scheduled for) with the ticks it missed.
//!
//! Rows: an idle loop; on a FUSE file system stalling each request MS (default 2000):
//! `read_at` of 128 KiB and 1 MiB, buffered and `O_DIRECT`, `open`, `stat` and `read_dir`;
//! on the root disk throttled to 64 KiB/s with a cgroup v1 `blkio` limit (root only; skipped
//! with a message otherwise): an uncached 128 KiB read, buffered and `O_DIRECT`. `--quick`
//! stalls 200 ms and skips the 1 MiB rows.

#[path = "../../../fuse-tests/tests/slowfs/mod.rs"]
mod slowfs;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aioloop::{AioFile, AioOptions, AlignedBuf, EventBase, Schedule};
use slowfs::SlowFs;

const PERIOD: Duration = Duration::from_millis(10);
const TAIL: Duration = Duration::from_millis(100);

/// What one row measures.
#[derive(Clone, Copy)]
enum Op {
    Idle(Duration),
    Read { len: usize },
    Open,
    Stat,
    List,
}

#[derive(Default)]
struct Probe {
    /// The deadline of the timer's next tick.
    due: Option<Instant>,
    late: Vec<Duration>,
    missed: u64,
    /// When the operation called back.
    done: Option<Instant>,
}

/// Starts `op` on `path` (a file, or the directory for `List`); its callback sets `done`.
fn start(base: &mut EventBase<Probe>, op: Op, path: &Path, file: Option<&AioFile>) {
    let done = |_: &mut EventBase<Probe>, probe: &mut Probe| probe.done = Some(Instant::now());
    let started = match op {
        Op::Idle(_) => Ok(()),
        Op::Read { len } => {
            let buf = AlignedBuf::new(len, 4096).unwrap();
            let file = file.expect("a read needs its file");
            base.read_at(file, 0, buf, move |base, probe, _, n| {
                assert_eq!(n.unwrap(), len, "short read");
                done(base, probe)
            })
            .map(drop)
            .map_err(|e| e.into_parts().0)
        }
        Op::Open => base
            .open(
                path,
                OpenOptions::new().read(true),
                move |base, probe, f| {
                    f.unwrap();
                    done(base, probe)
                },
            )
            .map(drop),
        Op::Stat => base
            .stat(path, move |base, probe, m| {
                m.unwrap();
                done(base, probe)
            })
            .map(drop),
        Op::List => base
            .read_dir(path, move |base, probe, entries| {
                entries.unwrap();
                done(base, probe)
            })
            .map(drop),
    };
    started.unwrap();
}

/// One row's figures.
struct Row {
    took: Duration,
    hold: Duration,
    late: [Duration; 3],
    missed: u64,
}

/// Runs `op` once on a fresh base; `arm` makes it slow and `disarm` fast again.
fn measure(
    op: Op,
    helpers: bool,
    path: &Path,
    file: Option<&AioFile>,
    arm: &dyn Fn(),
    disarm: &dyn Fn(),
) -> Row {
    let mut base = EventBase::<Probe>::new().unwrap();
    if !helpers {
        base.set_aio_options(AioOptions::new().helper_threads(0))
            .unwrap();
    }
    base.add_repeating_timer(PERIOD, Schedule::FixedRate, |_, probe, _| {
        let now = Instant::now();
        let due = probe.due.unwrap();
        probe.late.push(now - due);
        // A FixedRate timer keeps its phase: after a stall it fires once, then at the first
        // slot after now.
        let mut next = due + PERIOD;
        while next <= now {
            next += PERIOD;
            probe.missed += 1;
        }
        probe.due = Some(next);
    });
    let mut probe = Probe {
        due: Some(Instant::now() + PERIOD),
        ..Probe::default()
    };
    // Warm up: the timerfd, the helper threads, the AIO context.
    base.run_for(&mut probe, Duration::from_millis(50)).unwrap();
    arm();
    let (path, file) = (path.to_path_buf(), file.cloned());
    base.add_timer(Duration::ZERO, move |base, probe, _| {
        *probe = Probe {
            due: probe.due,
            ..Probe::default()
        };
        start(base, op, &path, file.as_ref());
    });
    let before = base.metrics().longest_hold;
    let started = Instant::now();
    match op {
        Op::Idle(d) => base.run_for(&mut probe, d).unwrap(),
        _ => {
            while probe.done.is_none() {
                base.run_once(&mut probe, None).unwrap();
            }
            base.run_for(&mut probe, TAIL).unwrap();
        }
    }
    disarm();
    let took = probe.done.map_or(started.elapsed(), |d| d - started);
    let hold = base.metrics().longest_hold;
    assert!(before <= hold);
    let mut late = probe.late;
    late.sort();
    let pct = |p: f64| late[((late.len() - 1) as f64 * p).round() as usize];
    Row {
        took,
        hold,
        late: [pct(0.5), pct(0.99), pct(1.0)],
        missed: probe.missed,
    }
}

fn ms(d: Duration) -> String {
    match d.as_secs_f64() * 1e3 {
        x if x < 10.0 => format!("{x:.2}"),
        x => format!("{x:.0}"),
    }
}

fn print_row(what: &str, helpers: bool, row: &Row) {
    let [p50, p99, max] = row.late;
    println!(
        "| {what} | {} | {} | {} | {} | {} | {} | {} |",
        if helpers { "on" } else { "off" },
        ms(row.took),
        ms(row.hold),
        ms(p50),
        ms(p99),
        ms(max),
        row.missed
    );
    io::stdout().flush().unwrap();
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let stall = match args.iter().position(|a| a == "--stall-ms") {
        Some(i) => Duration::from_millis(args[i + 1].parse().expect("--stall-ms MS")),
        None if quick => Duration::from_millis(200),
        None => Duration::from_secs(2),
    };
    println!(
        "never_block: 10 ms timer; FUSE stall {} ms per request; times in ms\n",
        stall.as_millis()
    );
    println!("| operation | helpers | took | longest hold | late p50 | late p99 | late max | ticks missed |");
    println!("|---|---|---|---|---|---|---|---|");
    let nothing = || {};
    for helpers in [true, false] {
        let idle = measure(
            Op::Idle(Duration::from_secs(2)),
            helpers,
            Path::new("/"),
            None,
            &nothing,
            &nothing,
        );
        print_row("idle loop, 2 s", helpers, &idle);
    }
    fuse_rows(stall, quick)?;
    throttled_rows();
    Ok(())
}

fn fuse_rows(stall: Duration, quick: bool) -> io::Result<()> {
    let files = [("small", 128 << 10), ("big", 1 << 20)];
    let fs = SlowFs::mount("never-block", &files)?;
    let arm = || fs.set_stall(stall);
    let disarm = || fs.set_stall(Duration::ZERO);
    for (name, len) in files {
        if quick && len > 128 << 10 {
            continue;
        }
        for direct in [false, true] {
            let what = format!(
                "FUSE `read_at` {} KiB, {}",
                len >> 10,
                if direct { "O_DIRECT" } else { "buffered" }
            );
            for helpers in [true, false] {
                // A fresh open starts cold: FUSE drops the file's page cache on open.
                let file = AioFile::open(fs.path(name), direct)?;
                let row = measure(
                    Op::Read { len },
                    helpers,
                    &fs.path(name),
                    Some(&file),
                    &arm,
                    &disarm,
                );
                print_row(&what, helpers, &row);
            }
        }
    }
    let others = [
        (Op::Open, "FUSE `open`", fs.path("small")),
        (Op::Stat, "FUSE `stat`", fs.path("small")),
        (Op::List, "FUSE `read_dir`", fs.root.clone()),
    ];
    for (op, what, path) in others {
        for helpers in [true, false] {
            print_row(
                what,
                helpers,
                &measure(op, helpers, &path, None, &arm, &disarm),
            );
        }
    }
    Ok(())
}

/// A cgroup v1 `blkio` group that throttles reads of the root disk to 64 KiB/s.
struct Throttle {
    group: PathBuf,
}

impl Throttle {
    const ROOT: &str = "/sys/fs/cgroup/blkio";

    fn new(file: &Path) -> io::Result<Throttle> {
        let dev = std::fs::metadata(file).map(|m| std::os::unix::fs::MetadataExt::dev(&m))?;
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        // A partition's reads are throttled on its whole disk.
        let disk = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))?;
        let disk = match disk.join("partition").exists() {
            true => disk.parent().unwrap().join("dev"),
            false => disk.join("dev"),
        };
        let disk = std::fs::read_to_string(disk)?;
        let group = Path::new(Self::ROOT).join("aioloop-never-block");
        if !group.exists() {
            std::fs::create_dir(&group)?;
        }
        let limit = format!("{} 65536", disk.trim());
        std::fs::write(group.join("blkio.throttle.read_bps_device"), limit)?;
        Ok(Throttle { group })
    }

    fn enter(&self) {
        std::fs::write(
            self.group.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .unwrap();
    }

    fn leave(&self) {
        std::fs::write(
            Path::new(Self::ROOT).join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .unwrap();
    }
}

fn throttled_rows() {
    let dir = std::env::temp_dir().join("aioloop-never-block");
    let path = dir.join("throttled");
    let setup = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, vec![7u8; 4 << 20]))
        .and_then(|()| Throttle::new(&path));
    let throttle = match setup {
        Ok(t) => t,
        Err(e) => {
            return println!(
                "\n(throttled-disk rows skipped: {e}; they need root and cgroup v1 blkio)"
            )
        }
    };
    for direct in [false, true] {
        let file = AioFile::open(&path, direct).unwrap();
        let what = format!(
            "disk at 64 KiB/s, uncached `read_at` 128 KiB, {}",
            if direct { "O_DIRECT" } else { "buffered" }
        );
        for helpers in [true, false] {
            let arm = || {
                evict(&file);
                throttle.enter();
            };
            let disarm = || throttle.leave();
            let row = measure(
                Op::Read { len: 128 << 10 },
                helpers,
                &path,
                Some(&file),
                &arm,
                &disarm,
            );
            print_row(&what, helpers, &row);
        }
    }
}

/// Drops the file's pages from the page cache.
fn evict(file: &AioFile) {
    file.file().sync_all().unwrap();
    aioloop_bench::process::drop_cached_pages(file).unwrap();
}
