//! Running the benchmark binaries and reading what they print.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `program` run on `cpu` only (through `taskset`).
pub fn pinned(cpu: usize, program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(program);
    cmd
}

/// Runs `cmd` to its end and returns its standard output; a failure ends the report with
/// the command and its standard error.
pub fn output(cmd: &mut Command) -> String {
    try_output(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` to its end: its standard output, or what went wrong, with its standard error.
pub fn try_output(cmd: &mut Command) -> Result<String, String> {
    let out =
        (cmd.stdin(Stdio::null()).output()).map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a server that listens on a port of its own choosing (it is given
/// `127.0.0.1:0`) and prints `listening ADDR` once it accepts connections; returns it with
/// that address. A fixed port could be taken: the ephemeral range, which a connection's
/// local port comes from, covers most of them.
pub fn start_server(cmd: &mut Command, patience: Duration) -> (Child, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("a piped stdout");
    let (tx, rx) = mpsc::channel();
    // Reads the address, then drains the rest so that the server never blocks on its output.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening ") {
                let _ = tx.send(addr.trim().to_string());
                break;
            }
        }
        lines.for_each(drop);
    });
    match rx.recv_timeout(patience) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not say where it listens within {patience:?}");
        }
    }
}

/// Stops a server with `SIGTERM` (which lets valgrind write its results) and reaps it.
pub fn stop_server(mut child: Child) {
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

/// The numbers of the line that starts with `result `.
pub fn result_fields(text: &str) -> Vec<f64> {
    let line = (text.lines())
        .find_map(|l| l.strip_prefix("result "))
        .unwrap_or_else(|| panic!("no result line in:\n{text}"));
    (line.split_whitespace())
        .map(|f| {
            f.parse()
                .unwrap_or_else(|_| panic!("bad result field {f:?}"))
        })
        .collect()
}

/// The number right after the first `key` in `text` (`iops 123` → 123 for `iops`).
pub fn number_after(text: &str, key: &str) -> f64 {
    let rest = &text[text
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"))
        + key.len()..];
    let token: String = (rest.trim_start_matches([' ', ':', '"']).chars())
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-' || *c == 'e')
        .collect();
    token
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key:?} in:\n{text}"))
}

/// Today's date, UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    output(Command::new("date").args(["-u", "+%Y-%m-%d"]))
        .trim()
        .to_string()
}

/// `items` in the order they run in round `round`: rotated by one each round, so that no
/// contender always runs first (after an idle pause) or right after the same other one.
pub fn rotated<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let n = v.len();
        v.rotate_left(round % n);
    }
    v
}
