//! File-system operations on helper threads, on real files, and a helper stuck for real in the
//! kernel (`open` of a FIFO nobody writes to) while the loop goes on.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aioloop::{AioFile, AioOptions, EventBase, Schedule};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fs-ops")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the base until nothing is left, failing instead of hanging.
fn finish<S>(base: &mut EventBase<S>, state: &mut S) {
    base.set_exit_when_empty(true);
    let guard = base.exit_after(Duration::from_secs(20));
    base.run(state).unwrap();
    base.cancel_timer(guard);
}

#[test]
fn every_metadata_operation_does_what_its_blocking_twin_does() {
    let dir = scratch("every-op");
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    let mut log = Vec::new();

    base.create_dir(dir.join("sub"), |_, log, r| {
        log.push(format!("mkdir {r:?}"))
    })
    .unwrap();
    finish(&mut base, &mut log);
    let mut create = OpenOptions::new();
    create.read(true).write(true).create(true).truncate(true);
    // Operations on helpers may run in any order: each waits for the one before it.
    base.open(dir.join("sub/a"), &create, |base, _, file| {
        let file = file.unwrap();
        let resized = file.clone();
        base.set_len(&resized, 5000, |base, log, r| {
            log.push(format!("set_len {r:?}"));
            let allocated = file.clone();
            base.fallocate(&allocated, 0, 0, 8192, |base, log, r| {
                log.push(format!("fallocate {r:?}"));
                base.close(file, |_, log, r| log.push(format!("close {r:?}")))
                    .unwrap();
            })
            .unwrap();
        })
        .unwrap();
    })
    .unwrap();
    finish(&mut base, &mut log);
    let (a, b) = (dir.join("sub/a"), dir.join("sub/b"));
    base.stat(a.clone(), |base, log, m| {
        log.push(format!("size {}", m.unwrap().len()));
        base.rename(a, b, |_, log, r| log.push(format!("rename {r:?}")))
            .unwrap();
    })
    .unwrap();
    finish(&mut base, &mut log);
    base.read_dir(dir.join("sub"), |_, log, entries| {
        for e in entries.unwrap() {
            let kind = e.file_type.map(|t| t.is_file());
            log.push(format!("entry {:?} file={kind:?}", e.name));
        }
    })
    .unwrap();
    finish(&mut base, &mut log);
    base.remove_file(dir.join("sub/b"), |_, log, r| {
        log.push(format!("unlink {r:?}"))
    })
    .unwrap();
    finish(&mut base, &mut log);

    log.sort();
    assert_eq!(
        log,
        [
            "close Ok(())",
            "entry \"b\" file=Some(true)",
            "fallocate Ok(())",
            "mkdir Ok(())",
            "rename Ok(())",
            "set_len Ok(())",
            "size 8192",
            "unlink Ok(())",
        ]
    );
    assert!(!dir.join("sub/b").exists());
    assert!(base.metrics().helper_jobs >= 8);
}

#[test]
fn errors_name_the_path_and_keep_the_errno() {
    let mut base = EventBase::<Vec<std::io::Error>>::new().unwrap();
    base.open(
        "/nonexistent/x",
        OpenOptions::new().read(true),
        |_, errs, r| errs.push(r.unwrap_err()),
    )
    .unwrap();
    base.read_dir("/nonexistent", |_, errs, r| errs.push(r.unwrap_err()))
        .unwrap();
    base.stat("/nonexistent/s", |_, errs, r| errs.push(r.unwrap_err()))
        .unwrap();
    base.remove_file("/nonexistent/r", |_, errs, r| errs.push(r.unwrap_err()))
        .unwrap();
    base.create_dir("/nonexistent/d", |_, errs, r| errs.push(r.unwrap_err()))
        .unwrap();
    base.rename("/nonexistent/a", "/nonexistent/b", |_, errs, r| {
        errs.push(r.unwrap_err())
    })
    .unwrap();
    let mut errs = Vec::new();
    finish(&mut base, &mut errs);
    assert_eq!(errs.len(), 6);
    for e in errs {
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(aioloop::os_error(&e), Some(libc::ENOENT));
        assert!(e.to_string().contains("/nonexistent"), "{e}");
    }
}

fn fifo(name: &str) -> PathBuf {
    let path = scratch(name).join("fifo");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    path
}

/// Lets a helper stuck opening `path` for reading go: a writer's non-blocking open completes it.
fn release(path: &PathBuf) {
    let _ = OpenOptions::new()
        .write(true)
        .custom_flags_nonblock()
        .open(path);
}

trait NonBlockExt {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlockExt for OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_NONBLOCK)
    }
}

#[derive(Default)]
struct Stuck {
    ticks: u32,
    opened: bool,
    cancelled: Option<i32>,
}

#[test]
fn a_helper_stuck_in_the_kernel_holds_neither_the_loop_nor_a_queued_cancel_nor_the_drop() {
    let path = fifo("stuck");
    let mut base = EventBase::<Stuck>::new().unwrap();
    base.set_aio_options(AioOptions::new().helper_threads(1))
        .unwrap();
    // The only helper blocks in open(2) until a writer comes.
    base.open(&path, OpenOptions::new().read(true), |_, st, r| {
        st.opened = r.is_ok()
    })
    .unwrap();
    // A request that needs a helper (procfs has no RWF_NOWAIT) waits behind it.
    let proc_file = AioFile::open("/proc/self/status", false).unwrap();
    let queued = base
        .read_at(&proc_file, 0, vec![0; 4096], |_, st, _, r| {
            st.cancelled = r.unwrap_err().raw_os_error();
        })
        .unwrap();
    base.add_repeating_timer(Duration::from_millis(5), Schedule::FixedRate, |_, st, _| {
        st.ticks += 1
    });
    let mut st = Stuck::default();
    base.run_for(&mut st, Duration::from_millis(200)).unwrap();
    assert!(st.ticks >= 10, "the loop was held: {} ticks", st.ticks);
    assert!(!st.opened);
    assert!(
        base.cancel_aio(queued),
        "a request queued behind a stuck helper can be cancelled"
    );
    base.run_for(&mut st, Duration::from_millis(50)).unwrap();
    assert_eq!(st.cancelled, Some(libc::ECANCELED));

    let started = Instant::now();
    drop(base);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "dropping the base waited for the stuck helper"
    );
    release(&path);
}

/// The helpers' completions come through their own eventfd, not the AIO ring: the one that
/// leaves the loop empty must end a run with `set_exit_when_empty` at once, not wait for a
/// timer (the unref'd `exit_after` below) or another event.
#[test]
fn helper_completion_that_empties_the_loop_ends_the_run_at_once() {
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    base.stat("Cargo.toml", |_, log, m| {
        log.push(format!("stat {}", m.is_ok()))
    })
    .unwrap();
    // A /proc file has no RWF_NOWAIT: its read goes to a helper too.
    let status = AioFile::open("/proc/self/status", false).unwrap();
    base.read_at(&status, 0, vec![0; 4096], |_, log, _, n| {
        log.push(format!("read {}", n.is_ok_and(|n| n > 0)))
    })
    .unwrap();
    base.set_exit_when_empty(true);
    let guard = base.exit_after(Duration::from_secs(30));
    let started = Instant::now();
    let mut log = Vec::new();
    base.run(&mut log).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the run waited for the guard timer"
    );
    base.cancel_timer(guard);
    log.sort();
    assert_eq!(log, ["read true", "stat true"]);
    assert_eq!(base.metrics().helper_jobs, 2);
}

#[test]
fn open_beneath_refuses_every_way_out_of_the_directory() {
    let base_dir = scratch("beneath");
    let root = base_dir.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("in"), b"inside").unwrap();
    std::fs::write(root.join("sub/x"), b"deeper").unwrap();
    std::fs::write(base_dir.join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink("in", root.join("link-in")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("link-out")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    let dir = aioloop::Dir::open(&root).unwrap();
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    let cases = [
        ("in", "ok inside"),
        ("sub/x", "ok deeper"),
        ("sub/../in", "ok inside"),
        ("link-in", "ok inside"),
        ("../secret", "EXDEV"),
        ("/etc/passwd", "EXDEV"),
        ("link-out", "EXDEV"),
        ("link-abs", "EXDEV"),
        ("up/secret", "EXDEV"),
        ("sub/../../secret", "EXDEV"),
        ("missing", "ENOENT"),
    ];
    for (path, _) in cases {
        base.open_beneath(&dir, path, false, move |_, log, file| {
            let got = match file {
                Ok(file) => {
                    let text = std::fs::read_to_string(format!("/proc/self/fd/{}", {
                        use std::os::fd::AsRawFd;
                        file.as_raw_fd()
                    }))
                    .unwrap();
                    format!("ok {text}")
                }
                Err(e) => match aioloop::os_error(&e) {
                    Some(libc::EXDEV) => "EXDEV".to_string(),
                    Some(libc::ENOENT) => "ENOENT".to_string(),
                    _ => format!("{e}"),
                },
            };
            log.push(format!("{path} {got}"));
        })
        .unwrap();
    }
    let mut log = Vec::new();
    finish(&mut base, &mut log);
    log.sort();
    let mut expected: Vec<String> = cases.iter().map(|(p, r)| format!("{p} {r}")).collect();
    expected.sort();
    assert_eq!(log, expected);
    let err = aioloop::Dir::open(root.join("in")).unwrap_err();
    assert!(err.to_string().contains("in"), "{err}");
}
