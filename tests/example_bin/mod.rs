//! The root package's example binaries, for the tests that run them as a user would, and a raw
//! HTTP exchange with a server one of them runs. Shared by path with `fuse-tests/`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The example's binary, built (once per test run) with the profile this test was built with.
///
/// A plain `cargo test` builds the examples as binaries next to the tests, but
/// `cargo test --all-targets` builds them as test harnesses instead, and an earlier plain
/// binary may be stale: so the test asks cargo itself, which is a no-op when they are fresh.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "aioloop", "--examples"]);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => drop(build.arg("--release")),
            Some(profile) => drop(build.args(["--profile", profile])),
        }
        let status = build
            .status()
            .expect("cannot run cargo to build the examples");
        assert!(status.success(), "cargo build -p aioloop --examples failed");
    });
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// Sends raw bytes and reads until the server closes.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}
