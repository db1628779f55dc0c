//! Dropping a base with O_DIRECT reads in flight waits for the kernel before freeing buffers.
//!
//! To have reads truly unfinished at the drop (a fast virtual disk finishes its DMA long before
//! the completions are reaped), the process puts itself in a cgroup-v1 blkio group that reads
//! at most 4 MiB/s from the test file's disk: 64 reads of 64 KiB then take about a second. Its
//! own test binary, because cgroup membership is per process.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioloop::{AioFile, AlignedBuf, EventBase, IoBuf, IoBufMut};

mod scratch;
mod skip;

const READS: usize = 64;
const SIZE: usize = 64 << 10;
const READ_BYTES_PER_SEC: u64 = 4 << 20;

/// A read buffer that, when freed, records whether the kernel had filled it with the file's
/// bytes: freeing it while its read was in flight would find it unwritten.
struct Checked {
    buf: AlignedBuf,
    byte: u8,
    full_when_freed: Rc<Cell<usize>>,
}

// SAFETY: delegates to the AlignedBuf, whose heap allocation never moves.
unsafe impl IoBuf for Checked {
    fn io_ptr(&self) -> *const u8 {
        self.buf.io_ptr()
    }
    fn io_len(&self) -> usize {
        self.buf.io_len()
    }
}

// SAFETY: as above.
unsafe impl IoBufMut for Checked {
    fn io_mut_ptr(&mut self) -> *mut u8 {
        self.buf.io_mut_ptr()
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        if self.buf.iter().all(|&b| b == self.byte) {
            self.full_when_freed.set(self.full_when_freed.get() + 1);
        }
    }
}

/// This process, moved into a blkio cgroup with a read limit on one disk; moved back on drop.
struct Throttle {
    dir: PathBuf,
}

impl Throttle {
    fn new(file: &Path, bytes_per_sec: u64) -> Option<Throttle> {
        let dev = std::fs::metadata(file).ok()?.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let dir =
            Path::new("/sys/fs/cgroup/blkio").join(format!("aioloop-test-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let throttle = Throttle { dir };
        let limit = format!("{major}:{minor} {bytes_per_sec}");
        std::fs::write(throttle.dir.join("blkio.throttle.read_bps_device"), limit).ok()?;
        std::fs::write(
            throttle.dir.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .ok()?;
        Some(throttle)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = std::fs::write(
            "/sys/fs/cgroup/blkio/cgroup.procs",
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn dropping_the_base_waits_for_64_o_direct_reads_in_flight() {
    let dir = scratch::ScratchDir::new("aio-drop");
    let path = dir.join("drop-in-flight");
    let mut out = File::create(&path).unwrap();
    for i in 0..READS {
        out.write_all(&vec![i as u8 + 1; SIZE]).unwrap();
    }
    out.sync_all().unwrap();
    drop(out);

    let throttle = Throttle::new(&path, READ_BYTES_PER_SEC);
    if throttle.is_none() {
        skip::skip(
            "throttling its reads (needs root and cgroup-v1 blkio): unthrottled, they may finish before the drop",
        );
    }
    let file = AioFile::open(&path, true).unwrap();
    let full = Rc::new(Cell::new(0));
    let mut base = EventBase::<usize>::new().unwrap();
    for i in 0..READS {
        let buf = Checked {
            buf: AlignedBuf::new(SIZE, 4096).unwrap(),
            byte: i as u8 + 1,
            full_when_freed: full.clone(),
        };
        // The first completion stops the loop: the rest stay in flight for the drop.
        base.read_at(&file, (i * SIZE) as u64, buf, |base, called, _, r| {
            assert_eq!(r.unwrap(), SIZE);
            *called += 1;
            base.exit();
        })
        .unwrap();
    }
    let mut called = 0;
    base.run(&mut called).unwrap();
    assert!(
        base.metrics().aio_in_flight > 0,
        "reads still in flight when the base is dropped"
    );
    let dropping = Instant::now();
    drop(base); // io_destroy: waits for the kernel; only then are the buffers freed
    let waited = dropping.elapsed();
    drop(throttle);
    assert_eq!(
        full.get(),
        READS,
        "a buffer was freed before the kernel had filled it"
    );
    eprintln!("drop waited {waited:?} for the reads in flight");
    if cfg!(debug_assertions) && waited < Duration::from_millis(100) {
        eprintln!("note: the drop did not have to wait long: the reads were nearly done");
    }
}
