//! Cancel at every stage of a request's life, and what keeps a run alive: `true` from a cancel
//! always means `ECANCELED`, a queued helper job can be cancelled whatever submitted it, and
//! nothing cancelled or panicked is left behind to hold an empty loop.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Duration;

use aioloop::{AioFile, AioOptions, EventBase};

mod common;

/// Runs the base until nothing is left; `false` if the 10 s guard had to end the run.
fn finish<S>(base: &mut EventBase<S>, state: &mut S) -> bool {
    base.set_exit_when_empty(true);
    let guard = base.exit_after(Duration::from_secs(10));
    base.run(state).unwrap();
    base.cancel_timer(guard)
}

/// Keeps the only helper busy for `time`.
fn occupy_helper<S>(base: &mut EventBase<S>, time: Duration) {
    base.run_blocking(
        move || {
            std::thread::sleep(time);
            Ok(())
        },
        |_, _, _: std::io::Result<()>| {},
    )
    .unwrap();
}

fn one_helper<S>() -> EventBase<S> {
    let mut base = EventBase::new().unwrap();
    base.set_aio_options(AioOptions::new().helper_threads(1))
        .unwrap();
    base
}

/// A file of `len` bytes whose first `cached` bytes are in the page cache and the rest not.
fn partly_cached(name: &str, len: usize, cached: usize) -> PathBuf {
    let (path, _) = common::data_file(name, len);
    let file = File::open(&path).unwrap();
    file.sync_all().unwrap();
    std::fs::read(&path).unwrap();
    // SAFETY: advice on an open fd; DONTNEED drops clean cached pages of the range.
    let rc = unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            cached as i64,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(rc, 0);
    path
}

#[test]
fn cancelled_read_whose_rest_waits_for_a_helper_reports_ecanceled_not_a_short_count() {
    let path = partly_cached("cancel-partly-cached", 1 << 20, 64 << 10);
    let file = AioFile::open(&path, false).unwrap();
    let mut base = one_helper::<Vec<String>>();
    occupy_helper(&mut base, Duration::from_millis(300));
    let id = base
        .read_at(&file, 0, vec![0; 1 << 20], |_, out, _, r| {
            out.push(format!("{:?}", r.map_err(|e| e.raw_os_error())))
        })
        .unwrap();
    assert!(base.cancel_aio(id), "the rest of the read has not started");
    let mut out = Vec::new();
    assert!(finish(&mut base, &mut out));
    assert_eq!(
        out,
        [format!("{:?}", Err::<usize, _>(Some(libc::ECANCELED)))]
    );
    assert!(!base.cancel_aio(id), "a second cancel finds nothing");
}

#[test]
fn a_read_answered_from_the_cache_can_be_cancelled_before_its_callback() {
    let (path, _) = common::data_file("cancel-cached", 64 << 10);
    std::fs::read(&path).unwrap();
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<Vec<Option<i32>>>::new().unwrap();
    let id = base
        .read_at(&file, 0, vec![0; 4096], |_, out, _, r| {
            out.push(r.err().and_then(|e| e.raw_os_error()))
        })
        .unwrap();
    assert_eq!(base.metrics().aio_cached_reads, 1, "served inside read_at");
    assert!(
        base.cancel_aio(id),
        "no callback yet: the read can be cancelled"
    );
    let mut out = Vec::new();
    assert!(finish(&mut base, &mut out));
    assert_eq!(out, [Some(libc::ECANCELED)]);
}

/// Requests waiting for the helpers behind the ones cancelled must still run: a run with
/// `exit_when_empty` ends.
#[test]
#[allow(deprecated)]
fn cancelling_the_queued_helper_jobs_lets_the_ones_behind_them_run() {
    let status = AioFile::open("/proc/self/status", false).unwrap();
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    base.set_aio_options(AioOptions::new().helper_threads(1).helper_queue(1))
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = base
            .read_at(&status, 0, vec![0; 4096], move |_, out, _, r| {
                let what = match r {
                    Ok(n) => format!("{i}: read {}", n > 0),
                    Err(e) => format!("{i}: {:?}", e.raw_os_error()),
                };
                out.push(what)
            })
            .unwrap();
        ids.push(id);
    }
    // Cancel the first two, which went first to the helper (unless it took one already).
    let cancelled: Vec<bool> = ids[..2].iter().map(|&id| base.cancel_aio(id)).collect();
    let mut out = Vec::new();
    assert!(
        finish(&mut base, &mut out),
        "jobs were stranded behind the cancelled ones"
    );
    out.sort();
    let first = |i: usize| match cancelled[i] {
        true => format!("{i}: Some({})", libc::ECANCELED),
        false => format!("{i}: read true"),
    };
    assert_eq!(
        out,
        [
            first(0),
            first(1),
            "2: read true".into(),
            "3: read true".into()
        ]
    );
}

#[test]
fn with_helpers_off_a_panicking_job_leaves_nothing_to_keep_the_loop_alive() {
    let mut base = EventBase::<()>::new().unwrap();
    base.set_aio_options(AioOptions::new().helper_threads(0))
        .unwrap();
    let submitted = panic::catch_unwind(AssertUnwindSafe(|| {
        base.run_blocking(
            || -> std::io::Result<()> { panic!("job fails") },
            |_, _, _| {},
        )
    }));
    assert!(
        submitted.is_err(),
        "with helpers off the panic unwinds from run_blocking"
    );
    assert!(finish(&mut base, &mut ()), "the empty base stayed alive");
}

#[test]
fn run_blocking_and_metadata_operations_can_be_cancelled_while_queued() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cancel-jobs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a"), b"a").unwrap();
    let mut base = one_helper::<Vec<String>>();
    occupy_helper(&mut base, Duration::from_millis(200));
    let report = |what: &'static str| {
        move |_: &mut EventBase<Vec<String>>, out: &mut Vec<String>, r: Result<(), i32>| {
            out.push(format!("{what} {r:?}"))
        }
    };
    let (stat, rename, blocking) = (report("stat"), report("rename"), report("blocking"));
    let ids = [
        base.stat(dir.join("a"), move |b, o, r| {
            stat(b, o, r.map(drop).map_err(errno))
        })
        .unwrap(),
        base.rename(dir.join("a"), dir.join("b"), move |b, o, r| {
            rename(b, o, r.map_err(errno))
        })
        .unwrap(),
        base.run_blocking(|| Ok(()), move |b, o, r| blocking(b, o, r.map_err(errno)))
            .unwrap(),
    ];
    for id in ids {
        assert!(base.cancel_job(id), "queued behind the busy helper");
        assert!(!base.cancel_job(id), "already cancelled");
    }
    let mut out = Vec::new();
    assert!(finish(&mut base, &mut out));
    out.sort();
    let e = libc::ECANCELED;
    assert_eq!(
        out,
        [
            format!("blocking Err({e})"),
            format!("rename Err({e})"),
            format!("stat Err({e})")
        ]
    );
    assert!(dir.join("a").exists(), "the cancelled rename never ran");
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}
