//! The examples, run as a user would, with good and bad arguments.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod example_bin;
mod scratch;

use example_bin::example;
use scratch::ScratchDir;

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

/// Starts `examples/echo` with `args` and returns it, its stdout (kept open: the server may
/// print more) and the address its `listening ADDR` line gives.
fn spawn_echo(args: &[&str]) -> (Child, BufReader<ChildStdout>, String) {
    let (server, mut out) = spawn("echo", args);
    let ready = line(&mut out);
    let addr = (ready.strip_prefix("listening "))
        .unwrap_or_else(|| panic!("{ready:?}"))
        .to_string();
    (server, out, addr)
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
fn echo_example_echoes_every_byte() {
    {
        let mode = "default";
        let (mut server, _out, addr) = spawn_echo(&["--addr", "127.0.0.1:0"]);
        let mut conn = TcpStream::connect(&addr).unwrap();
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
    let dir = ScratchDir::new("example-aio");
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

#[test]
fn linux_aio_test_refuses_bad_input_with_a_message_naming_it() {
    let dir = ScratchDir::new("example-aio-bad");
    let input = dir.join("input");
    std::fs::write(&input, b"precious bytes").unwrap();
    let fifo = dir.join("fifo");
    if !fifo.exists() {
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    }
    let (input, fifo, dir_s) = (
        input.to_str().unwrap(),
        fifo.to_str().unwrap(),
        dir.to_str().unwrap(),
    );
    let cases: &[(&[&str], &str)] = &[
        (&["--output", input, input], "is the input file itself"),
        (&["/dev/zero"], "character device"),
        (&["/dev/null"], "character device"),
        (&[fifo], "is a FIFO"),
        (&[dir_s], "is a directory"),
        (
            &["--chunk-size", "0", input],
            "--chunk-size must be a positive number",
        ),
        (
            &["--chunk-size", "abc", input],
            "--chunk-size must be a positive number",
        ),
        (
            &["--depth", "0", input],
            "--depth must be a positive number",
        ),
        (
            &["--output", "/nonexistent/out", input],
            "cannot create --output",
        ),
        (&["/nonexistent"], "cannot read /nonexistent"),
        (&[], "FILE is missing"),
    ];
    for (args, expected) in cases {
        let (code, stdout, stderr) = run_example("linux_aio_test", args);
        let usage = expected.starts_with("--") || expected.contains("missing");
        assert_eq!(
            code,
            if usage { 2 } else { 1 },
            "{args:?}: {stdout}{stderr}"
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert_eq!(
        std::fs::read(input).unwrap(),
        b"precious bytes",
        "the input survived --output INPUT INPUT"
    );
    // /proc reports size 0 and kernel AIO cannot read it: read to its end on a helper thread.
    let (code, stdout, stderr) = run_example("linux_aio_test", &["/proc/self/status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.starts_with("bytes 0 "), "{stdout}");
}

/// `--chunk-size 10000000000` on a 10 MiB file reads it in one chunk of the file's size,
/// under an address-space limit far below the chunk asked for.
#[test]
fn linux_aio_test_caps_a_chunk_larger_than_the_file_at_its_size() {
    use std::os::unix::process::CommandExt;
    const LIMIT: u64 = 2 << 30;
    let dir = ScratchDir::new("example-aio-huge-chunk");
    let input = dir.join("input");
    std::fs::write(&input, vec![5u8; 10 << 20]).unwrap();
    for direct in [false, true] {
        let mut command = Command::new(example("linux_aio_test"));
        command.args(["--chunk-size", "10000000000"]);
        if direct {
            command.arg("--direct");
        }
        command.arg(&input);
        // SAFETY: setrlimit is async-signal-safe; the limit is a copied value.
        unsafe {
            command.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: LIMIT,
                    rlim_max: LIMIT,
                };
                match libc::setrlimit(libc::RLIMIT_AS, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        let run = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "direct={direct}: {stderr}");
        let stdout = String::from_utf8(run.stdout).unwrap();
        assert!(stdout.starts_with("bytes 10485760 chunks 1 "), "{stdout}");
        assert!(stdout.contains("(chunk 10485760 "), "{stdout}");
    }
}

#[test]
fn echo_reports_bad_arguments_and_a_taken_port_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["--addr", &taken], "cannot listen on"),
        (
            &["--addr", "no-such-host.invalid:80"],
            "--addr no-such-host.invalid:80",
        ),
        (&["--addr", "localhost"], "--addr localhost"),
        (&["--idle-timeout", "abc"], "--idle-timeout takes seconds"),
        (&["--idle-timeout", "-1"], "non-negative"),
        (&["--frobnicate"], "unknown argument"),
        (&["--idle-timeout"], "--idle-timeout needs a value"),
        (&["--idle-timeout", "1e300"], "non-negative"),
        (&["--idle-timeout", "NaN"], "non-negative"),
    ];
    for (args, expected) in cases {
        let (code, _, stderr) = run_example("echo", args);
        let usage = !expected.starts_with("cannot listen");
        assert_eq!(code, if usage { 2 } else { 1 }, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("Os {"),
            "{args:?}: a Debug error: {stderr}"
        );
    }
    let (code, _, stderr) = run_example("signals", &["extra"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("takes no arguments"), "{stderr}");
}

#[test]
fn echo_accepts_a_host_name_and_zero_idle_timeout_means_none() {
    let (mut server, _out, addr) = spawn_echo(&["--addr", "localhost:0", "--idle-timeout", "0"]);
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    conn.write_all(b"still here").unwrap();
    let mut got = [0; 10];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here", "the idle connection was closed");
    server.kill().unwrap();
    server.wait().unwrap();
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

#[test]
fn browse_reads_every_regular_file_once_and_refuses_a_bad_dir() {
    let dir = ScratchDir::new("example-browse");
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("top"), vec![1u8; 300_000]).unwrap();
    std::fs::write(dir.join("a/b/deep"), vec![2u8; 5]).unwrap();
    std::fs::write(dir.join("a/empty"), b"").unwrap();
    std::os::unix::fs::symlink("..", dir.join("a/loop")).unwrap();
    let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid C path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let d = dir.to_str().unwrap();
    for extra in [None, Some("--direct")] {
        let args: Vec<&str> = extra.into_iter().chain([d]).collect();
        let (code, stdout, stderr) = run_example("browse", &args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let summary = browse_summary(&stdout);
        assert_eq!(summary["files"], 3.0, "{stdout}");
        assert_eq!(summary["bytes"], 300_005.0, "{stdout}");
    }
    let top = dir.join("top");
    let cases: &[(&[&str], &str)] = &[
        (&["/nonexistent"], "cannot list /nonexistent"),
        (&[top.to_str().unwrap()], "Not a directory"),
        (&[&format!("{d}/fifo")], "Not a directory"),
        (&[], "DIR is missing"),
        (&["--fast", d], "unknown option --fast"),
    ];
    for (args, expected) in cases {
        let (code, stdout, stderr) = run_example("browse", args);
        let usage = expected.contains("missing") || expected.contains("unknown option");
        assert_eq!(
            code,
            if usage { 2 } else { 1 },
            "{args:?}: {stdout}{stderr}"
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn echo_closes_a_peer_that_stops_taking_its_echo_after_the_idle_timeout() {
    let (mut server, _out, addr) = spawn_echo(&["--addr", "127.0.0.1:0", "--idle-timeout", "1"]);
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Send and never read: the server's writer fills, it stops reading, and 1 s later closes.
    let started = Instant::now();
    let chunk = vec![7u8; 64 << 10];
    let failed = (0..100_000).find_map(|_| conn.write_all(&chunk).err());
    let took = started.elapsed();
    assert!(failed.is_some(), "the server never closed the connection");
    assert!(took < Duration::from_secs(15), "closed only after {took:?}");
    // The server still serves others.
    let mut other = TcpStream::connect(&addr).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    other.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    other.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn echo_closes_at_once_a_peer_that_wrote_and_shut_down_in_one_go() {
    // The data and the FIN arrive in one edge; the server used to keep such connections until
    // their idle timeout, or for good with --idle-timeout 0.
    for idle in ["60", "0"] {
        let (mut server, _out, addr) =
            spawn_echo(&["--addr", "127.0.0.1:0", "--idle-timeout", idle]);
        let clients: Vec<TcpStream> = (0..20)
            .map(|_| {
                let mut conn = TcpStream::connect(&addr).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                conn.write_all(b"ping and bye").unwrap();
                conn.shutdown(std::net::Shutdown::Write).unwrap();
                conn
            })
            .collect();
        let started = Instant::now();
        for mut conn in clients {
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"ping and bye");
        }
        // All 20 within a generous bound (on an idle machine: well under 100 ms).
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "--idle-timeout {idle}: closed after {took:?}"
        );
        server.kill().unwrap();
        server.wait().unwrap();
    }
}
