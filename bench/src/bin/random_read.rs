//! File reads for a fixed time with a fixed number in flight: through aioloop's `read_at`,
//! or through a pool of threads calling `pread`, the contenders of `report`'s file table
//! beside fio.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin random_read -- FILE [--depth N] [--seconds S]
//!     [--block BYTES] [--seq] [--buffered] [--threads]
//! ```
//!
//! Defaults: depth 32, 5 seconds, 4096-byte `O_DIRECT` reads at block-aligned offsets drawn
//! uniformly (xorshift) over the file. `--seq` reads the file in order instead, wrapping at
//! its end; `--buffered` reads through the page cache; `--threads` runs DEPTH threads, each
//! doing one blocking `pread` after another, instead of one aioloop base. On the base, each
//! completion submits the next read from its callback, with the buffer it got back.
//!
//! Prints one line: `iops N mb/s X lat_mean_us M lat_p99_us P cpu_us_per_io C`, latency
//! being from submission to the callback (or across `pread`), CPU time user plus system of
//! the whole process.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aioloop::{AioFile, AioOptions, AlignedBuf, EventBase};
use aioloop_bench::process::cpu_time;
use aioloop_bench::stats::quantile;
use aioloop_bench::xorshift;

/// Where the next read goes: random or in order, shared by all threads of a pool.
struct Offsets {
    blocks: u64,
    block: u64,
    sequential: bool,
    next: AtomicU64,
}

impl Offsets {
    fn next(&self, rng: &mut u64) -> u64 {
        let index = if self.sequential {
            self.next.fetch_add(1, Ordering::Relaxed) % self.blocks
        } else {
            xorshift(rng) % self.blocks
        };
        index * self.block
    }
}

struct Reader {
    file: AioFile,
    offsets: Offsets,
    rng: u64,
    until: Instant,
    latencies_ns: Vec<u64>,
}

fn submit(base: &mut EventBase<Reader>, reader: &mut Reader, buf: AlignedBuf) {
    let offset = reader.offsets.next(&mut reader.rng);
    let file = reader.file.clone();
    let sent = Instant::now();
    let submitted = base.read_at(&file, offset, buf, move |base, reader, buf, n| {
        reader.latencies_ns.push(sent.elapsed().as_nanos() as u64);
        assert_eq!(n.expect("read failed"), reader.offsets.block as usize);
        if base.now() < reader.until {
            submit(base, reader, buf);
        }
    });
    if let Err(e) = submitted {
        panic!("read_at refused: {}", e.error());
    }
}

fn on_base(args: &Args, offsets: Offsets) -> std::io::Result<Vec<u64>> {
    let file = AioFile::open(&args.path, !args.buffered)?;
    let mut base = EventBase::<Reader>::new()?;
    base.set_aio_options(AioOptions::new().max_in_flight(args.depth))?;
    let mut reader = Reader {
        file,
        offsets,
        rng: 0x9e37_79b9_7f4a_7c15,
        until: Instant::now() + args.time,
        latencies_ns: Vec::with_capacity(1 << 20),
    };
    for _ in 0..args.depth {
        let buf = AlignedBuf::new(reader.offsets.block as usize, 4096)?;
        submit(&mut base, &mut reader, buf);
    }
    base.set_exit_when_empty(true);
    base.run(&mut reader)?;
    eprintln!("{:?}", base.metrics());
    Ok(reader.latencies_ns)
}

fn on_threads(args: &Args, offsets: Offsets) -> std::io::Result<Vec<u64>> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = if args.buffered { 0 } else { libc::O_DIRECT };
    let file = File::options()
        .read(true)
        .custom_flags(flags)
        .open(&args.path)?;
    let until = Instant::now() + args.time;
    let (file, offsets) = (&file, &offsets);
    let latencies = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.depth)
            .map(|i| {
                s.spawn(move || {
                    let mut buf = AlignedBuf::new(offsets.block as usize, 4096).unwrap();
                    let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (u64::from(i) + 1) << 32;
                    let mut lat = Vec::with_capacity(1 << 16);
                    while Instant::now() < until {
                        let offset = offsets.next(&mut rng);
                        let sent = Instant::now();
                        let n = file.read_at(&mut buf, offset).expect("pread failed");
                        lat.push(sent.elapsed().as_nanos() as u64);
                        assert_eq!(n, offsets.block as usize);
                    }
                    lat
                })
            })
            .collect();
        let lists = workers.into_iter().map(|w| w.join().unwrap());
        lists.flatten().collect()
    });
    Ok(latencies)
}

struct Args {
    path: String,
    depth: u32,
    time: Duration,
    block: u64,
    sequential: bool,
    buffered: bool,
    threads: bool,
}

fn parse() -> Args {
    let mut args = Args {
        path: String::new(),
        depth: 32,
        time: Duration::from_secs(5),
        block: 4096,
        sequential: false,
        buffered: false,
        threads: false,
    };
    let mut it = std::env::args().skip(1);
    let usage = "usage: random_read FILE [--depth N] [--seconds S] [--block BYTES] [--seq] \
                 [--buffered] [--threads]";
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match a.as_str() {
            "--depth" => args.depth = value("--depth").parse().expect("--depth N"),
            "--seconds" => {
                let s: f64 = value("--seconds").parse().expect("--seconds S");
                args.time = Duration::from_secs_f64(s);
            }
            "--block" => args.block = value("--block").parse().expect("--block BYTES"),
            "--seq" => args.sequential = true,
            "--buffered" => args.buffered = true,
            "--threads" => args.threads = true,
            _ if a.starts_with("--") => panic!("{usage}"),
            _ => args.path = a,
        }
    }
    assert!(!args.path.is_empty(), "{usage}");
    args
}

fn main() -> std::io::Result<()> {
    let args = parse();
    let len = std::fs::metadata(&args.path)?.len();
    let offsets = Offsets {
        blocks: len / args.block,
        block: args.block,
        sequential: args.sequential,
        next: AtomicU64::new(0),
    };
    let (started, cpu_before) = (Instant::now(), cpu_time());
    let mut latencies = if args.threads {
        on_threads(&args, offsets)?
    } else {
        on_base(&args, offsets)?
    };
    let (secs, cpu) = (started.elapsed().as_secs_f64(), cpu_time() - cpu_before);
    let n = latencies.len() as f64;
    let iops = n / secs;
    let mean_us = latencies.iter().sum::<u64>() as f64 / n / 1e3;
    let p99_us = quantile(&mut latencies, 0.99) as f64 / 1e3;
    println!(
        "iops {iops:.0} mb/s {:.1} lat_mean_us {mean_us:.1} lat_p99_us {p99_us:.1} \
         cpu_us_per_io {:.2}",
        iops * args.block as f64 / 1e6,
        cpu.as_secs_f64() * 1e6 / n
    );
    Ok(())
}
