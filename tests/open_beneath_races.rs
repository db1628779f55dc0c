//! `open_beneath` under a rename storm, and `/proc` magic links: the errno the docs promise.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aioloop::{AioOptions, Dir, EventBase};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("beneath-races")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// openat2 with `RESOLVE_BENEATH` answers `EAGAIN` when any rename on the system races a `..`
/// step (it cannot tell the step did not escape); the open is retried, never reported.
#[test]
fn open_beneath_retries_when_a_rename_races_a_dot_dot_step() {
    let root = scratch("storm");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("file"), b"x").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let (stop, dir) = (stop.clone(), scratch("storm-renames"));
        std::fs::write(dir.join("a"), b"").unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(dir.join("a"), dir.join("b")).unwrap();
                std::fs::rename(dir.join("b"), dir.join("a")).unwrap();
            }
        })
    };
    let dir = Dir::open(&root).unwrap();
    // Helpers off: every open runs the uncached openat2 itself, on the loop thread.
    let mut base = EventBase::<(usize, Vec<String>)>::new().unwrap();
    base.set_aio_options(AioOptions::new().helper_threads(0))
        .unwrap();
    let path = "sub/../sub/../sub/../sub/../sub/../sub/../sub/../sub/../file";
    let mut out = (0, Vec::new());
    for _ in 0..20_000 {
        base.open_beneath(&dir, path, false, |_, (ok, errors), file| match file {
            Ok(_) => *ok += 1,
            Err(e) => errors.push(e.to_string()),
        })
        .unwrap();
        base.run_once(&mut out, Some(Duration::ZERO)).unwrap();
    }
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(30));
    base.run(&mut out).unwrap();
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    assert_eq!(out.1.first(), None, "{} failed", out.1.len());
    assert_eq!(out.0, 20_000);
}

#[test]
fn proc_magic_links_are_refused_with_eloop_as_documented() {
    let dir = Dir::open("/proc/self").unwrap();
    for helpers in [4, 0] {
        let mut base = EventBase::<Vec<Option<i32>>>::new().unwrap();
        base.set_aio_options(AioOptions::new().helper_threads(helpers))
            .unwrap();
        for path in ["exe", "cwd/Cargo.toml", "fd/0"] {
            base.open_beneath(&dir, path, false, |_, out, file| {
                out.push(file.err().and_then(|e| aioloop::os_error(&e)))
            })
            .unwrap();
        }
        base.set_exit_when_empty(true);
        base.exit_after(Duration::from_secs(30));
        let mut out = Vec::new();
        base.run(&mut out).unwrap();
        assert_eq!(out, [Some(libc::ELOOP); 3], "helpers {helpers}");
    }
}
