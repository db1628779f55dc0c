//! The examples, run as a user would, with good and bad arguments.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The example's binary, built (once per test run) with the profile this test was built with.
///
/// A plain `cargo test` builds the examples as binaries next to the tests, but
/// `cargo test --all-targets` builds them as test harnesses instead, and an earlier plain
/// binary may be stale: so the test asks cargo itself, which is a no-op when they are fresh.
fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--examples"]);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => drop(build.arg("--release")),
            Some(profile) => drop(build.args(["--profile", profile])),
        }
        let status = build.status().expect("cannot run cargo to build the examples");
        assert!(status.success(), "cargo build --examples failed");
    });
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

fn spawn(name: &str, args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

fn signal(child: &Child, signo: i32) {
    // SAFETY: `child` is our unreaped child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signo) }, 0);
}

#[test]
fn echo_example_echoes_every_byte_in_both_modes() {
    for mode in [None, Some("--level")] {
        let mut args = vec!["--addr", "127.0.0.1:0"];
        args.extend(mode);
        let (mut server, mut out) = spawn("echo", &args);
        let ready = line(&mut out);
        let addr = ready
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("{ready:?}"));
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let reader = {
            let mut conn = conn.try_clone().unwrap();
            let len = data.len();
            std::thread::spawn(move || {
                let mut got = vec![0; len];
                conn.read_exact(&mut got).map(|_| got)
            })
        };
        conn.write_all(&data).unwrap();
        assert!(
            reader.join().unwrap().unwrap() == data,
            "{mode:?}: echo differs"
        );
        server.kill().unwrap();
        server.wait().unwrap();
    }
}

#[test]
fn signals_example_reports_metrics_reload_child_and_shuts_down_on_sigterm() {
    let (mut daemon, mut out) = spawn("signals", &[]);
    let ready = line(&mut out);
    assert_eq!(ready, format!("ready pid={}", daemon.id()));
    let mut seen = Vec::new();
    let mut wait_for = |prefix: &str, seen: &mut Vec<String>| {
        while !seen.iter().any(|l| l.starts_with(prefix)) {
            seen.push(line(&mut out));
        }
    };
    wait_for("child ", &mut seen);
    assert!(
        seen.iter()
            .any(|l| l.starts_with("child ") && l.ends_with(" exited 0")),
        "{seen:?}"
    );
    signal(&daemon, libc::SIGUSR1);
    wait_for("metrics ", &mut seen);
    signal(&daemon, libc::SIGHUP);
    wait_for("reload", &mut seen);
    let start = Instant::now();
    signal(&daemon, libc::SIGTERM);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        start.elapsed()
    );
}

#[test]
fn linux_aio_test_example_copies_a_file_byte_for_byte_with_and_without_direct() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("example-aio");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input");
    // Not a multiple of the chunk size: the last read is short.
    let data: Vec<u8> = (0..3_000_123u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&input, &data).unwrap();
    for direct in [false, true] {
        let output = dir.join(format!("output-{direct}"));
        let mut args = vec![
            "--chunk-size",
            "65536",
            "--depth",
            "4",
            "--output",
            output.to_str().unwrap(),
        ];
        if direct {
            args.push("--direct");
        }
        args.push(input.to_str().unwrap());
        let run = Command::new(example("linux_aio_test"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let stdout = String::from_utf8(run.stdout).unwrap();
        assert!(stdout.starts_with("bytes 3000123 chunks 46 "), "{stdout}");
        assert!(
            std::fs::read(&output).unwrap() == data,
            "direct={direct}: output differs"
        );
    }
}
