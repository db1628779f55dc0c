//! The one rule for tests that need what an ordinary user may lack (root, `/dev/fuse`, a
//! cgroup-v1 controller): where it is missing the test prints one line saying what it skipped
//! and why, and passes, so that `cargo test --workspace` is green for anyone; with
//! `AIOLOOP_REQUIRE_ALL_TESTS=1` (`.ci/run` sets it) the skip fails the test instead, so CI
//! always runs it for real. Shared by path with `fuse-tests/`.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::Write;

/// The variable that turns a skip into a failure.
pub const REQUIRE_ALL: &str = "AIOLOOP_REQUIRE_ALL_TESTS";

/// Skips what the calling test cannot do here because `why`: prints `skipped TEST: WHY` on
/// stderr, or panics when `AIOLOOP_REQUIRE_ALL_TESTS=1`.
pub fn skip(why: impl Display) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| v == "1") {
        panic!("{test} cannot run here: {why} ({REQUIRE_ALL}=1 forbids skipping it)");
    }
    // To the stderr handle itself: libtest captures the output of `eprintln!`, not this.
    let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
}
