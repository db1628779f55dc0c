//! Requests on one file take effect in the order they were issued where they overlap or depend,
//! whatever runs them (the page cache on the loop thread, kernel AIO, a helper) and however
//! busy the helpers are: the races each test provokes for real, on ext4, buffered and
//! `O_DIRECT`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use aioloop::{AioFile, AlignedBuf, EventBase};
use common::{busy_helpers, finish};

mod common;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("file-order");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// An empty file opened for reading and writing (`O_DIRECT` if `direct`).
fn empty_file(name: &str, direct: bool) -> (PathBuf, AioFile) {
    let path = scratch(name);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    let file = AioFile::new(options.open(&path).unwrap()).unwrap();
    (path, file)
}

/// `len` bytes of `byte`, aligned for `O_DIRECT`.
fn filled(byte: u8, len: usize) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len, 4096).unwrap();
    buf.fill(byte);
    buf
}

/// Drops the file's pages from the page cache.
fn evict(path: &PathBuf) {
    let file = File::open(path).unwrap();
    file.sync_all().unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: advice on an open fd; DONTNEED drops clean cached pages of the whole file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

#[derive(Default)]
struct Log {
    events: Vec<String>,
}

/// With helpers on, a buffered write runs on a helper and an `fsync` on kernel AIO: the sync
/// must not complete before the write has reached the file.
fn fsync_after_write(direct: bool, helpers_busy: bool) {
    let name = format!("fsync-{direct}-{helpers_busy}");
    let (path, file) = empty_file(&name, direct);
    let mut base = EventBase::<Log>::new().unwrap();
    if helpers_busy {
        busy_helpers(&mut base, 4, Duration::from_millis(200));
    }
    let len = 256 << 10;
    base.write_at(&file, 0, filled(b'w', len), |_, log, _, n| {
        log.events.push(format!("write {}", n.unwrap()))
    })
    .unwrap();
    let reader = File::open(&path).unwrap();
    base.fsync(&file, move |_, log, r| {
        r.unwrap();
        // What the fsync covered: the write's bytes must be in the file by now.
        let mut got = vec![0; len];
        let n = reader.read_at(&mut got, 0).unwrap();
        let whole = n == len && got.iter().all(|&b| b == b'w');
        log.events.push(format!("fsync saw the write: {whole}"));
    })
    .unwrap();
    let mut log = Log::default();
    finish(&mut base, &mut log);
    assert_eq!(
        log.events,
        [format!("write {len}"), "fsync saw the write: true".into()]
    );
}

#[test]
fn fsync_waits_for_earlier_writes_of_the_file() {
    for direct in [false, true] {
        for busy in [false, true] {
            fsync_after_write(direct, busy);
        }
    }
}

/// A write and then a read of the same range, queued together: the read returns the new bytes,
/// whether the old ones were cached (the read would be served inside `read_at`), uncached, or
/// not there at all (`O_DIRECT` into an empty file).
fn read_after_write(name: &str, direct: bool, old: Option<bool>, helpers_busy: bool) {
    let len = 64 << 10;
    let (path, file) = empty_file(name, direct);
    if let Some(cached) = old {
        std::fs::write(&path, vec![b'o'; len]).unwrap();
        if cached {
            std::fs::read(&path).unwrap();
        } else {
            evict(&path);
        }
    }
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    if helpers_busy {
        busy_helpers(&mut base, 4, Duration::from_millis(200));
    }
    base.write_at(&file, 0, filled(b'n', len), |_, _, _, n| {
        assert_eq!(n.unwrap(), 64 << 10)
    })
    .unwrap();
    base.read_at(&file, 0, filled(0, len), |_, out, buf, n| {
        let n = n.unwrap();
        let new = buf[..n].iter().filter(|&&b| b == b'n').count();
        out.push(format!("read {n} bytes, {new} new"));
    })
    .unwrap();
    let mut out = Vec::new();
    finish(&mut base, &mut out);
    assert_eq!(out, [format!("read {len} bytes, {len} new")], "{name}");
}

#[test]
fn read_after_write_of_same_range_sees_new_bytes() {
    for busy in [false, true] {
        read_after_write("raw-cached", false, Some(true), busy);
        read_after_write("raw-uncached", false, Some(false), busy);
        read_after_write("raw-empty", false, None, busy);
        read_after_write("raw-direct-empty", true, None, busy);
        read_after_write("raw-direct-uncached", true, Some(false), busy);
    }
}

#[test]
fn appends_land_in_issue_order_with_helpers_busy() {
    let path = scratch("appends");
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .unwrap();
    let file = AioFile::new(file).unwrap();
    let mut base = EventBase::<usize>::new().unwrap();
    busy_helpers(&mut base, 4, Duration::from_millis(100));
    let records = 2000;
    for i in 0..records {
        let record = format!("record {i:06}\n").into_bytes();
        base.write_at(&file, 0, record, |_, done, _, n| {
            assert_eq!(n.unwrap(), 14);
            *done += 1;
        })
        .unwrap();
    }
    let mut done = 0;
    finish(&mut base, &mut done);
    assert_eq!(done, records);
    let text = std::fs::read_to_string(&path).unwrap();
    let out_of_place = (text.lines().enumerate())
        .filter(|(i, line)| *line != format!("record {i:06}"))
        .count();
    assert_eq!(text.lines().count(), records);
    assert_eq!(out_of_place, 0, "records out of place");
}

#[test]
fn overlapping_writes_land_in_issue_order() {
    for direct in [false, true] {
        let (path, file) = empty_file(&format!("overlap-{direct}"), direct);
        let mut base = EventBase::<()>::new().unwrap();
        busy_helpers(&mut base, 2, Duration::from_millis(50));
        let blocks = 256;
        for i in 0..blocks {
            for byte in [b'a', b'b', b'c'] {
                base.write_at(&file, i * 4096, filled(byte, 4096), |_, _, _, n| {
                    assert_eq!(n.unwrap(), 4096)
                })
                .unwrap();
            }
        }
        finish(&mut base, &mut ());
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), blocks as usize * 4096);
        let wrong = data.chunks(4096).filter(|b| b.iter().any(|&x| x != b'c'));
        assert_eq!(
            wrong.count(),
            0,
            "blocks not holding the last write (direct {direct})"
        );
    }
}

#[test]
fn set_len_takes_effect_after_earlier_requests_and_before_later_ones() {
    for direct in [false, true] {
        let (path, file) = empty_file(&format!("set-len-{direct}"), direct);
        let mut base = EventBase::<Vec<String>>::new().unwrap();
        busy_helpers(&mut base, 2, Duration::from_millis(50));
        base.write_at(&file, 0, filled(b'a', 64 << 10), |_, _, _, n| {
            n.unwrap();
        })
        .unwrap();
        base.set_len(&file, 4096, |_, _, r| r.unwrap()).unwrap();
        base.write_at(&file, 8192, filled(b'b', 4096), |_, _, _, n| {
            n.unwrap();
        })
        .unwrap();
        base.read_at(&file, 0, filled(0, 16384), |_, out, buf, n| {
            let n = n.unwrap();
            let hole = buf[4096..8192].iter().all(|&b| b == 0);
            out.push(format!("{n} {} {hole} {}", buf[0], buf[8192]));
        })
        .unwrap();
        let mut out = Vec::new();
        finish(&mut base, &mut out);
        assert_eq!(
            out,
            [format!("12288 {} true {}", b'a', b'b')],
            "direct {direct}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12288);
    }
}

#[test]
fn independent_reads_of_one_file_still_run_side_by_side() {
    let (path, data) = common::data_file("order-reads", 1 << 20);
    evict(&path);
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<Vec<bool>>::new().unwrap();
    for i in 0..16u64 {
        let at = i * (64 << 10);
        let want = data[at as usize..][..64 << 10].to_vec();
        base.read_at(&file, at, vec![0; 64 << 10], move |_, ok, buf, n| {
            ok.push(n.unwrap() == buf.len() && buf == want)
        })
        .unwrap();
    }
    let mut ok = Vec::new();
    finish(&mut base, &mut ok);
    assert_eq!(ok, [true; 16]);
}

/// With helpers off every request goes to kernel AIO, which may reorder requests in flight
/// together (`O_DIRECT` writes of one range, a write and an `fsync`): the order holds there too.
#[test]
fn with_helpers_off_the_same_order_holds_on_kernel_aio() {
    for direct in [false, true] {
        let (path, file) = empty_file(&format!("helpers-off-{direct}"), direct);
        // Allocated blocks: O_DIRECT overwrites then stay asynchronous in the kernel.
        std::fs::write(&path, vec![0u8; 256 * 4096]).unwrap();
        let mut base = EventBase::<Vec<String>>::new().unwrap();
        base.set_aio_options(aioloop::AioOptions::new().helper_threads(0))
            .unwrap();
        for i in 0..256 {
            for byte in [b'a', b'b', b'c'] {
                base.write_at(&file, i * 4096, filled(byte, 4096), |_, _, _, n| {
                    assert_eq!(n.unwrap(), 4096)
                })
                .unwrap();
            }
        }
        base.read_at(&file, 0, filled(0, 256 * 4096), |_, out, buf, n| {
            let n = n.unwrap();
            let last = buf[..n].iter().filter(|&&b| b == b'c').count();
            out.push(format!("read {n}, {last} from the last writes"));
        })
        .unwrap();
        base.set_len(&file, 4096, |_, _, r| r.unwrap()).unwrap();
        let mut out = Vec::new();
        finish(&mut base, &mut out);
        let len = 256 * 4096;
        assert_eq!(out, [format!("read {len}, {len} from the last writes")]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    }
}
