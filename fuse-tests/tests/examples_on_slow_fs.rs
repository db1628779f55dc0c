//! The examples that read files (`browse`, `fileserver`), run as a user would, on a FUSE file
//! system that stalls every request: their loops keep time and keep answering.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tests/example_bin/mod.rs"]
mod example_bin;
mod slowfs;

use example_bin::{example, raw_exchange};
use slowfs::SlowFs;

/// Runs an example to its end and returns (exit code, stdout, stderr).
fn run_example(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

/// The `files N bytes N ...` line of a browse run, split into its numbers by name.
fn browse_summary(stdout: &str) -> std::collections::HashMap<String, f64> {
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("files "), "no summary line: {stdout}");
    let words: Vec<&str> = last.split_whitespace().collect();
    (words.chunks(2))
        .filter_map(|pair| Some((pair[0].to_string(), pair.get(1)?.parse().ok()?)))
        .collect()
}

/// On a file system that stalls each request 500 ms, the heartbeat keeps its 100 ms with the
/// helpers, and stutters without them.
#[test]
fn browse_heartbeat_keeps_time_on_a_stalling_file_system() {
    let Some(fs) = SlowFs::mount_or_skip("browse", &[("one", 200_000), ("two", 3)]) else {
        return;
    };
    let root = fs.root.to_str().unwrap();
    fs.set_stall(Duration::from_millis(500));
    for helpers in [true, false] {
        let args: &[&str] = if helpers {
            &[root]
        } else {
            &["--no-helpers", root]
        };
        let (code, stdout, stderr) = run_example("browse", args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let summary = browse_summary(&stdout);
        assert_eq!((summary["files"], summary["bytes"]), (2.0, 200_003.0));
        let beats = stdout
            .lines()
            .filter(|l| l.starts_with("heartbeat "))
            .count();
        let worst_ms = summary["worst-late"];
        if helpers {
            assert!(
                beats >= 10,
                "{beats} heartbeats in a walk of several stalls"
            );
            assert!(worst_ms < 250.0, "the heartbeat froze: {stdout}");
        } else {
            assert!(worst_ms >= 400.0, "no stall without helpers: {stdout}");
        }
    }
}

fn curl(args: &[&str]) -> Output {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output();
    out.expect("curl is needed: apt-get install curl")
}

/// Starts `examples/fileserver` on `root` with `extra` arguments, on an ephemeral port.
fn start_fileserver(root: &Path, extra: &[&str]) -> (Child, SocketAddr) {
    let mut command = Command::new(example("fileserver"));
    command
        .args(["--addr", "127.0.0.1:0", "--root"])
        .arg(root)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap()
        .parse()
        .unwrap();
    (child, addr)
}

/// The mission's story, end to end: a download from a file system that stalls 2 s per request
/// (like a disk spinning up) does not hold the server's other clients.
#[test]
fn a_download_from_a_stalling_file_system_does_not_hold_other_clients() {
    let Some(fs) = SlowFs::mount_or_skip("fileserver", &[("slow.bin", 300_000)]) else {
        return;
    };
    let (mut child, addr) = start_fileserver(&fs.root, &[]);
    fs.set_stall(Duration::from_secs(2));
    let url = format!("http://{addr}/slow.bin");
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let out = curl(&["-w", "%{http_code}", "-o", "/dev/null", &url]);
        (String::from_utf8(out.stdout).unwrap(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // Requests the server answers without the file system, while the download waits on it.
    let requests = [
        &b"GET /../x HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nConnection: close\r\n\r\n",
    ];
    for request in requests {
        let started = Instant::now();
        let reply = raw_exchange(addr, request);
        assert!(reply.starts_with("HTTP/1.1 40"), "{reply}");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "answered after {took:?}");
    }
    let (status, took) = slow.join().unwrap();
    assert_eq!(status, "200");
    assert!(
        took >= Duration::from_secs(2),
        "the file system did not stall: {took:?}"
    );
    fs.set_stall(Duration::ZERO);
    let _ = child.kill();
    let _ = child.wait();
}

/// Waiting on the server's own file system is not client idleness: a request whose file
/// stalls longer than the idle timeout is still answered.
#[test]
fn a_request_waiting_on_a_stalled_file_system_is_not_timed_out_as_idle() {
    let Some(fs) = SlowFs::mount_or_skip("fileserver-idle", &[("slow.bin", 100_000)]) else {
        return;
    };
    let (mut child, addr) = start_fileserver(&fs.root, &["--idle-timeout", "1"]);
    fs.set_stall(Duration::from_millis(2500));
    let url = format!("http://{addr}/slow.bin");
    let out = curl(&["-w", "%{http_code}", "-o", "/dev/null", &url]);
    fs.set_stall(Duration::ZERO);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    let _ = child.kill();
    let _ = child.wait();
}

/// A request stuck on the file system for four idle timeouts is answered 504, not dropped.
#[test]
fn a_request_stuck_on_the_file_system_for_four_idle_timeouts_gets_504() {
    let Some(fs) = SlowFs::mount_or_skip("fileserver-504", &[("hung.bin", 100_000)]) else {
        return;
    };
    let (mut child, addr) = start_fileserver(&fs.root, &["--idle-timeout", "1"]);
    fs.set_stall(Duration::from_secs(8));
    let started = Instant::now();
    let reply = raw_exchange(addr, b"GET /hung.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let took = started.elapsed();
    fs.set_stall(Duration::ZERO);
    assert!(reply.starts_with("HTTP/1.1 504 "), "{reply}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(7),
        "{took:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
