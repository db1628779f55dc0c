//! One hung file system must not take every helper: with reads stalled on a slow FUSE mount,
//! work on the healthy disk and other helper jobs still complete at once, and the reads that
//! wait for their mount's share of the helpers can be cancelled.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aioloop::{AioFile, AioId, AioOptions, EventBase};

#[path = "../../tests/common/mod.rs"]
mod common;
mod slowfs;

#[derive(Default)]
struct Log {
    done: Vec<&'static str>,
    /// When the healthy work was all done, since the start.
    healthy_done_at: Option<Duration>,
    stalled: Vec<AioId>,
    cancelled: usize,
    started: Option<Instant>,
}

impl Log {
    fn push(&mut self, base: &mut EventBase<Log>, what: &'static str) {
        self.done.push(what);
        if self.done.iter().filter(|w| **w != "fuse read").count() == 3 {
            self.healthy_done_at = self.started.map(|s| s.elapsed());
            // The stalled reads still waiting for a helper need not wait for the stall.
            self.cancelled = self
                .stalled
                .iter()
                .filter(|&&id| base.cancel_aio(id))
                .count();
        }
    }
}

#[test]
fn stalled_reads_on_a_hung_mount_leave_helpers_for_the_healthy_disk() {
    let names = ["a", "b", "c", "d", "e", "f"];
    let files: Vec<_> = names.iter().map(|&n| (n, 256 << 10)).collect();
    let slow = match slowfs::SlowFs::mount_or_skip("fairness", &files) {
        Some(slow) => slow,
        None => return,
    };
    let stalled: Vec<AioFile> = (names.iter())
        .map(|n| AioFile::open(slow.path(n), false).unwrap())
        .collect();
    let (local, _) = common::data_file("fairness-local", 1 << 20);
    let cold = File::open(&local).unwrap();
    cold.sync_all().unwrap();
    // SAFETY: advice on an open fd; DONTNEED drops clean cached pages of the whole file.
    assert_eq!(
        unsafe { libc::posix_fadvise(cold.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) },
        0
    );
    let cold = AioFile::new(cold).unwrap();
    let stall = Duration::from_secs(3);
    slow.set_stall(stall);

    let mut base = EventBase::<Log>::new().unwrap();
    base.set_aio_options(AioOptions::new().helper_threads(4))
        .unwrap();
    let mut log = Log::default();
    for file in &stalled {
        let id = base
            .read_at(file, 0, vec![0; 128 << 10], |_, log, _, r| {
                match r.map_err(|e| e.raw_os_error()) {
                    Err(Some(libc::ECANCELED)) => {}
                    r => {
                        assert_eq!(r, Ok(128 << 10));
                        log.done.push("fuse read");
                    }
                }
            })
            .unwrap();
        log.stalled.push(id);
    }
    log.started = Some(Instant::now());
    base.run_blocking(
        || Ok(()),
        |base, log, r| {
            r.unwrap();
            log.push(base, "run_blocking")
        },
    )
    .unwrap();
    base.stat(&local, |base, log, r| {
        r.unwrap();
        log.push(base, "stat")
    })
    .unwrap();
    base.read_at(&cold, 0, vec![0; 1 << 20], |base, log, _, r| {
        assert_eq!(r.unwrap(), 1 << 20);
        log.push(base, "cold read")
    })
    .unwrap();
    base.set_exit_when_empty(true);
    let guard = base.exit_after(Duration::from_secs(60));
    base.run(&mut log).unwrap();
    assert!(base.cancel_timer(guard), "the run hit its guard");
    slow.set_stall(Duration::ZERO);

    let mut healthy = log.done[..3].to_vec();
    healthy.sort();
    assert_eq!(
        healthy,
        ["cold read", "run_blocking", "stat"],
        "the healthy work waited for the stalled reads: {:?}",
        log.done
    );
    let took = log.healthy_done_at.unwrap();
    assert!(
        took < stall,
        "the healthy work took {took:?}, the stall is {stall:?}"
    );
    // 4 helpers, 3 for one device by default: 3 reads stalled on helpers, the rest waited.
    assert_eq!(log.cancelled, names.len() - 3);
    assert_eq!(log.done[3..], ["fuse read"; 3]);
}
