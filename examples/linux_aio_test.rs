//! Reads a whole file through kernel AIO on the event base, in fixed-size chunks with a bounded
//! number of requests in flight, submitting the next chunk as each completes (the Lisp
//! `linux-aio-test` of seed 000, on aioloop).
//!
//! ```text
//! cargo run --release --example linux_aio_test -- [--direct] [--chunk-size BYTES] [--depth N] [--output PATH] FILE
//! ```
//!
//! Prints bytes, chunks, elapsed time and MB/s on stdout, and a progress line on stderr every
//! second. With `--output`, the bytes read are written to PATH at their offsets, so
//! `cmp FILE PATH` checks them. Without `--direct` the reads are buffered, which kernel AIO
//! performs inside `io_submit`: the numbers then measure a synchronous read on the loop thread.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aioloop::{AioFile, AioOptions, AlignedBuf, EventBase, Schedule};

struct Args {
    direct: bool,
    chunk: usize,
    depth: u32,
    output: Option<PathBuf>,
    input: PathBuf,
}

struct Reader {
    file: AioFile,
    size: u64,
    chunk: usize,
    next_offset: u64,
    bytes: u64,
    chunks: u64,
    output: Option<File>,
    spare: Vec<AlignedBuf>,
    error: Option<io::Error>,
}

type Base = EventBase<Reader>;

fn main() {
    if let Err(e) = run() {
        eprintln!("linux_aio_test: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let args = parse_args()?;
    let file = AioFile::open(&args.input, args.direct)?;
    let size = file.file().metadata()?.len();
    let align = file.alignment().map_or(4096, |(mem, _)| mem);
    if let Some((_, off)) = file.alignment() {
        if args.chunk % off != 0 {
            let msg = format!(
                "--chunk-size {} must be a multiple of {off} with --direct",
                args.chunk
            );
            return Err(io::Error::new(ErrorKind::InvalidInput, msg));
        }
    }
    let output = args.output.as_ref().map(File::create).transpose()?;
    let mut base = Base::new()?;
    base.set_aio_options(AioOptions::new().max_in_flight(args.depth))?;
    let mut reader = Reader {
        file,
        size,
        chunk: args.chunk,
        next_offset: 0,
        bytes: 0,
        chunks: 0,
        output,
        spare: Vec::new(),
        error: None,
    };
    for _ in 0..args.depth {
        let buf = AlignedBuf::new(args.chunk, align)?;
        submit_next(&mut base, &mut reader, buf)?;
    }
    let start = Instant::now();
    let progress = base.add_repeating_timer(
        Duration::from_secs(1),
        Schedule::FixedRate,
        move |_, r, _| {
            eprintln!(
                "progress: {} / {} MiB, {:.1} MB/s",
                r.bytes >> 20,
                r.size >> 20,
                r.bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
            );
        },
    );
    base.set_timer_ref(progress, false);
    base.set_exit_when_empty(true);
    base.run(&mut reader)?;
    if let Some(e) = reader.error {
        return Err(e);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let m = base.metrics();
    println!(
        "bytes {} chunks {} elapsed {elapsed:.3}s {:.1} MB/s (chunk {} depth {} {}; {} io_submit calls, {:.3}s inside io_submit)",
        reader.bytes,
        reader.chunks,
        reader.bytes as f64 / 1e6 / elapsed,
        args.chunk,
        args.depth,
        if args.direct { "O_DIRECT" } else { "buffered" },
        m.aio_submit_calls,
        m.aio_submit_time.as_secs_f64(),
    );
    Ok(())
}

/// Queues a read of the next chunk into `buf`, if any is left; otherwise keeps `buf` spare.
fn submit_next(base: &mut Base, reader: &mut Reader, buf: AlignedBuf) -> io::Result<()> {
    if reader.next_offset >= reader.size {
        reader.spare.push(buf);
        return Ok(());
    }
    let offset = reader.next_offset;
    reader.next_offset += reader.chunk as u64;
    let file = reader.file.clone();
    base.read_at(&file, offset, buf, move |base, reader, buf, result| {
        if let Err(e) = on_chunk(base, reader, offset, buf, result) {
            reader.error.get_or_insert(e);
            base.exit();
        }
    })?;
    Ok(())
}

fn on_chunk(
    base: &mut Base,
    reader: &mut Reader,
    offset: u64,
    buf: AlignedBuf,
    result: io::Result<usize>,
) -> io::Result<()> {
    let n =
        result.map_err(|e| io::Error::new(e.kind(), format!("read at offset {offset}: {e}")))?;
    let expected = (reader.size - offset).min(reader.chunk as u64) as usize;
    if n != expected {
        let msg = format!(
            "short read at offset {offset}: {n} bytes, expected {expected} (file changed?)"
        );
        return Err(io::Error::new(ErrorKind::UnexpectedEof, msg));
    }
    if let Some(output) = &reader.output {
        output.write_all_at(&buf[..n], offset)?;
    }
    reader.bytes += n as u64;
    reader.chunks += 1;
    submit_next(base, reader, buf)
}

fn parse_args() -> io::Result<Args> {
    let usage =
        "usage: linux_aio_test [--direct] [--chunk-size BYTES] [--depth N] [--output PATH] FILE";
    let bad = |what: String| io::Error::new(ErrorKind::InvalidInput, format!("{what}\n{usage}"));
    let mut args = Args {
        direct: false,
        chunk: 1 << 20,
        depth: 8,
        output: None,
        input: PathBuf::new(),
    };
    let mut input = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| bad(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--direct" => args.direct = true,
            "--chunk-size" => {
                let v = value("--chunk-size")?;
                args.chunk = v
                    .parse()
                    .ok()
                    .filter(|&c| c > 0)
                    .ok_or_else(|| bad(format!("--chunk-size {v}")))?;
            }
            "--depth" => {
                let v = value("--depth")?;
                args.depth = v
                    .parse()
                    .ok()
                    .filter(|&d| d > 0)
                    .ok_or_else(|| bad(format!("--depth {v}")))?;
            }
            "--output" => args.output = Some(PathBuf::from(value("--output")?)),
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other if other.starts_with("--") => return Err(bad(format!("unknown option {other}"))),
            other => input = Some(PathBuf::from(other)),
        }
    }
    args.input = input.ok_or_else(|| bad("FILE is missing".into()))?;
    Ok(args)
}
