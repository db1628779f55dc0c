//! Files the tests make under cargo's per-target temp dir, removed when done with, so that a
//! green run leaves nothing behind in `target/tmp`: a test's own directory goes when the test
//! ends ([`ScratchDir`]), a fixture the tests of one binary share when the binary exits
//! ([`remove_at_exit`]). Shared by path with `fuse-tests/`.
#![allow(dead_code)]

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `target/tmp/NAME`, made empty for one test and removed with all it holds when dropped
/// (when the test ends, passed or failed).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&path); // left by a run that was killed
        std::fs::create_dir_all(&path).unwrap();
        ScratchDir(path)
    }
}

impl Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What [`remove_at_exit`] removes, and the process that registered it.
static AT_EXIT: Mutex<(u32, Vec<PathBuf>)> = Mutex::new((0, Vec::new()));

/// Removes `path` (a file or a directory tree) when this test binary exits, however its tests
/// ended: for a fixture its tests share, which no one test may remove.
pub fn remove_at_exit(path: PathBuf) {
    let mut registered = AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
    if registered.0 == 0 {
        registered.0 = std::process::id();
        // SAFETY: `remove_registered` is an `extern "C" fn()` that lives as long as the process.
        assert_eq!(unsafe { libc::atexit(remove_registered) }, 0);
    }
    registered.1.push(path);
}

extern "C" fn remove_registered() {
    // Another thread may hold the lock when a failing run exits: leave the files then.
    let Ok(registered) = AT_EXIT.try_lock() else {
        return;
    };
    // A forked child that exits runs this too; only the process that made the files removes them.
    if registered.0 != std::process::id() {
        return;
    }
    for path in &registered.1 {
        let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
    }
}
