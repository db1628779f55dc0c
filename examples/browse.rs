//! Walks a directory tree and reads every regular file in it, on one loop that keeps a
//! 100 ms heartbeat on time however slow the file system is.
//!
//! ```text
//! cargo run --release --example browse -- [--direct] [--no-helpers] DIR
//! ```
//!
//! Directories are listed with [`EventBase::read_dir`], files sized with
//! [`EventBase::stat`], opened with [`EventBase::open`] and read with
//! [`EventBase::read_at`] in 128 KiB chunks, up to 16 files at a time; nothing blocks the
//! loop. Each 100 ms the loop prints `heartbeat N late MS`: how much later than 100 ms after
//! the previous heartbeat it ran. At the end it prints
//! `files N bytes N seconds S MB/s X worst-late MS` and exits 0.
//!
//! Symbolic links are not followed (no loops, no escape from DIR), and only regular files are
//! read, each up to the size `stat` gave it: FIFOs, devices and sockets are skipped, and so
//! is the content of pseudo-files that claim size 0 (`/proc`), some of which never end. An
//! entry that cannot be read is reported on stderr and skipped. A DIR that is missing, not a
//! directory or unreadable gets a message and exit 1; a bad argument, exit 2.
//!
//! `--direct` opens files with `O_DIRECT`; `--no-helpers` turns the helper threads off, so
//! that a slow file system's stalls land on the loop and show in the heartbeat.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioloop::{AioFile, AioOptions, AlignedBuf, EventBase, Schedule};

const USAGE: &str = "usage: browse [--direct] [--no-helpers] DIR";
const CHUNK: usize = 128 << 10;
/// Files read at once; directory listings and stats are not limited beyond the helper queue.
const FILES_AT_ONCE: usize = 16;
const HEARTBEAT: Duration = Duration::from_millis(100);

struct Args {
    direct: bool,
    helpers: bool,
    dir: PathBuf,
}

#[derive(Default)]
struct Walk {
    direct: bool,
    /// Regular files found, with their sizes, waiting for a reading slot.
    to_read: VecDeque<(PathBuf, u64)>,
    /// Buffers of finished reads, for the next ones.
    spare: Vec<AlignedBuf>,
    /// Files open for reading.
    reading: usize,
    files: u64,
    bytes: u64,
    skipped: u64,
    worst_late: Duration,
    /// The root could not be listed.
    fatal: Option<io::Error>,
}

type Base = EventBase<Walk>;

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("browse: {e}");
        std::process::exit(2)
    });
    match browse(args) {
        Ok(()) => {}
        Err(e) => fail(e),
    }
}

fn fail(e: io::Error) -> ! {
    eprintln!("browse: {e}");
    std::process::exit(1)
}

fn parse_args() -> io::Result<Args> {
    let mut args = Args {
        direct: false,
        helpers: true,
        dir: PathBuf::new(),
    };
    let mut dir = None;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--direct") => args.direct = true,
            Some("--no-helpers") => args.helpers = false,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Some(flag) if flag.starts_with("--") => {
                return Err(invalid(format!("unknown option {flag}\n{USAGE}")))
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return Err(invalid(format!("one DIR only\n{USAGE}"))),
        }
    }
    args.dir = dir.ok_or_else(|| invalid(format!("DIR is missing\n{USAGE}")))?;
    Ok(args)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn browse(args: Args) -> io::Result<()> {
    let mut base = Base::new()?;
    if !args.helpers {
        base.set_aio_options(AioOptions::new().helper_threads(0))?;
    }
    let mut walk = Walk {
        direct: args.direct,
        ..Walk::default()
    };
    let started = Instant::now();
    let mut last = started;
    let mut beats = 0u64;
    let heartbeat = base.add_repeating_timer(HEARTBEAT, Schedule::FixedRate, move |_, walk, _| {
        let now = Instant::now();
        let late = (now - last).saturating_sub(HEARTBEAT);
        last = now;
        beats += 1;
        walk.worst_late = walk.worst_late.max(late);
        println!("heartbeat {beats} late {:.2} ms", ms(late));
    });
    // The heartbeat alone must not keep the loop running once the walk is over.
    base.set_timer_ref(heartbeat, false);
    base.set_exit_when_empty(true);
    list(&mut base, &mut walk, args.dir.clone(), true);
    base.run(&mut walk)?;
    if let Some(e) = walk.fatal {
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "files {} bytes {} seconds {seconds:.3} MB/s {:.1} worst-late {:.2} ms",
        walk.files,
        walk.bytes,
        walk.bytes as f64 / 1e6 / seconds,
        ms(walk.worst_late),
    );
    if walk.skipped > 0 {
        eprintln!("browse: {} entries skipped (see above)", walk.skipped);
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Lists `dir`: subdirectories are listed in turn, regular files sized and queued for reading.
fn list(base: &mut Base, walk: &mut Walk, dir: PathBuf, root: bool) {
    let listed = base.read_dir(dir.clone(), move |base, walk, entries| {
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) if root => return walk.fatal = Some(e),
            Err(e) => return skip(walk, e),
        };
        for entry in entries {
            let path = dir.join(&entry.name);
            match entry.file_type {
                Some(t) if t.is_dir() => list(base, walk, path, false),
                Some(t) if t.is_file() => size(base, walk, path),
                _ => {} // symbolic links, FIFOs, devices, sockets
            }
        }
        start_reads(base, walk);
    });
    if let Err(e) = listed {
        skip(walk, e);
    }
}

/// Stats a regular file and queues it for reading.
fn size(base: &mut Base, walk: &mut Walk, path: PathBuf) {
    let stat = base.stat(path.clone(), move |base, walk, meta| {
        match meta {
            Ok(meta) if meta.is_file() => walk.to_read.push_back((path, meta.len())),
            Ok(_) => {} // replaced by something else since the listing
            Err(e) => skip(walk, e),
        }
        start_reads(base, walk);
    });
    if let Err(e) = stat {
        skip(walk, e);
    }
}

/// Opens queued files while reading slots are free.
fn start_reads(base: &mut Base, walk: &mut Walk) {
    while walk.reading < FILES_AT_ONCE {
        let Some((path, len)) = walk.to_read.pop_front() else {
            return;
        };
        walk.files += 1;
        if len == 0 {
            continue;
        }
        let mut options = OpenOptions::new();
        options.read(true);
        if walk.direct {
            options.custom_flags(libc::O_DIRECT);
        }
        walk.reading += 1;
        let opened = base.open(path.clone(), &options, move |base, walk, file| match file {
            Ok(file) => {
                let path = path.into();
                read_chunk(base, walk, Reading { file, path, len }, 0)
            }
            Err(e) => done_reading(base, walk, Some(e)),
        });
        if let Err(e) = opened {
            done_reading(base, walk, Some(e));
        }
    }
}

/// A file being read.
struct Reading {
    file: AioFile,
    path: Rc<Path>,
    /// Its size when it was listed: where the reading stops.
    len: u64,
}

/// Reads the chunk of a file at `offset`, then the next, up to its size or its end.
fn read_chunk(base: &mut Base, walk: &mut Walk, file: Reading, offset: u64) {
    let buf = match walk.spare.pop() {
        Some(buf) => buf,
        None => match AlignedBuf::new(CHUNK, 4096) {
            Ok(buf) => buf,
            Err(e) => return done_reading(base, walk, Some(e)),
        },
    };
    let (aio, path, len) = (file.file.clone(), file.path.clone(), file.len);
    let submitted = base.read_at(&aio, offset, buf, move |base, walk, buf, n| {
        walk.spare.push(buf);
        match n {
            Ok(n) => {
                walk.bytes += n as u64;
                let next = offset + n as u64;
                if n == CHUNK && next < file.len {
                    return read_chunk(base, walk, file, next);
                }
                close(base, walk, file, None);
            }
            Err(e) => close(base, walk, file, Some(e)),
        }
    });
    if let Err(e) = submitted {
        let (e, buf) = e.into_parts();
        walk.spare.push(buf);
        close(
            base,
            walk,
            Reading {
                file: aio,
                path,
                len,
            },
            Some(e),
        );
    }
}

/// Closes a file on a helper (a close can wait for a slow file system too) and frees its slot.
fn close(base: &mut Base, walk: &mut Walk, file: Reading, error: Option<io::Error>) {
    let error = error.map(|e| io::Error::new(e.kind(), format!("{}: {e}", file.path.display())));
    // If no helper can take the close, the file was dropped, and so closed, here.
    let _ = base.close(file.file, |_, _, _| {});
    done_reading(base, walk, error);
}

fn done_reading(base: &mut Base, walk: &mut Walk, error: Option<io::Error>) {
    walk.reading -= 1;
    if let Some(e) = error {
        skip(walk, e);
    }
    start_reads(base, walk);
}

fn skip(walk: &mut Walk, e: io::Error) {
    walk.skipped += 1;
    eprintln!("browse: skipping: {e}");
}
