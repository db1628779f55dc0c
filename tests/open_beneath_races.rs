//! `open_beneath` under a rename storm, and `/proc` magic links: the errno the docs promise.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aioloop::{AioOptions, Dir, EventBase};

mod skip;

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

#[test]
fn regular_files_only_refuses_fifos_devices_and_directories_without_opening_them() {
    let root = scratch("regular-only");
    std::fs::write(root.join("file"), b"plain").unwrap();
    std::fs::create_dir(root.join("dir")).unwrap();
    let fifo = root.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    let null = std::ffi::CString::new(root.join("null").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C path; /dev/null's device number.
    let device = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    if device != 0 {
        skip::skip("making a device node needs root (CAP_MKNOD): the FIFO, socket and directory are still checked");
    }
    // A writer waiting for a reader of the FIFO: an open for reading would release it.
    let released = Arc::new(AtomicBool::new(false));
    let writer = {
        let (fifo, released) = (fifo.clone(), released.clone());
        std::thread::spawn(move || {
            let _w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            released.store(true, Ordering::SeqCst);
        })
    };
    let dir = Dir::open(&root).unwrap().regular_files_only();
    for helpers in [4, 0] {
        let mut base = EventBase::<Vec<String>>::new().unwrap();
        base.set_aio_options(AioOptions::new().helper_threads(helpers))
            .unwrap();
        let paths: &[&'static str] = match device {
            0 => &["file", "dir", "fifo", "sock", "null"],
            _ => &["file", "dir", "fifo", "sock"],
        };
        for &path in paths {
            base.open_beneath(&dir, path, false, move |_, out, file| {
                out.push(match file {
                    Ok(_) => format!("{path} ok"),
                    Err(e) => format!("{path} {:?}", aioloop::os_error(&e)),
                })
            })
            .unwrap();
        }
        base.set_exit_when_empty(true);
        base.exit_after(Duration::from_secs(30));
        let mut out = Vec::new();
        base.run(&mut out).unwrap();
        out.sort();
        let (isdir, nxio) = (Some(libc::EISDIR), Some(libc::ENXIO));
        let mut expected = vec![
            format!("dir {isdir:?}"),
            format!("fifo {nxio:?}"),
            "file ok".into(),
            format!("sock {nxio:?}"),
        ];
        if device == 0 {
            expected.insert(3, format!("null {nxio:?}"));
        }
        assert_eq!(out, expected, "helpers {helpers}");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(!released.load(Ordering::SeqCst), "the FIFO was opened");
    // Let the writer go.
    drop(std::fs::File::open(&fifo).unwrap());
    writer.join().unwrap();
}
