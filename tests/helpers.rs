//! Which path each file request takes: kernel AIO with `RWF_NOWAIT`, or a helper thread when
//! the kernel would block or cannot do it, on real files (ext4 here) and a real `/proc` file.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::time::Duration;

use aioloop::{AioFile, AioOptions, AlignedBuf, EventBase, Metrics};

mod common;
use common::data_file;

/// Drops the file's pages from the page cache, so the next buffered read must go to the disk.
fn evict(file: &AioFile) {
    file.file().sync_all().unwrap();
    // SAFETY: advice on an open fd; DONTNEED drops clean cached pages of the whole file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

/// Reads `len` bytes at 0 and returns them with the metrics of the base that read them.
fn read(file: &AioFile, options: AioOptions, len: usize) -> (Vec<u8>, Metrics) {
    let mut base = EventBase::<Vec<u8>>::new().unwrap();
    base.set_aio_options(options).unwrap();
    let buf = AlignedBuf::new(len, 4096).unwrap();
    base.read_at(file, 0, buf, |_, out, buf, n| {
        out.extend_from_slice(&buf[..n.unwrap()]);
    })
    .unwrap();
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(20));
    let mut out = Vec::new();
    base.run(&mut out).unwrap();
    (out, base.metrics())
}

#[test]
fn cold_buffered_read_goes_to_a_helper_and_a_cached_one_stays_on_kernel_aio() {
    let (path, data) = data_file("helpers-cold", 1 << 20);
    let file = AioFile::open(&path, false).unwrap();
    evict(&file);
    let (got, cold) = read(&file, AioOptions::new(), 1 << 20);
    assert!(got == data, "the cold read returned other bytes");
    assert_eq!(cold.aio_nowait_retries, 1, "{cold:?}");
    assert_eq!(cold.helper_jobs, 1);

    let (got, warm) = read(&file, AioOptions::new(), 1 << 20);
    assert!(got == data);
    assert_eq!(
        warm.aio_nowait_retries, 0,
        "a cached read left kernel AIO: {warm:?}"
    );
    assert_eq!(warm.helper_jobs, 0);
}

#[test]
fn o_direct_read_stays_on_kernel_aio_with_no_helper_hop() {
    let (path, data) = data_file("helpers-direct", 1 << 20);
    let file = AioFile::open(&path, true).unwrap();
    file.file().sync_all().unwrap(); // no dirty page cache to write back first
    let (got, metrics) = read(&file, AioOptions::new(), 1 << 20);
    assert!(got == data);
    assert_eq!(metrics.helper_jobs, 0, "{metrics:?}");
    assert_eq!(metrics.aio_completions, 1);
}

/// An `O_DIRECT` read of a range with dirty page-cache pages must write them back first, which
/// kernel AIO would do inside `io_submit`: it runs on a helper instead.
#[test]
fn o_direct_read_of_just_written_data_goes_to_a_helper() {
    let (path, data) = data_file("helpers-direct-dirty", 1 << 20);
    let file = AioFile::open(&path, true).unwrap();
    let (got, metrics) = read(&file, AioOptions::new(), 1 << 20);
    assert!(got == data);
    assert_eq!(metrics.aio_nowait_retries, 1, "{metrics:?}");
}

#[test]
fn with_helpers_off_a_cold_read_stays_on_kernel_aio() {
    let (path, data) = data_file("helpers-off", 1 << 20);
    let file = AioFile::open(&path, false).unwrap();
    evict(&file);
    let (got, metrics) = read(&file, AioOptions::new().helper_threads(0), 1 << 20);
    assert!(got == data);
    assert_eq!(metrics.helper_jobs, 0, "{metrics:?}");
    assert_eq!(metrics.aio_nowait_retries, 0);
}

#[test]
fn o_direct_write_that_extends_the_file_runs_on_a_helper() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-files");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("helpers-extend");
    let _ = std::fs::remove_file(&path);
    common::scratch::remove_at_exit(path.clone());
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .read(true)
        .custom_flags_direct()
        .open(&path)
        .unwrap();
    let file = AioFile::new(file).unwrap();
    let mut base = EventBase::<Option<usize>>::new().unwrap();
    let mut buf = AlignedBuf::new(1 << 20, 4096).unwrap();
    buf.fill(0x5a);
    base.write_at(&file, 0, buf, |_, out, _, n| *out = Some(n.unwrap()))
        .unwrap();
    base.set_exit_when_empty(true);
    let mut out = None;
    base.run(&mut out).unwrap();
    assert_eq!(out, Some(1 << 20));
    let metrics = base.metrics();
    assert_eq!(metrics.aio_nowait_retries, 1, "{metrics:?}");
    let written = std::fs::read(&path).unwrap();
    assert!(written.len() == 1 << 20 && written.iter().all(|&b| b == 0x5a));
}

#[test]
fn file_system_without_nowait_sends_the_file_to_helpers_for_good() {
    // procfs has no RWF_NOWAIT: the loop thread's preadv2 says EOPNOTSUPP, and the read runs
    // on a helper; so does every later read of the file, without trying again.
    let file = AioFile::open("/proc/self/status", false).unwrap();
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    for _ in 0..2 {
        base.read_at(&file, 0, vec![0; 4096], |_, out, buf, n| {
            out.push(String::from_utf8_lossy(&buf[..n.unwrap()]).into_owned());
        })
        .unwrap();
        base.set_exit_when_empty(true);
        let mut out = Vec::new();
        base.run(&mut out).unwrap();
        assert!(out[0].starts_with("Name:"), "{out:?}");
    }
    let metrics = base.metrics();
    assert_eq!(metrics.aio_on_helpers, 2, "{metrics:?}");
    assert_eq!(metrics.aio_submit_calls, 0, "{metrics:?}");
    assert_eq!(metrics.aio_cached_reads, 0, "{metrics:?}");
}

trait DirectExt {
    fn custom_flags_direct(&mut self) -> &mut Self;
}

impl DirectExt for OpenOptions {
    fn custom_flags_direct(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_DIRECT)
    }
}

/// A vectored buffered read that ends inside its second buffer: from the page cache on the
/// loop thread when cached, through a helper when not; the same bytes and count either way.
#[test]
fn vectored_buffered_read_across_the_end_of_the_file_is_exact_warm_and_cold() {
    let (path, data) = data_file("helpers-readv-eof", 10_000);
    let file = AioFile::open(&path, false).unwrap();
    for cold in [false, true] {
        if cold {
            evict(&file);
        }
        let mut base = EventBase::<Vec<u8>>::new().unwrap();
        let bufs = vec![vec![0u8; 4096], vec![0u8; 8192], vec![0u8; 4096]];
        base.readv_at(&file, 1000, bufs, |_, out, bufs, n| {
            let n = n.unwrap();
            out.extend(bufs.concat().into_iter().take(n));
        })
        .unwrap();
        base.set_exit_when_empty(true);
        base.exit_after(Duration::from_secs(20));
        let mut out = Vec::new();
        base.run(&mut out).unwrap();
        assert!(out == data[1000..], "cold={cold}: {} bytes", out.len());
        let m = base.metrics();
        match cold {
            false => assert_eq!(m.aio_cached_reads, 1, "{m:?}"),
            true => assert_eq!((m.aio_nowait_retries, m.helper_jobs), (1, 1), "{m:?}"),
        }
    }
}
