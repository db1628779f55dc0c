//! Reads a whole file with the event base's `read_at`, in fixed-size chunks with a bounded
//! number of requests in flight, submitting the next chunk as each completes (the Lisp
//! `linux-aio-test` of seed 000, on aioloop).
//!
//! ```text
//! cargo run --release --example linux_aio_test -- [--direct] [--chunk-size BYTES] [--depth N] [--output PATH] FILE
//! ```
//!
//! FILE is a regular file or a block device. It is read until a read comes back short (the end
//! of the file), not up to the size `stat` reports, so a file that grows is read whole.
//! Prints bytes, chunks, elapsed time and MB/s on stdout, and a progress line on stderr every
//! second. With `--output`, the bytes read are written to PATH at their offsets, so
//! `cmp FILE PATH` checks them; PATH may not be FILE itself. Without `--direct` the reads are
//! buffered: page-cache hits are copied by one `preadv2(RWF_NOWAIT)` on the loop thread, with
//! no kernel AIO, and misses run on the helper threads (see `docs/aio.md`). Any error names what failed and exits 1 (a bad argument: 2).

use std::fs::{File, Metadata};
use std::io::{self, ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aioloop::{AioFile, AioOptions, AlignedBuf, EventBase, Schedule};

const USAGE: &str =
    "usage: linux_aio_test [--direct] [--chunk-size BYTES] [--depth N] [--output PATH] FILE";

struct Args {
    direct: bool,
    chunk: usize,
    depth: u32,
    output: Option<PathBuf>,
    input: PathBuf,
}

struct Reader {
    file: AioFile,
    chunk: usize,
    /// Offset of the next chunk to ask for.
    next_offset: u64,
    /// Where the file ended, once a read came back short.
    end: Option<u64>,
    bytes: u64,
    chunks: u64,
    output: Option<(File, PathBuf)>,
    error: Option<io::Error>,
}

type Base = EventBase<Reader>;

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("linux_aio_test: {e}");
        std::process::exit(2)
    });
    if let Err(e) = run(args) {
        eprintln!("linux_aio_test: {e}");
        std::process::exit(1);
    }
}

fn run(mut args: Args) -> io::Result<()> {
    let meta = std::fs::metadata(&args.input)
        .map_err(|e| annotate(e, format!("cannot read {}", args.input.display())))?;
    check_readable_kind(&args.input, &meta)?;
    let file = AioFile::open(&args.input, args.direct)?;
    let size = known_size(file.file(), &meta);
    if let Some((_, off)) = file.alignment() {
        if args.chunk % off != 0 {
            let msg = format!(
                "--chunk-size {} must be a multiple of {off} with --direct (the file system's \
                 O_DIRECT alignment)",
                args.chunk
            );
            return Err(io::Error::new(ErrorKind::InvalidInput, msg));
        }
    }
    // A chunk beyond the end would only allocate memory that no read fills. The reads go on
    // past `size` all the same, so a file that grows is still read whole.
    if let Some(size) = size {
        let granule = file.alignment().map_or(4096, |(_, off)| off as u64);
        let whole = size.div_ceil(granule).saturating_mul(granule);
        args.chunk = args.chunk.min(usize::try_from(whole).unwrap_or(usize::MAX));
    }
    let output = match &args.output {
        Some(path) => Some((create_output(path, &meta)?, path.clone())),
        None => None,
    };
    let mut base = Base::new()?;
    base.set_aio_options(AioOptions::new().max_in_flight(args.depth))?;
    let mut reader = Reader {
        file,
        chunk: args.chunk,
        next_offset: 0,
        end: None,
        bytes: 0,
        chunks: 0,
        output,
        error: None,
    };
    // Only as many buffers as the file needs: a small file gets one, not `depth`.
    let chunks_needed = size.map_or(1, |s| s.div_ceil(args.chunk as u64).max(1));
    let buffers = chunks_needed.min(u64::from(args.depth));
    let align = reader.file.alignment().map_or(4096, |(mem, _)| mem);
    for _ in 0..buffers {
        let buf = AlignedBuf::new(args.chunk, align).map_err(|e| {
            annotate(
                e,
                format!("cannot allocate a --chunk-size {} buffer", args.chunk),
            )
        })?;
        submit_next(&mut base, &mut reader, buf)?;
    }
    let start = Instant::now();
    let progress = base.add_repeating_timer(
        Duration::from_secs(1),
        Schedule::FixedRate,
        move |_, r, _| {
            eprintln!(
                "progress: {} MiB, {:.1} MB/s",
                r.bytes >> 20,
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

/// Refuses what AIO cannot read to an end: FIFOs and sockets (and `open` would block on a
/// FIFO), directories, character devices such as `/dev/zero` (endless) or `/dev/null`.
fn check_readable_kind(path: &Path, meta: &Metadata) -> io::Result<()> {
    let kind = meta.file_type();
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else {
        return Ok(());
    };
    Err(io::Error::new(
        ErrorKind::InvalidInput,
        format!(
            "{} is {what}; linux_aio_test reads regular files and block devices",
            path.display()
        ),
    ))
}

/// The size to plan buffers for, if the kernel reports a real one (`/proc` files say 0).
fn known_size(file: &File, meta: &Metadata) -> Option<u64> {
    let size = if meta.file_type().is_block_device() {
        (&*file).seek(SeekFrom::End(0)).ok()?
    } else {
        meta.len()
    };
    (size > 0).then_some(size)
}

/// Creates the output, refusing the input itself (which `File::create` would truncate).
fn create_output(path: &Path, input: &Metadata) -> io::Result<File> {
    if let Ok(out) = std::fs::metadata(path) {
        if out.dev() == input.dev() && out.ino() == input.ino() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "--output {} is the input file itself; writing it would destroy what is \
                     being read",
                    path.display()
                ),
            ));
        }
    }
    File::create(path)
        .map_err(|e| annotate(e, format!("cannot create --output {}", path.display())))
}

/// Queues a read of the next chunk into `buf`, unless the end of the file is known.
fn submit_next(base: &mut Base, reader: &mut Reader, buf: AlignedBuf) -> io::Result<()> {
    if reader.end.is_some_and(|end| reader.next_offset >= end) {
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
    let n = result.map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EINVAL) if !reader.file.is_direct() => {
                " (kernel AIO refuses files of /proc, /sys and some other pseudo file systems)"
            }
            _ => "",
        };
        annotate(e, format!("read at offset {offset}{hint}"))
    })?;
    if n < reader.chunk {
        // A short read is the end of the file; chunks beyond it read 0 bytes.
        let end = offset + n as u64;
        reader.end = Some(reader.end.map_or(end, |e| e.min(end)));
    }
    if n > 0 {
        if let Some((output, path)) = &reader.output {
            output.write_all_at(&buf[..n], offset).map_err(|e| {
                annotate(
                    e,
                    format!("writing --output {} at offset {offset}", path.display()),
                )
            })?;
        }
        reader.bytes += n as u64;
        reader.chunks += 1;
    }
    submit_next(base, reader, buf)
}

/// The error with a sentence in front, keeping its kind.
fn annotate(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn parse_args() -> io::Result<Args> {
    let bad = |what: String| io::Error::new(ErrorKind::InvalidInput, format!("{what}\n{USAGE}"));
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
                args.chunk = positive(&v).ok_or_else(|| {
                    bad(format!(
                        "--chunk-size must be a positive number of bytes, got {v:?}"
                    ))
                })?;
            }
            "--depth" => {
                let v = value("--depth")?;
                args.depth = positive(&v).ok_or_else(|| {
                    bad(format!(
                        "--depth must be a positive number of requests, got {v:?}"
                    ))
                })?;
            }
            "--output" => args.output = Some(PathBuf::from(value("--output")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other if other.starts_with("--") => return Err(bad(format!("unknown option {other}"))),
            other if input.is_some() => return Err(bad(format!("more than one FILE: {other}"))),
            other => input = Some(PathBuf::from(other)),
        }
    }
    args.input = input.ok_or_else(|| bad("FILE is missing".into()))?;
    Ok(args)
}

/// A number above zero, or `None`.
fn positive<T: std::str::FromStr + PartialOrd + Default>(text: &str) -> Option<T> {
    text.parse().ok().filter(|n| *n > T::default())
}
