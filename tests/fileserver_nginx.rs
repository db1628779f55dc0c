//! `examples/fileserver` beside nginx, serving the same tree: for a fixed list of requests the
//! status line and the header fields that matter agree, and where they do not, the difference
//! is intended and listed below. nginx runs as root, in the foreground (`daemon off`), on a free
//! port of 127.0.0.1, with a configuration written to a scratch directory; `.ci/run` installs
//! it, and where it is missing the test is skipped by the rule of `tests/skip`.
//!
//! What is compared, per request: the status code; `Content-Length` (not on error and redirect
//! answers, whose short bodies differ), `Content-Range`, `Location`, `Last-Modified` and
//! `Connection` by value; the media type of `Content-Type` (before any `;`, and not on error
//! and redirect answers); whether `ETag` and `Accept-Ranges` are there.
//!
//! Intended differences, each the RFC's reading or a harmless choice:
//!
//! | what | nginx | aioloop's file server | why |
//! |---|---|---|---|
//! | `ETag` | strong, `"mtime-size"` | weak, `W/"size-mtime"` (hex) | only presence is compared; a weak tag, since a rewrite within one second with one size keeps it |
//! | `If-Range` with the server's own `ETag` | 206 | 200, the whole file | RFC 9110 §13.1.5: If-Range compares strongly, which a weak tag never matches (a date still works) |
//! | `Content-Type` of text | `text/plain`, `text/html` | with `; charset=utf-8` | only the media type is compared |
//! | `.js` | `application/javascript` | `text/javascript` | RFC 9239 made `text/javascript` the one to send |
//! | `.wav` | `application/octet-stream` (not in its mime.types) | `audio/wav` | a common type the brief asks for |
//! | error and redirect bodies | HTML pages | one text line | their `Content-Length` and `Content-Type` are not compared |
//! | `Accept-Ranges` on 206 | absent | `bytes` | RFC 9110 §14.3 allows it on any response; 200 and 206 offer ranges |
//! | 405 | no `Allow` | `Allow: GET, HEAD` | RFC 9110 §15.5.6 requires `Allow` on a 405 (not in the compared set) |
//! | `Connection` on an HTTP/1.1 keep-alive answer | `keep-alive` | absent | the default of HTTP/1.1; every request here but the HTTP/1.0 ones says `close`, which both echo |
//! | `Server`, `Date` | | | not compared |
//! | a directory without `index.html`, with its slash | 403 | 404 | there are no listings: the request names a file that is not there (not in the list) |
//! | `Location` of a 301 | absolute (`absolute_redirect on`) by default | the path | nginx is run with `absolute_redirect off`; RFC 9110 §10.2.2 allows a relative reference |

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod example_bin;
mod scratch;

use example_bin::example;
mod skip;

use scratch::ScratchDir;

/// The types compared (see the table for `.js` and `.wav`).
const TYPED: &[&str] = &[
    "mp4", "webm", "mp3", "ogg", "ico", "xml", "woff", "woff2", "wasm", "avif", "webp", "json",
    "pdf", "css", "svg", "png", "html",
];

/// The served tree, the same for both servers.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("small.txt"), "hello from the file server\n").unwrap();
    std::fs::write(root.join("sub/index.html"), "<p>index</p>\n").unwrap();
    std::fs::write(root.join("empty"), "").unwrap();
    for ext in TYPED {
        std::fs::write(root.join(format!("a.{ext}")), "0123456789").unwrap();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    dirs.map(|d| d.join("nginx")).find(|p| p.is_file())
}

/// A child killed and reaped when dropped, whatever the test's outcome.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// nginx on `root`, listening on a free port, once it accepts connections.
fn start_nginx(nginx: &Path, dir: &Path, root: &Path) -> (Reaped, SocketAddr) {
    let port = free_port();
    let d = dir.display();
    // The user directive matters to a master process run as root only; as anyone else the
    // tree (under target/) is readable anyway.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = match unsafe { libc::geteuid() } {
        0 => "user root;",
        _ => "",
    };
    let config = format!(
        "daemon off;\nmaster_process off;\n{user}\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n\
         include /etc/nginx/mime.types;\ndefault_type application/octet-stream;\n\
         access_log off;\nabsolute_redirect off;\nserver_tokens off;\n\
         client_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
        root.display()
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).unwrap();
    let mut command = Command::new(nginx);
    command.arg("-p").arg(dir).arg("-c").arg(&conf);
    // Where nginx knows -e (1.19.5 on), its early log goes here too, not to /var/log.
    let help = Command::new(nginx).arg("-h").output().unwrap();
    if String::from_utf8_lossy(&help.stderr).contains("-e filename") {
        command.arg("-e").arg(dir.join("error.log"));
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        assert!(child.0.try_wait().unwrap().is_none(), "nginx exited: {log}");
        assert!(Instant::now() < deadline, "nginx did not listen: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

fn start_fileserver(root: &Path) -> (Reaped, SocketAddr) {
    let child = Command::new(example("fileserver"))
        .args(["--addr", "127.0.0.1:0", "--root"])
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("listening ").expect(&line);
    (child, addr.parse().unwrap())
}

/// A response head: the status and the fields, by lower-case name.
#[derive(Debug)]
struct Reply {
    status: u16,
    fields: BTreeMap<String, String>,
}

impl Reply {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Sends `request` and reads the head of the answer.
fn ask(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let status = status.split(' ').nth(1).and_then(|s| s.parse().ok());
    let fields = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status: status.unwrap_or_else(|| panic!("no status line in {text:?}")),
        fields,
    }
}

/// The differences between the two answers to one request, outside the intended ones.
fn differences(ours: &Reply, nginx: &Reply) -> Vec<String> {
    let mut found = Vec::new();
    if ours.status != nginx.status {
        found.push(format!("status {} against {}", ours.status, nginx.status));
    }
    let error_or_redirect = ours.status >= 300 && ours.status != 304;
    let media = |r: &Reply| {
        r.get("content-type")
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_string())
    };
    let mut same = |name: &str, a: Option<String>, b: Option<String>| {
        if a != b {
            found.push(format!("{name}: {a:?} against {b:?}"));
        }
    };
    let value = |r: &Reply, name: &str| r.get(name).map(str::to_string);
    for name in ["content-range", "location", "last-modified", "connection"] {
        same(name, value(ours, name), value(nginx, name));
    }
    if !error_or_redirect {
        same(
            "content-length",
            value(ours, "content-length"),
            value(nginx, "content-length"),
        );
        same("content-type", media(ours), media(nginx));
    }
    let present = |r: &Reply, name: &str| Some(r.get(name).is_some().to_string());
    same("etag", present(ours, "etag"), present(nginx, "etag"));
    if ours.status != 206 {
        same(
            "accept-ranges",
            present(ours, "accept-ranges"),
            present(nginx, "accept-ranges"),
        );
    }
    found
}

#[test]
fn the_file_server_answers_a_fixed_list_of_requests_with_the_heads_nginx_gives() {
    let Some(nginx) = nginx_binary() else {
        return skip::skip("nginx is not installed (apt-get install nginx)");
    };
    let scratch = ScratchDir::new("fileserver-nginx");
    let root = scratch.join("tree");
    make_tree(&root);
    let conf_dir = scratch.join("nginx");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let (_nginx, nginx_addr) = start_nginx(&nginx, &conf_dir, &root);
    let (_ours, our_addr) = start_fileserver(&root);
    let first = ask(
        our_addr,
        b"HEAD /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let modified = first
        .get("last-modified")
        .expect("Last-Modified")
        .to_string();
    let old = "Sun, 06 Nov 1994 08:49:37 GMT";
    let close = "Connection: close\r\n";
    let get = |target: &str, fields: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{fields}{close}\r\n")
    };
    let mut requests = vec![
        get("/small.txt", ""),
        format!("HEAD /small.txt HTTP/1.1\r\nHost: localhost\r\n{close}\r\n"),
        get("/empty", ""),
        get("/sub/", ""),
        get("/sub", ""),
        get("/sub?x=1", ""),
        get("/missing", ""),
        get("/small.txt", "Range: bytes=6-9\r\n"),
        get("/small.txt", "Range: bytes=-7\r\n"),
        get("/small.txt", "Range: bytes=20-100\r\n"),
        get("/small.txt", "Range: bytes=1000-\r\n"),
        get("/small.txt", &format!("If-Modified-Since: {modified}\r\n")),
        get("/small.txt", &format!("If-Modified-Since: {old}\r\n")),
        get("/small.txt", "If-None-Match: *\r\n"),
        get("/small.txt", "If-None-Match: \"other\"\r\n"),
        get(
            "/small.txt",
            &format!("Range: bytes=6-9\r\nIf-Range: {modified}\r\n"),
        ),
        get(
            "/small.txt",
            &format!("Range: bytes=6-9\r\nIf-Range: {old}\r\n"),
        ),
        get("/small.txt", "Range: bytes=6-9\r\nIf-Range: \"other\"\r\n"),
        get("http://localhost/small.txt", ""),
        get("/small.txt", "Content-Length: 5\r\n") + "hello",
        format!("POST /small.txt HTTP/1.1\r\nHost: localhost\r\n{close}\r\n"),
        "GET /small.txt HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
        "GET /small.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_string(),
        "GET /small.txt HTTP/1.0\r\n\r\n".to_string(),
    ];
    requests.extend(TYPED.iter().map(|ext| get(&format!("/a.{ext}"), "")));
    let mut report = Vec::new();
    for request in &requests {
        let ours = ask(our_addr, request.as_bytes());
        let theirs = ask(nginx_addr, request.as_bytes());
        let found = differences(&ours, &theirs);
        if !found.is_empty() {
            let line = request.split("\r\n").next().unwrap();
            report.push(format!("{request:?} ({line}): {}", found.join("; ")));
        }
    }
    assert!(report.is_empty(), "unlike nginx:\n{}", report.join("\n"));
}
