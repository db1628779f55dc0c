//! `examples/fileserver` driven by clients nobody here wrote (`curl`, `wrk`) and by raw
//! sockets where a test needs a client that misbehaves on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod example_bin;
mod scratch;

use example_bin::{example, raw_exchange};

const BIG: u64 = 256 << 20;

/// The served tree, made once per test run: `empty`, `small.txt`, `big.bin` (256 MiB),
/// `sub/index.html`, a symlink out of the tree, and a secret next to it.
fn site() -> &'static Path {
    static SITE: OnceLock<PathBuf> = OnceLock::new();
    SITE.get_or_init(|| {
        let top = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fileserver");
        let root = top.join("root");
        let _ = std::fs::remove_dir_all(&top);
        scratch::remove_at_exit(top.clone());
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(top.join("secret"), "top secret\n").unwrap();
        std::fs::write(root.join("empty"), "").unwrap();
        std::fs::write(root.join("small.txt"), "hello from the file server\n").unwrap();
        std::fs::write(root.join("sub/index.html"), "<p>index</p>\n").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        let mut big = std::fs::File::create(root.join("big.bin")).unwrap();
        let block: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for i in 0..BIG >> 20 {
            big.write_all(&block[i as usize..]).unwrap();
            big.write_all(&block[..i as usize]).unwrap();
        }
        root
    })
}

struct Server {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_with(extra, None)
    }

    /// Starts the server on an ephemeral port, optionally under `RLIMIT_NOFILE` = `fd_limit`.
    fn start_with(extra: &[&str], fd_limit: Option<u64>) -> Server {
        Server::start_in(site(), extra, fd_limit, None)
    }

    /// Starts the server on `root`, its stderr going to `stderr` (if given).
    fn start_in(
        root: &Path,
        extra: &[&str],
        fd_limit: Option<u64>,
        stderr: Option<&Path>,
    ) -> Server {
        let mut command = Command::new(example("fileserver"));
        command
            .args(["--addr", "127.0.0.1:0", "--root"])
            .arg(root)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(match (stderr, std::env::var_os("FILESERVER_STDERR")) {
                (Some(path), _) => Stdio::from(std::fs::File::create(path).unwrap()),
                (None, Some(path)) => Stdio::from(std::fs::File::create(path).unwrap()),
                (None, None) => Stdio::null(),
            });
        if let Some(limit) = fd_limit {
            // SAFETY: setrlimit is async-signal-safe; the limit lives on the stack.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                });
            }
        }
        let mut child = command.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .expect(&line)
            .parse()
            .unwrap();
        Server {
            child,
            addr,
            stdout: out,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn signal(&self, signo: i32) {
        // SAFETY: signalling our own child, which we have not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signo) }, 0);
    }

    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// SIGTERM, then the exit status, within `limit`.
    fn stop(mut self, limit: Duration) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(args: &[&str]) -> Output {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output();
    out.expect("curl is needed: apt-get install curl")
}

/// `curl -o FILE URL` plus the status code.
fn fetch_to(url: &str, file: &Path) -> String {
    let out = curl(&["-o", file.to_str().unwrap(), "-w", "%{http_code}", url]);
    String::from_utf8(out.stdout).unwrap()
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        let mut m = 0;
        while m < n {
            match b.read(&mut y[m..n]).unwrap() {
                0 => return false,
                k => m += k,
            }
        }
        if x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fileserver-out");
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        std::fs::create_dir_all(&dir).unwrap();
        scratch::remove_at_exit(dir.clone());
    });
    dir.join(name)
}

#[test]
fn curl_gets_empty_small_and_256_mib_files_byte_for_byte_buffered_and_direct() {
    for extra in [&[][..], &["--direct"][..]] {
        let server = Server::start(extra);
        for name in ["empty", "small.txt", "big.bin"] {
            let out = scratch(&format!("{name}{}", extra.len()));
            assert_eq!(
                fetch_to(&server.url(&format!("/{name}")), &out),
                "200",
                "{name}"
            );
            assert!(
                same_file(&out, &site().join(name)),
                "{name} {extra:?} differs"
            );
            std::fs::remove_file(out).unwrap();
        }
        assert!(server.stop(Duration::from_secs(10)).success());
    }
}

#[test]
fn ranges_head_conditional_requests_and_keep_alive() {
    let server = Server::start(&[]);
    let text = |out: Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let part = text(curl(&["-r", "6-9", &server.url("/small.txt")]));
    assert_eq!(part, "from");
    let suffix = text(curl(&["-r", "-7", &server.url("/small.txt")]));
    assert_eq!(suffix, "server\n");
    let big_tail = curl(&["-r", &format!("{}-", BIG - 3), &server.url("/big.bin")]).stdout;
    let on_disk = std::fs::read(site().join("big.bin")).unwrap();
    assert_eq!(big_tail, &on_disk[on_disk.len() - 3..]);
    let status = |args: &[&str]| {
        text(curl(
            &[&["-o", "/dev/null", "-w", "%{http_code}"], args].concat(),
        ))
    };
    assert_eq!(status(&["-r", "1000-", &server.url("/small.txt")]), "416");
    assert_eq!(status(&["-r", "0-1", &server.url("/small.txt")]), "206");
    let head = text(curl(&["-I", &server.url("/small.txt")]));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 27\r\n"), "{head}");
    let modified = head
        .lines()
        .find_map(|l| l.strip_prefix("Last-Modified: "))
        .expect("Last-Modified")
        .to_string();
    let since = format!("If-Modified-Since: {modified}");
    assert_eq!(status(&["-H", &since, &server.url("/small.txt")]), "304");
    let old = "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT";
    assert_eq!(status(&["-H", old, &server.url("/small.txt")]), "200");
    assert_eq!(text(curl(&[&server.url("/sub/")])), "<p>index</p>\n");
    // Two URLs in one curl: the second reuses the first's connection.
    let reuse = text(curl(&[
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects} ",
        &server.url("/small.txt"),
        &server.url("/sub/"),
    ]));
    assert_eq!(reuse.trim(), "1 0");
    assert_eq!(status(&["-X", "POST", &server.url("/small.txt")]), "405");
    assert_eq!(status(&[&server.url("/missing")]), "404");
    assert!(server.stop(Duration::from_secs(10)).success());
}

#[test]
fn no_request_path_leaks_anything_outside_the_root() {
    let server = Server::start(&[]);
    let attempts = [
        "/../secret",
        "/sub/../../secret",
        "/%2e%2e/secret",
        "/%2E%2E/secret",
        "/sub/%2e%2e/%2e%2e/secret",
        "/%252e%252e/secret",
        "/..%2fsecret",
        "/escape",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/sub/..%2f..%2fsecret",
        "/small.txt%00.html",
        "/proc/self/root/etc/passwd",
        "/sub",
    ];
    for path in attempts {
        let out = curl(&["--path-as-is", "-w", "\n%{http_code}", &server.url(path)]);
        let text = String::from_utf8_lossy(&out.stdout);
        let code = text.rsplit('\n').next().unwrap();
        assert!(
            ["301", "400", "403", "404"].contains(&code),
            "{path}: {code}"
        );
        assert!(
            !text.contains("secret") && !text.contains("root:"),
            "{path} leaked: {text}"
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_and_junk_gets_4xx() {
    let server = Server::start(&["--max-header", "1024"]);
    let reply = raw_exchange(
        server.addr,
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /empty HTTP/1.1\r\nHost: x\r\n\r\nGET /sub/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = reply.matches("HTTP/1.1 200 OK").collect();
    assert_eq!(statuses.len(), 3, "{reply}");
    let first = reply.find("hello from the file server").unwrap();
    let third = reply.find("<p>index</p>").unwrap();
    assert!(first < third, "{reply}");
    let junk = raw_exchange(server.addr, b"NONSENSE\r\n\r\n");
    assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(4000)
    );
    let reply = raw_exchange(server.addr, huge.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    let reply = raw_exchange(server.addr, b"GET / HTTP/2.0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 505 "), "{reply}");
}

#[test]
fn a_reader_taking_1_kib_per_second_costs_the_server_no_memory_while_others_are_served() {
    let server = Server::start(&[]);
    let before = server.rss_kib();
    let mut slow = TcpStream::connect(server.addr).unwrap();
    let size: libc::c_int = 4096;
    // SAFETY: a c_int option value that outlives the call, with its size.
    unsafe {
        use std::os::fd::AsRawFd;
        let p = (&size as *const libc::c_int).cast();
        libc::setsockopt(slow.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, p, 4);
    }
    slow.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(3) {
        slow.read_exact(&mut buf).unwrap();
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &server.url("/small.txt"),
        ]);
        assert_eq!(out.stdout, b"200");
        served += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let grown = server.rss_kib().saturating_sub(before);
    assert!(served >= 10);
    assert!(
        grown < 16 << 10,
        "the server grew by {grown} KiB for one slow reader"
    );
}

#[test]
fn sigterm_during_a_large_download_lets_it_finish_then_exits_0() {
    let server = Server::start(&[]);
    let out = scratch("during-sigterm");
    let url = server.url("/big.bin");
    let download = {
        let out = out.clone();
        std::thread::spawn(move || {
            let status = curl(&[
                "--limit-rate",
                "100M",
                "-o",
                out.to_str().unwrap(),
                "-w",
                "%{http_code}",
                &url,
            ]);
            String::from_utf8(status.stdout).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let status = server.stop(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert_eq!(download.join().unwrap(), "200");
    assert!(
        same_file(&out, &site().join("big.bin")),
        "the download was cut short"
    );
    std::fs::remove_file(out).unwrap();
}

#[test]
fn wrk_with_100_connections_sees_no_errors() {
    let Ok(_) = Command::new("wrk").arg("--version").output() else {
        panic!("wrk is needed: apt-get install wrk");
    };
    let server = Server::start(&["--threads", "2"]);
    let out = Command::new("wrk")
        .args(["-t", "2", "-c", "100", "-d", "5", &server.url("/small.txt")])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .map(|(n, _)| n.trim().parse().unwrap())
        .expect(&report);
    assert!(requests > 1000, "{report}");
    assert!(server.stop(Duration::from_secs(10)).success());
}

#[test]
fn at_its_fd_limit_the_server_idles_and_serves_all_200_clients_once_fds_free_up() {
    let server = Server::start_with(&[], Some(64));
    let request = b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut clients: Vec<Option<TcpStream>> = (0..200)
        .map(|_| {
            let mut c = TcpStream::connect(server.addr).unwrap();
            c.write_all(request).unwrap();
            c.set_nonblocking(true).unwrap();
            Some(c)
        })
        .collect();
    let answered = |c: &mut TcpStream| {
        let mut buf = [0u8; 512];
        matches!(c.read(&mut buf), Ok(n) if n > 0)
    };
    // Keep-alive clients hold their connections: the server sits at its limit.
    std::thread::sleep(Duration::from_millis(300));
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_ticks() - before;
    assert!(
        used <= 10,
        "the server used {used} ticks in 1 s at its fd limit"
    );
    // Clients that got their answer leave; the rest are then accepted and served.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut served = 0;
    while served < clients.len() {
        assert!(Instant::now() < deadline, "only {served} clients served");
        for slot in clients.iter_mut() {
            if slot.as_mut().is_some_and(answered) {
                *slot = None;
                served += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stop(Duration::from_secs(10)).success());
}

#[test]
fn bad_arguments_exit_2_and_a_root_or_port_that_fails_exits_1_each_with_a_clear_message() {
    let root = site().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--root", root], "--addr is missing"),
        (&["--addr", "127.0.0.1:0"], "--root is missing"),
        (
            &["--addr", "127.0.0.1:0", "--root", "/nonexistent"],
            "cannot open the directory /nonexistent",
        ),
        (
            &[
                "--addr",
                "127.0.0.1:0",
                "--root",
                &format!("{root}/small.txt"),
            ],
            "Not a directory",
        ),
        (&["--addr", "nowhere:x", "--root", root], "--addr nowhere:x"),
        (
            &["--addr", "127.0.0.1:0", "--root", root, "--threads", "0"],
            "--threads must be",
        ),
        (
            &["--addr", "127.0.0.1:0", "--root", root, "--bogus"],
            "unknown argument --bogus",
        ),
    ];
    // Each number out of its range, negative, or past u64.
    let limits = [
        ("--idle-timeout", "0", "must be 1 to 86400 seconds"),
        ("--header-timeout", "0", "must be 1 to 86400 seconds"),
        ("--header-timeout", "86401", "must be 1 to 86400 seconds"),
        ("--idle-timeout", "-5", "must be a number"),
        ("--grace", "99999999999999999999", "must be a number"),
        ("--fd-reserve", "4294967296", "--fd-reserve is too large"),
        ("--max-header", "1", "--max-header must be"),
    ];
    let limits: Vec<(Vec<&str>, &str)> = limits
        .iter()
        .map(|&(flag, value, expected)| {
            let args = vec!["--addr", "127.0.0.1:0", "--root", root, flag, value];
            (args, expected)
        })
        .collect();
    let cases = cases.iter().copied().chain(
        limits
            .iter()
            .map(|(args, expected)| (args.as_slice(), *expected)),
    );
    let missing = [
        "--addr",
        "--root",
        "--threads",
        "--idle-timeout",
        "--header-timeout",
        "--grace",
        "--max-header",
        "--fd-reserve",
        "--log",
    ];
    for flag in missing {
        let out = Command::new(example("fileserver"))
            .args(["--addr", "127.0.0.1:0", "--root", root, flag])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!("{flag} needs a value")),
            "{stderr}"
        );
    }
    for (args, expected) in cases {
        let out = Command::new(example("fileserver"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let failed = expected.contains("cannot open") || expected.contains("Not a directory");
        let code = if failed { 1 } else { 2 };
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let taken = Server::start(&[]);
    let addr = taken.addr.to_string();
    let out = Command::new(example("fileserver"))
        .args(["--addr", &addr, "--root", root])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn sighup_reopens_the_access_log_and_sigusr1_prints_each_threads_counters() {
    let log = scratch("access.log");
    let rotated = scratch("access.log.1");
    let _ = std::fs::remove_file(&log);
    let mut server = Server::start(&["--threads", "2", "--log", log.to_str().unwrap()]);
    let ok = |server: &Server, path: &str| {
        let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", &server.url(path)]);
        assert_eq!(out.stdout, b"200");
    };
    ok(&server, "/small.txt");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    ok(&server, "/sub/");
    // A request's line is logged right after its response is sent: give it a moment.
    let logged = |path: &Path, line: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(line) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let old = logged(&rotated, "\"GET /small.txt HTTP/1.1\" 200");
    assert!(old.contains("\"GET /small.txt HTTP/1.1\" 200"), "{old}");
    let new = logged(&log, "\"GET /sub/ HTTP/1.1\" 200");
    assert!(
        new.contains("\"GET /sub/ HTTP/1.1\" 200"),
        "SIGHUP did not reopen: {new}"
    );
    server.signal(libc::SIGUSR1);
    let mut threads = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        server.stdout.read_line(&mut line).unwrap();
        let thread = line.strip_prefix("metrics thread=").expect(&line);
        threads.push(thread.split(' ').next().unwrap().to_string());
    }
    threads.sort();
    assert_eq!(threads, ["0", "1"]);
    assert!(server.stop(Duration::from_secs(10)).success());
}

/// A connection with a small receive buffer (set before connecting, as the window scale is
/// chosen then), so that what the client does not read stays in the server's queue.
fn small_window_client(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("an IPv4 address, not {addr}")
    };
    let size: libc::c_int = 4096;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a new socket, owned by the TcpStream made of it; the option value and the
    // address outlive the calls that read them, with their sizes.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let p = (&size as *const libc::c_int).cast();
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, 4);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

#[test]
fn a_client_pipelining_mibs_of_heads_and_never_reading_costs_bounded_memory() {
    let server = Server::start(&[]);
    let before = server.rss_kib();
    let client = small_window_client(server.addr);
    client.set_nonblocking(true).unwrap();
    let request = b"HEAD /small.txt HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1024);
    let (mut sent, mut stuck_since) = (0usize, None::<Instant>);
    // 16 MiB of requests, or until the server stops taking them for half a second.
    while sent < 16 << 20 {
        match (&client).write(&request) {
            Ok(n) => {
                sent += n;
                stuck_since = None;
            }
            Err(_) => {
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    let grown = server.rss_kib().saturating_sub(before);
    assert!(sent < 16 << 20, "the server read all 16 MiB of requests");
    assert!(grown < 8 << 10, "the server grew by {grown} KiB");
}

#[test]
fn a_request_head_trickling_in_is_cut_off_by_the_header_timeout() {
    let server = Server::start(&["--idle-timeout", "2", "--header-timeout", "1"]);
    let mut client = TcpStream::connect(server.addr).unwrap();
    let started = Instant::now();
    // One byte every 200 ms: never idle for 2 s, never a whole head. Writing fails once the
    // server has closed (the first write after its FIN draws a reset).
    let head =
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let cut_at = head.iter().find_map(|byte| {
        std::thread::sleep(Duration::from_millis(200));
        client.write_all(&[*byte]).err().map(|_| started.elapsed())
    });
    let cut_at = cut_at.expect("the server held a head trickling in for 10 s");
    assert!(
        cut_at < Duration::from_secs(5),
        "cut off only after {cut_at:?}"
    );
}

#[test]
fn an_if_modified_since_with_huge_numbers_gets_an_answer_and_the_server_lives_on() {
    let server = Server::start(&[]);
    let reply = raw_exchange(
        server.addr,
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Sun, 06 Nov 1994 99999999999999999:00:00 GMT\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    let reply = raw_exchange(
        server.addr,
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Sun, 06 Nov 99999999999999999 08:49:37 GMT\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
}

#[test]
fn a_slow_but_steady_download_is_progress_not_idleness() {
    const BODY: usize = 4 << 20;
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut client = small_window_client(server.addr);
    let request = format!(
        "GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-{}\r\nConnection: close\r\n\r\n",
        BODY - 1
    );
    client.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let mut read = |reply: &mut Vec<u8>| match client.read(&mut buf) {
        Ok(n) => {
            reply.extend_from_slice(&buf[..n]);
            n
        }
        Err(e) => panic!("after {} bytes: {e}", reply.len()),
    };
    // Fast for 1.5 MiB, so that the kernel's buffers (over 1 MiB on loopback) are the
    // queue's only outlet; then ~40 KiB/s for 4 s: the queue's 256 KiB stay above its low
    // mark all along, but bytes leave it all the time; then fast again to the end.
    while reply.len() < 3 << 19 {
        read(&mut reply);
    }
    let slow = Instant::now();
    while slow.elapsed() < Duration::from_secs(4) {
        read(&mut reply);
        std::thread::sleep(Duration::from_millis(50));
    }
    while read(&mut reply) > 0 {}
    let head_end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(reply.len() - head_end, BODY, "the download was cut off");
}

#[test]
fn client_caused_file_errors_are_4xx_and_not_logged_as_errors() {
    let root = scratch("odd-root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::write(root.join("dir/file"), "x").unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    let stderr = scratch("odd-root.stderr");
    for extra in [&[][..], &["--direct"][..]] {
        let server = Server::start_in(&root, extra, None, Some(&stderr));
        let long_segment = format!("/{}", "a".repeat(300));
        let long_path = format!("/{}", "abcdefgh/".repeat(560));
        let mut cases = vec![
            (long_segment.as_str(), "414"),
            (long_path.as_str(), "414"),
            ("/socket", "404"),
        ];
        // A directory: 301 to its name with the slash, which names its index.html (none).
        cases.push(("/dir", "301"));
        cases.push(("/dir/", "404"));
        for (path, status) in cases {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let reply = raw_exchange(server.addr, request.as_bytes());
            assert!(
                reply.starts_with(&format!("HTTP/1.1 {status} ")),
                "{extra:?} {}: {reply}",
                &path[..path.len().min(40)]
            );
        }
        drop(server);
        let log = std::fs::read_to_string(&stderr).unwrap();
        assert!(!log.contains("ERROR"), "{extra:?}: {log}");
    }
}

#[test]
fn a_fifo_in_the_root_is_never_opened_and_its_blocked_writer_stays_blocked() {
    let root = scratch("fifo-root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let fifo = root.join("fifo");
    let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o644) }, 0);
    // A local writer, blocked in open(2) until a reader opens the FIFO.
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let w = std::fs::OpenOptions::new().write(true).open(&fifo);
            let _ = opened_tx.send(());
            drop(w);
        })
    };
    for extra in [&[][..], &["--direct"][..]] {
        let server = Server::start_in(&root, extra, None, None);
        let reply = raw_exchange(
            server.addr,
            b"GET /fifo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(reply.starts_with("HTTP/1.1 4"), "{extra:?}: {reply}");
    }
    let released = opened_rx.recv_timeout(Duration::from_millis(300)).is_ok();
    // Release the writer for good (a reader that never blocks), whatever happened.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    opened_rx.recv_timeout(Duration::from_secs(10)).ok();
    writer.join().unwrap();
    assert!(
        !released,
        "a request opened the FIFO and released its writer"
    );
}

#[test]
fn a_client_that_pipelines_after_connection_close_still_gets_the_whole_response() {
    let server = Server::start(&[]);
    let mut client = small_window_client(server.addr);
    let mut request =
        b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-2097151\r\nConnection: close\r\n\r\n"
            .to_vec();
    request.extend(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n".repeat(500));
    client.write_all(&request).unwrap();
    std::thread::sleep(Duration::from_millis(500)); // the server is done writing by now
    let mut reply = Vec::new();
    client
        .read_to_end(&mut reply)
        .expect("the connection was reset");
    let head_end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(reply.starts_with(b"HTTP/1.1 206 "));
    assert_eq!(reply.len() - head_end, 2 << 20);
}

#[test]
fn under_rlimit_nofile_64_a_burst_of_500_clients_is_served_not_refused() {
    let server = Server::start_with(&[], Some(64));
    let clients: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut c = TcpStream::connect(server.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c.write_all(b"GET /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for mut c in clients {
        let mut reply = Vec::new();
        let outcome = match c.read_to_end(&mut reply) {
            Err(e) => format!("{:?}", e.kind()),
            Ok(_) => String::from_utf8_lossy(&reply[..reply.len().min(12)]).into_owned(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let ok = outcomes.get("HTTP/1.1 200").copied().unwrap_or(0);
    assert!(
        ok >= 490,
        "only {ok} of 500 clients were served: {outcomes:?}"
    );
}

#[test]
fn access_log_lines_dropped_on_a_full_disk_are_counted_and_said_once() {
    let stderr = scratch("full-log.stderr");
    let server = Server::start_in(site(), &["--log", "/dev/full"], None, Some(&stderr));
    for _ in 0..3 {
        let reply = raw_exchange(
            server.addr,
            b"GET /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    }
    assert!(server.stop(Duration::from_secs(10)).success());
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(
        log.matches("cannot write the access log").count(),
        1,
        "{log}"
    );
    assert!(log.contains("lines could not be written"), "{log}");
}

#[test]
fn random_and_mutated_requests_over_the_wire_get_well_formed_answers_or_a_close() {
    let server = Server::start(&["--idle-timeout", "2", "--header-timeout", "1"]);
    let seeds: &[&[u8]] = &[
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\n\r\n",
        b"GET /sub/ HTTP/1.0\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    ];
    let pieces: &[&[u8]] = &[
        b"\r",
        b"\n",
        b"\0",
        b":",
        b" ",
        b"%",
        b"/..",
        b"99999999999999999999",
        b"\xff",
        b"Range: bytes=-0\r\n",
        b"Content-Length: 7\r\n",
        b"\r\n\r\n",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as usize
    };
    let started = Instant::now();
    let mut exchanges = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let mut request = seeds[next() % seeds.len()].to_vec();
        for _ in 0..1 + next() % 3 {
            let at = next() % (request.len() + 1);
            let piece = pieces[next() % pieces.len()];
            request.splice(at..at, piece.iter().copied());
        }
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(&request);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut reply = Vec::new();
        let read = stream.read_to_end(&mut reply);
        assert!(
            !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "no answer and no close for {:?}",
            String::from_utf8_lossy(&request)
        );
        let text = String::from_utf8_lossy(&reply);
        // Every answer, pipelined or not, starts with a status line and has a length.
        for head in text.split("HTTP/1.1 ").skip(1) {
            let code = &head[..3.min(head.len())];
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{text}");
        }
        assert!(reply.is_empty() || text.starts_with("HTTP/1.1 "), "{text}");
        assert!(
            reply.is_empty() || text.contains("Content-Length: "),
            "{text}"
        );
        exchanges += 1;
    }
    assert!(exchanges > 20, "only {exchanges} exchanges");
    let reply = raw_exchange(
        server.addr,
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        reply.starts_with("HTTP/1.1 200 "),
        "the server died: {reply}"
    );
}

/// The value of header `name` in the first response head of `reply`.
fn header<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    let head = &reply[..reply.find("\r\n\r\n").unwrap_or(reply.len())];
    head.split("\r\n")
        .skip(1)
        .find_map(|l| {
            l.split_once(": ")
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .map(|(_, v)| v)
}

fn get(server: &Server, path: &str, fields: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n\r\n");
    raw_exchange(server.addr, request.as_bytes())
}

#[test]
fn a_range_under_an_if_range_that_no_longer_holds_gets_the_whole_file() {
    let server = Server::start(&[]);
    let whole = get(&server, "/small.txt", "");
    let modified = header(&whole, "Last-Modified").unwrap().to_string();
    let etag = header(&whole, "ETag").unwrap().to_string();
    let range = "Range: bytes=6-9\r\n";
    let holds = get(
        &server,
        "/small.txt",
        &format!("{range}If-Range: {modified}\r\n"),
    );
    assert!(holds.starts_with("HTTP/1.1 206 "), "{holds}");
    assert!(holds.ends_with("\r\n\r\nfrom"), "{holds}");
    // A changed file (another date, or a tag that cannot match strongly): the whole 200.
    for if_range in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "\"some-other-version\"",
        etag.as_str(),
    ] {
        let reply = get(
            &server,
            "/small.txt",
            &format!("{range}If-Range: {if_range}\r\n"),
        );
        assert!(reply.starts_with("HTTP/1.1 200 "), "{if_range}: {reply}");
        assert!(
            reply.ends_with("\r\n\r\nhello from the file server\n"),
            "{reply}"
        );
        assert_eq!(header(&reply, "Content-Range"), None, "{reply}");
    }
}

#[test]
fn a_directory_named_without_its_slash_is_301_to_the_name_with_it() {
    let server = Server::start(&[]);
    for (target, location) in [
        ("/sub", "/sub/"),
        ("/sub?a=1", "/sub/?a=1"),
        ("//sub", "/sub/"),
        ("http://x/sub", "/sub/"),
    ] {
        let reply = get(&server, target, "");
        assert!(reply.starts_with("HTTP/1.1 301 "), "{target}: {reply}");
        assert_eq!(header(&reply, "Location"), Some(location), "{target}");
    }
    let index = get(&server, "/sub/", "");
    assert!(index.ends_with("<p>index</p>\n"), "{index}");
}

#[test]
fn a_weak_etag_answers_if_none_match_which_beats_if_modified_since_and_304_has_no_length() {
    let server = Server::start(&[]);
    let whole = get(&server, "/small.txt", "");
    let etag = header(&whole, "ETag").expect("an ETag").to_string();
    assert!(etag.starts_with("W/\"1b-"), "{etag}");
    let modified = header(&whole, "Last-Modified").unwrap().to_string();
    let part = get(&server, "/small.txt", "Range: bytes=0-1\r\n");
    assert_eq!(header(&part, "ETag"), Some(etag.as_str()), "{part}");
    let strong = etag.trim_start_matches("W/");
    for tags in [etag.as_str(), strong, "*", &format!("\"x\", {etag}")] {
        let reply = get(&server, "/small.txt", &format!("If-None-Match: {tags}\r\n"));
        assert!(reply.starts_with("HTTP/1.1 304 "), "{tags}: {reply}");
        assert_eq!(header(&reply, "Content-Length"), None, "{reply}");
        assert_eq!(header(&reply, "ETag"), Some(etag.as_str()), "{reply}");
        assert!(reply.ends_with("\r\n\r\n"), "a 304 has no body: {reply}");
    }
    let since = get(
        &server,
        "/small.txt",
        &format!("If-Modified-Since: {modified}\r\n"),
    );
    assert!(since.starts_with("HTTP/1.1 304 "), "{since}");
    assert_eq!(header(&since, "Content-Length"), None, "{since}");
    // If-None-Match decides alone: another tag is 200 whatever the date says.
    let other = format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {modified}\r\n");
    let reply = get(&server, "/small.txt", &other);
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
}

#[test]
fn http_1_1_without_host_is_400_and_an_absolute_form_target_is_served() {
    let server = Server::start(&[]);
    let reply = raw_exchange(server.addr, b"GET /small.txt HTTP/1.1\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    let reply = raw_exchange(
        server.addr,
        b"GET http://localhost/small.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.ends_with("hello from the file server\n"), "{reply}");
}

#[test]
fn errors_offer_no_ranges_and_http_1_0_keep_alive_is_echoed_and_kept() {
    let server = Server::start(&[]);
    for path in ["/missing", "/a%zz"] {
        let reply = get(&server, path, "");
        assert!(reply.starts_with("HTTP/1.1 4"), "{reply}");
        assert_eq!(header(&reply, "Accept-Ranges"), None, "{reply}");
    }
    let reply = raw_exchange(
        server.addr,
        b"GET /small.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /sub/ HTTP/1.0\r\n\r\n",
    );
    assert_eq!(header(&reply, "Connection"), Some("keep-alive"), "{reply}");
    assert!(reply.contains("hello from the file server\n"), "{reply}");
    assert!(
        reply.ends_with("<p>index</p>\n"),
        "the second request: {reply}"
    );
}

#[test]
fn a_get_with_a_body_is_answered_and_the_body_dropped_unbuffered_on_a_kept_connection() {
    let server = Server::start(&[]);
    let reply = raw_exchange(
        server.addr,
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /sub/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 2, "{reply}");
    assert!(reply.ends_with("<p>index</p>\n"), "{reply}");
    // 64 MiB of body, which looks like request heads: read and dropped, never held.
    let before = server.rss_kib();
    let body_len: usize = 64 << 20;
    let mut client = TcpStream::connect(server.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!("GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: {body_len}\r\n\r\n");
    client.write_all(head.as_bytes()).unwrap();
    let junk = b"GET /missing HTTP/1.1\r\n\r\n".repeat((1 << 20) / 25 + 1);
    let mut left = body_len;
    while left > 0 {
        let n = left.min(1 << 20);
        client.write_all(&junk[..n]).unwrap();
        left -= n;
    }
    client
        .write_all(b"GET /sub/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 2, "{reply}");
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.ends_with("<p>index</p>\n"), "{reply}");
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 16 << 10, "the server grew by {grown} KiB");
}

#[test]
fn access_log_lines_carry_a_time_and_a_download_cut_off_at_the_grace_period_is_logged() {
    let log = scratch("cut-off.log");
    let _ = std::fs::remove_file(&log);
    let server = Server::start(&["--grace", "1", "--log", log.to_str().unwrap()]);
    let ok = get(&server, "/small.txt", "");
    assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
    // A download the client never reads: it cannot finish within the grace period.
    let mut client = small_window_client(server.addr);
    client
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 16];
    client.read_exact(&mut first).unwrap();
    assert!(server.stop(Duration::from_secs(20)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line = |what: &str| text.lines().find(|l| l.contains(what)).map(str::to_string);
    let small = line("\"GET /small.txt HTTP/1.1\" 200").expect(&text);
    // `127.0.0.1:PORT - - [06/Dec/2026:15:55:06 +0000] "GET ..."`
    let time = small.split('[').nth(1).and_then(|t| t.split(']').next());
    let time = time.expect(&small);
    assert_eq!(time.len(), 26, "{small}");
    assert!(
        time.ends_with(" +0000") && time.as_bytes()[2] == b'/',
        "{small}"
    );
    let cut = line("\"GET /big.bin HTTP/1.1\" 200").expect(&text);
    assert!(cut.contains("cut off"), "{cut}");
    drop(client);
}
