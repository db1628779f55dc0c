//! A static HTTP/1.1 file server on aioloop: the daemon toolkit at work.
//!
//! ```text
//! cargo run --release --example fileserver -- --addr 127.0.0.1:8080 --root DIR [--threads N]
//!     [--direct] [--idle-timeout SECS] [--grace SECS] [--max-header BYTES] [--log FILE]
//! ```
//!
//! It prints `listening ADDR` on stdout once it accepts (port 0 picks a free port, and the
//! line shows the real one), then serves `GET` and `HEAD` of the files under DIR: keep-alive
//! and pipelining, `Content-Length`, one `Range` per request (206, 416), `Last-Modified` and
//! `If-Modified-Since` (304), and 400, 403, 404, 405, 431 with short bodies. A path never
//! leaves DIR: `..` is refused, and files are opened with `openat2(RESOLVE_BENEATH)`
//! ([`EventBase::open_beneath`]), so neither symbolic links nor encodings lead out.
//!
//! Every file operation goes through the library's non-blocking file API: opens and stats
//! answered from the kernel's caches on the loop thread or else run on the helper threads,
//! reads served from the page cache or by kernel AIO or the helpers (`--direct` uses
//! `O_DIRECT`). Bodies stream through a writer ([`EventBase::add_writer`]) with back-pressure:
//! a slow reader holds at most about 320 KiB of its file in the server's memory (the writer's
//! 256 KiB high-water mark and one 64 KiB chunk). Files are served up to the size `fstat`
//! gives them, so pseudo-files that claim size 0 (`/proc`) come out empty. Connections idle for
//! `--idle-timeout` seconds (default 30) are closed, and so are downloads that make no
//! progress for that long. A request head larger than `--max-header` (8192) gets 431.
//!
//! Signals: SIGTERM or SIGINT stops accepting, closes idle connections and lets responses in
//! flight finish, for at most `--grace` seconds (default 10), then exits 0; SIGHUP reopens the
//! `--log` file (for log rotation); SIGUSR1 prints each thread's counters on stdout. One line
//! per request goes to the access log (`--log FILE`, or stderr) through the `log` facade.
//!
//! `--threads N` runs N independent loops, each with its own listening socket on the same
//! address (`SO_REUSEPORT`), among which the kernel spreads connections: the way to use more
//! than one core, since one loop runs on one thread. Under systemd, a socket passed by socket
//! activation is used instead of binding, readiness is notified, and the watchdog is fed.

mod http;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aioloop::mio::net::{TcpListener, TcpStream};
use aioloop::signals::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use aioloop::{
    systemd, tcp_listener, AioFile, AlignedBuf, Dir, Direction, EventBase, Handlers, IoEvent,
    IoOptions, ListenOptions, Readiness, WriteStatus, WriterEvent, WriterId, WriterOptions,
};
use http::{Head, Refusal, Request, Span};
use slab::Slab;

const USAGE: &str = "usage: fileserver --addr HOST:PORT --root DIR [--threads N] [--direct] \
                     [--idle-timeout SECS] [--grace SECS] [--max-header BYTES] [--log FILE]";
/// Bytes read from a file per request.
const CHUNK: usize = 64 << 10;
/// A connection's writer holds at most this much before the file reading pauses.
const HIGH_WATER: usize = 256 << 10;

struct Config {
    root: Dir,
    direct: bool,
    idle: Duration,
    grace: Duration,
    max_header: usize,
}

/// One loop's server.
struct Server {
    config: Arc<Config>,
    thread: usize,
    conns: Slab<Conn>,
    next_gen: u32,
    acceptor: Option<aioloop::Acceptor>,
    shutting_down: bool,
    /// Aligned read buffers of finished reads, for the next ones.
    spare: Vec<AlignedBuf>,
    date: (u64, String),
}

/// A connection's identity: its slab key and a generation, so that a callback for a closed
/// connection (a file read completing late, say) never reaches a new one in the same slot. Its
/// fd number would not do: the kernel hands it to the next client at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConnId {
    key: usize,
    gen: u32,
}

struct Conn {
    gen: u32,
    stream: TcpStream,
    peer: SocketAddr,
    writer: WriterId,
    input: Vec<u8>,
    /// The peer closed its side: no more requests.
    input_closed: bool,
    /// The input buffer is full: reading waits until a request is served.
    input_paused: bool,
    response: Option<Response>,
    /// Bytes queued for the current response, to tell a slow download from a dead one.
    progress: u64,
    progress_at_last_timeout: u64,
}

/// The response being produced.
struct Response {
    request: Request,
    started: Instant,
    status: u16,
    sent: u64,
    /// The head, held back to go out with the first piece of the body in one `writev`.
    head: Option<String>,
    body: Option<Body>,
    /// Waiting for `WriterEvent::Drained` before reading more of the file.
    paused: bool,
}

struct Body {
    file: AioFile,
    next: u64,
    end: u64,
}

type Base = EventBase<Server>;

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => fail(e),
    };
    if let Err(e) = serve(args) {
        fail(e);
    }
}

fn fail(e: io::Error) -> ! {
    eprintln!("fileserver: {e}");
    std::process::exit(1)
}

struct Args {
    addr: SocketAddr,
    root: PathBuf,
    threads: usize,
    direct: bool,
    idle: Duration,
    grace: Duration,
    max_header: usize,
    log: Option<PathBuf>,
}

fn parse_args() -> io::Result<Args> {
    let invalid =
        |msg: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{msg}\n{USAGE}"));
    let (mut addr, mut root, mut log) = (None, None, None);
    let (mut threads, mut direct, mut idle, mut grace, mut max_header) = (1, false, 30, 10, 8192);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| invalid(format!("{name} needs a value")))
        };
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| invalid(format!("{name} must be a number, not {v:?}")))
        };
        match arg.as_str() {
            "--addr" => {
                let v = value("--addr")?;
                let resolved = std::net::ToSocketAddrs::to_socket_addrs(&v)
                    .map_err(|e| invalid(format!("--addr {v}: {e}")))?
                    .next();
                addr = Some(resolved.ok_or_else(|| invalid(format!("--addr {v}: no address")))?);
            }
            "--root" => root = Some(PathBuf::from(value("--root")?)),
            "--log" => log = Some(PathBuf::from(value("--log")?)),
            "--threads" => threads = number("--threads", value("--threads")?)?,
            "--idle-timeout" => idle = number("--idle-timeout", value("--idle-timeout")?)?,
            "--grace" => grace = number("--grace", value("--grace")?)?,
            "--max-header" => max_header = number("--max-header", value("--max-header")?)?,
            "--direct" => direct = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(invalid(format!("unknown argument {other}"))),
        }
    }
    if !(1..=256).contains(&threads) {
        return Err(invalid(format!(
            "--threads must be 1 to 256, not {threads}"
        )));
    }
    if max_header < 64 {
        return Err(invalid("--max-header must be at least 64".into()));
    }
    Ok(Args {
        addr: addr.ok_or_else(|| invalid("--addr is missing".into()))?,
        root: root.ok_or_else(|| invalid("--root is missing".into()))?,
        threads: threads as usize,
        direct,
        idle: Duration::from_secs(idle),
        grace: Duration::from_secs(grace),
        max_header: max_header as usize,
        log,
    })
}

fn serve(args: Args) -> io::Result<()> {
    // Before any thread exists, so that every thread inherits the mask.
    aioloop::block_signals(&[SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    AccessLog::install(args.log.clone())?;
    let root = Dir::open(&args.root)?;
    let config = Arc::new(Config {
        root,
        direct: args.direct,
        idle: args.idle,
        grace: args.grace,
        max_header: args.max_header,
    });
    let listeners = listeners(&args)?;
    let addr = listeners[0].local_addr()?;
    let threads: Vec<_> = (listeners.into_iter().enumerate())
        .map(|(thread, listener)| {
            let config = config.clone();
            std::thread::Builder::new()
                .name(format!("loop-{thread}"))
                .spawn(move || run_loop(thread, listener, config))
        })
        .collect::<io::Result<_>>()?;
    println!("listening {addr}");
    io::stdout().flush()?;
    systemd::notify_ready()?;
    let mut result = Ok(());
    for thread in threads {
        let outcome = thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a loop panicked")));
        result = result.and(outcome);
    }
    systemd::notify_stopping()?;
    result
}

/// One listener per thread: systemd's socket if it passed one (for one thread), else bound
/// here, with `SO_REUSEPORT` when there are several.
fn listeners(args: &Args) -> io::Result<Vec<TcpListener>> {
    let mut activated = systemd::listen_fds()?;
    if let Some(socket) = activated.pop() {
        let listener = std::net::TcpListener::from(socket.fd);
        listener.set_nonblocking(true)?;
        return Ok(vec![TcpListener::from_std(listener)]);
    }
    let options = ListenOptions::new().reuse_port(args.threads > 1);
    let first = tcp_listener(args.addr, &options)?;
    let addr = first.local_addr()?; // the real port, if 0 was asked for
    let mut all = vec![first];
    for _ in 1..args.threads {
        all.push(tcp_listener(addr, &options)?);
    }
    Ok(all)
}

fn run_loop(thread: usize, listener: TcpListener, config: Arc<Config>) -> io::Result<()> {
    let mut base = Base::new()?;
    let acceptor = base.accept_connections(listener, accept)?;
    for (signo, handler) in [
        (SIGTERM, shut_down as fn(&mut Base, &mut Server)),
        (SIGINT, shut_down),
        (SIGHUP, |_: &mut Base, _: &mut Server| AccessLog::reopen()),
        (SIGUSR1, print_metrics),
    ] {
        let id = base.add_signal_handler(signo, move |base, server, _| handler(base, server))?;
        base.set_signal_ref(id, false);
    }
    if thread == 0 {
        base.start_watchdog()?;
    }
    let mut server = Server {
        config,
        thread,
        conns: Slab::new(),
        next_gen: 0,
        acceptor: Some(acceptor),
        shutting_down: false,
        spare: Vec::new(),
        date: (0, String::new()),
    };
    base.set_exit_when_empty(true);
    base.run(&mut server)
}

fn accept(base: &mut Base, server: &mut Server, stream: TcpStream, peer: SocketAddr) {
    if server.shutting_down {
        return;
    }
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let key = server.conns.vacant_key();
    let gen = server.next_gen;
    server.next_gen = gen.wrapping_add(1);
    let id = ConnId { key, gen };
    let options = WriterOptions::new().high_water(HIGH_WATER);
    let writer = match base.add_writer(&fd, options, move |base, server, event| {
        on_writer(base, server, id, event)
    }) {
        Ok(writer) => writer,
        Err(e) => return log::error!("{peer}: cannot make a writer: {e}"),
    };
    let options = IoOptions::new().timeout(server.config.idle);
    if let Err(e) =
        base.set_io_handler(&fd, Direction::Read, options, move |base, server, event| {
            on_readable(base, server, id, event)
        })
    {
        base.remove_writer(writer);
        return log::error!("{peer}: cannot watch the connection: {e}");
    }
    server.conns.insert(Conn {
        gen,
        stream,
        peer,
        writer,
        input: Vec::new(),
        input_closed: false,
        input_paused: false,
        response: None,
        progress: 0,
        progress_at_last_timeout: 0,
    });
}

fn conn(server: &mut Server, id: ConnId) -> Option<&mut Conn> {
    server.conns.get_mut(id.key).filter(|c| c.gen == id.gen)
}

/// Removes the connection's handler and writer, then closes it.
fn close(base: &mut Base, server: &mut Server, id: ConnId, why: &str) {
    let Some(c) = conn(server, id) else {
        return;
    };
    log::debug!("{}: closing ({why})", c.peer);
    base.remove_fd_handlers(&c.stream, Handlers::ALL);
    base.remove_writer(c.writer);
    server.conns.remove(id.key);
    if server.shutting_down && server.conns.is_empty() {
        base.exit();
    }
}

fn on_readable(base: &mut Base, server: &mut Server, id: ConnId, event: IoEvent) {
    if event.ready.contains(Readiness::TIMEOUT) {
        return on_idle(base, server, id);
    }
    if read_input(server, id).is_err() {
        return close(base, server, id, "read failed");
    }
    next_request(base, server, id);
}

/// Reads what the socket holds, up to twice the header limit of buffered input.
fn read_input(server: &mut Server, id: ConnId) -> io::Result<()> {
    let limit = 2 * server.config.max_header;
    let Some(c) = conn(server, id) else {
        return Ok(());
    };
    let mut chunk = [0u8; 4096];
    loop {
        if c.input.len() >= limit {
            c.input_paused = true;
            return Ok(());
        }
        match io::Read::read(&mut c.stream, &mut chunk) {
            Ok(0) => {
                c.input_closed = true;
                return Ok(());
            }
            Ok(n) => {
                c.input.extend_from_slice(&chunk[..n]);
                // A short read drained the socket: data arriving later makes a new edge, so
                // the read that would only say WouldBlock can be skipped.
                if n < chunk.len() {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// An idle connection goes; so does a download that made no progress since the last timeout.
fn on_idle(base: &mut Base, server: &mut Server, id: ConnId) {
    let Some(c) = conn(server, id) else {
        return;
    };
    if c.response.is_some() && c.progress != c.progress_at_last_timeout {
        c.progress_at_last_timeout = c.progress;
        return;
    }
    log::debug!("{}: idle, closed", c.peer);
    close(base, server, id, "idle");
}

/// Starts the next pipelined request, if the connection is free and one has fully arrived.
fn next_request(base: &mut Base, server: &mut Server, id: ConnId) {
    let max_header = server.config.max_header;
    let Some(c) = conn(server, id) else {
        return;
    };
    if c.response.is_some() {
        return;
    }
    if c.input_paused {
        c.input_paused = false;
        if read_input(server, id).is_err() {
            return close(base, server, id, "read failed");
        }
    }
    let Some(c) = conn(server, id) else {
        return;
    };
    match http::parse_request(&c.input, max_header) {
        Ok(Some((request, used))) => {
            c.input.drain(..used);
            start_response(base, server, id, request);
        }
        Ok(None) if c.input_closed => {
            let _ = base.finish_writer(c.writer);
        }
        Ok(None) => {}
        Err(refusal) => {
            let request = Request {
                method: "-".into(),
                target: "-".into(),
                version: "HTTP/1.1",
                keep_alive: false,
                range: None,
                if_modified_since: None,
            };
            c.input.clear();
            c.input_closed = true; // nothing after a broken request can be trusted
            begin(server, id, request);
            refuse(base, server, id, refusal);
        }
    }
}

/// Makes `request` the connection's current response.
fn begin(server: &mut Server, id: ConnId, request: Request) {
    let shutting_down = server.shutting_down;
    if let Some(c) = conn(server, id) {
        let mut request = request;
        request.keep_alive &= !shutting_down && !c.input_closed;
        c.response = Some(Response {
            request,
            started: Instant::now(),
            status: 0,
            sent: 0,
            head: None,
            body: None,
            paused: false,
        });
    }
}

fn start_response(base: &mut Base, server: &mut Server, id: ConnId, request: Request) {
    let method = request.method.clone();
    let path = http::request_path(&request.target);
    begin(server, id, request);
    if method != "GET" && method != "HEAD" {
        return refuse(base, server, id, Refusal::MethodNotAllowed);
    }
    let path = match path {
        Ok(path) => path,
        Err(refusal) => return refuse(base, server, id, refusal),
    };
    let (root, direct) = (server.config.root.clone(), server.config.direct);
    let opened = base.open_beneath(&root, path.clone(), direct, move |base, server, file| {
        opened(base, server, id, path, file)
    });
    if let Err(e) = opened {
        log::error!("cannot open a file: {e}");
        respond_error(base, server, id, 503);
    }
}

fn opened(
    base: &mut Base,
    server: &mut Server,
    id: ConnId,
    path: PathBuf,
    file: io::Result<AioFile>,
) {
    if conn(server, id).is_none() {
        return; // the client left meanwhile; dropping the file closes it
    }
    let file = match file {
        Ok(file) => file,
        Err(e) => {
            let refusal = match (e.kind(), aioloop::os_error(&e)) {
                (io::ErrorKind::NotFound, _) | (_, Some(libc::ENOTDIR)) => Refusal::NotFound,
                (_, Some(libc::EXDEV | libc::EACCES | libc::ELOOP | libc::EPERM)) => {
                    Refusal::Forbidden
                }
                // Out of fds or memory for now: the client may retry.
                (_, Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)) => {
                    return respond_error(base, server, id, 503);
                }
                _ => {
                    log::error!("{e}");
                    return respond_error(base, server, id, 500);
                }
            };
            return refuse(base, server, id, refusal);
        }
    };
    let stat = base.file_metadata(&file.clone(), move |base, server, meta| match meta {
        Ok(meta) => respond_with_file(base, server, id, &path, file, &meta),
        Err(e) => {
            log::error!("{}: {e}", path.display());
            respond_error(base, server, id, 500);
        }
    });
    if stat.is_err() {
        respond_error(base, server, id, 503);
    }
}

fn respond_with_file(
    base: &mut Base,
    server: &mut Server,
    id: ConnId,
    path: &Path,
    file: AioFile,
    meta: &std::fs::Metadata,
) {
    if !meta.is_file() {
        return refuse(
            base,
            server,
            id,
            if meta.is_dir() {
                Refusal::Forbidden
            } else {
                Refusal::NotFound
            },
        );
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let size = meta.len();
    let date = now_date(server);
    let Some(c) = conn(server, id) else {
        return;
    };
    let response = c.response.as_mut().expect("a response is under way");
    let request = &response.request;
    let last_modified = modified.map(http::http_date);
    let not_modified = match (&request.if_modified_since, modified) {
        (Some(since), Some(modified)) => {
            http::parse_http_date(since).is_some_and(|s| modified <= s)
        }
        _ => false,
    };
    let (status, span) = match http::parse_range(request.range.as_deref(), size) {
        _ if not_modified => (304, None),
        Span::Whole => (200, Some((0, size))),
        Span::Part(start, end) => (206, Some((start, end))),
        Span::Unsatisfiable => (416, None),
    };
    let (start, end) = span.unwrap_or((0, 0));
    let head = Head {
        status,
        date: &date,
        length: if status == 416 { 0 } else { end - start },
        content_type: http::content_type(path),
        last_modified: last_modified.as_deref(),
        content_range: match status {
            206 => Some(format!("bytes {start}-{}/{size}", end - 1)),
            416 => Some(format!("bytes */{size}")),
            _ => None,
        },
        close: !request.keep_alive,
        allow: false,
    };
    let head_only = request.method == "HEAD" || span.is_none() || start == end;
    response.status = status;
    if !head_only {
        response.head = Some(head.render());
        response.body = Some(Body {
            file,
            next: start,
            end,
        });
        return read_body(base, server, id);
    }
    let writer = c.writer;
    if send(base, server, id, writer, &[head.render().as_bytes()]).is_some() {
        finish_response(base, server, id);
    }
}

/// Writes `parts` to the connection; `None` if that failed (the connection is then closed).
fn send(
    base: &mut Base,
    server: &mut Server,
    id: ConnId,
    writer: WriterId,
    parts: &[&[u8]],
) -> Option<WriteStatus> {
    match base.write_vectored(writer, parts) {
        Ok(status) => {
            let len = parts.iter().map(|p| p.len() as u64).sum::<u64>();
            let c = conn(server, id)?;
            c.progress += len;
            if let Some(r) = c.response.as_mut() {
                r.sent += len;
            }
            Some(status)
        }
        Err(e) => {
            log::debug!("write failed: {e}");
            close(base, server, id, "write failed");
            None
        }
    }
}

/// Reads the next chunk of the body, unless the writer asked for a pause.
fn read_body(base: &mut Base, server: &mut Server, id: ConnId) {
    let mut buf = match server.spare.pop() {
        Some(buf) => buf,
        None => AlignedBuf::new(CHUNK, 4096).expect("64 KiB of memory"),
    };
    let Some(Body { file, next, end }) =
        conn(server, id).and_then(|c| c.response.as_ref()?.body.as_ref())
    else {
        return server.spare.push(buf);
    };
    // O_DIRECT reads must start and end at aligned offsets: read from the aligned start and
    // skip the head. Buffered ones read exactly what is left (up to a chunk), so that a read
    // of the file's end comes back full, with no second try to tell the end.
    let (file, want) = (file.clone(), end - next);
    let aligned = if file.is_direct() {
        next & !4095
    } else {
        *next
    };
    let skip = (next - aligned) as usize;
    let len = match file.is_direct() {
        true => (skip as u64 + want).next_multiple_of(4096),
        false => want,
    };
    buf.set_len(len.min(CHUNK as u64) as usize)
        .expect("within the capacity");
    let submitted = base.read_at(&file, aligned, buf, move |base, server, buf, n| {
        body_read(base, server, id, buf, skip, want, n)
    });
    if let Err(e) = submitted {
        let (e, buf) = e.into_parts();
        server.spare.push(buf);
        log::error!("cannot read a file: {e}");
        // Before the head went out, the client can still be told to come back later.
        let head_sent =
            conn(server, id).is_some_and(|c| c.response.as_ref().is_some_and(|r| r.head.is_none()));
        match head_sent {
            true => close(base, server, id, "file read refused"),
            false => respond_error(base, server, id, 503),
        }
    }
}

fn body_read(
    base: &mut Base,
    server: &mut Server,
    id: ConnId,
    buf: AlignedBuf,
    skip: usize,
    want: u64,
    n: io::Result<usize>,
) {
    let got = match n {
        Ok(n) if n > skip => (n - skip).min(want as usize),
        Ok(_) => 0, // the file shrank under us
        Err(e) => {
            log::error!("file read failed: {e}");
            0
        }
    };
    let Some(c) = conn(server, id) else {
        return server.spare.push(buf);
    };
    let writer = c.writer;
    let head = c.response.as_mut().and_then(|r| r.head.take());
    if got == 0 {
        server.spare.push(buf);
        return close(base, server, id, "file ended early"); // the head promised more: the client must see an end
    }
    let body = &buf[skip..skip + got];
    let status = match &head {
        Some(head) => send(base, server, id, writer, &[head.as_bytes(), body]),
        None => send(base, server, id, writer, &[body]),
    };
    server.spare.push(buf);
    let Some(status) = status else {
        return;
    };
    let Some(response) = conn(server, id).and_then(|c| c.response.as_mut()) else {
        return;
    };
    let body = response.body.as_mut().expect("reading a body");
    body.next += got as u64;
    if body.next >= body.end {
        response.body = None;
        finish_response(base, server, id);
    } else if status == WriteStatus::Full {
        response.paused = true;
    } else {
        read_body(base, server, id);
    }
}

fn on_writer(base: &mut Base, server: &mut Server, id: ConnId, event: WriterEvent) {
    match event {
        WriterEvent::Drained => {
            let Some(response) = conn(server, id).and_then(|c| c.response.as_mut()) else {
                return;
            };
            if std::mem::take(&mut response.paused) {
                read_body(base, server, id);
            }
        }
        WriterEvent::Finished => close(base, server, id, "finished"),
        WriterEvent::Failed(e) => {
            log::debug!("connection failed: {e}");
            close(base, server, id, "write failed");
        }
        _ => {}
    }
}

/// Logs the response, then either closes the connection after it or serves the next request.
fn finish_response(base: &mut Base, server: &mut Server, id: ConnId) {
    let Some(c) = conn(server, id) else {
        return;
    };
    let Some(response) = c.response.take() else {
        return;
    };
    let request = &response.request;
    log::info!(
        "{} \"{} {} {}\" {} {} {:.3}ms",
        c.peer,
        request.method,
        request.target,
        request.version,
        response.status,
        response.sent,
        response.started.elapsed().as_secs_f64() * 1e3
    );
    if !request.keep_alive {
        let _ = base.finish_writer(c.writer);
        return;
    }
    next_request(base, server, id);
}

/// Answers `refusal` with a short body.
fn refuse(base: &mut Base, server: &mut Server, id: ConnId, refusal: Refusal) {
    respond_error(base, server, id, refusal.status());
}

fn respond_error(base: &mut Base, server: &mut Server, id: ConnId, status: u16) {
    let date = now_date(server);
    let Some(c) = conn(server, id) else {
        return;
    };
    let Some(response) = c.response.as_mut() else {
        return;
    };
    // After a malformed request nothing on the connection can be trusted.
    if matches!(status, 400 | 431 | 505) {
        response.request.keep_alive = false;
    }
    response.status = status;
    response.body = None;
    let body = format!("{status} {}\n", http::reason(status));
    let head = Head {
        status,
        date: &date,
        length: body.len() as u64,
        content_type: "text/plain; charset=utf-8",
        last_modified: None,
        content_range: None,
        close: !response.request.keep_alive,
        allow: status == 405,
    };
    let head_only = response.request.method == "HEAD";
    let mut message = head.render();
    if !head_only {
        message.push_str(&body);
    }
    let writer = c.writer;
    if send(base, server, id, writer, &[message.as_bytes()]).is_some() {
        finish_response(base, server, id);
    }
}

/// Today's HTTP date, formatted once per second.
fn now_date(server: &mut Server) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if server.date.0 != now || server.date.1.is_empty() {
        server.date = (now, http::http_date(now));
    }
    server.date.1.clone()
}

/// SIGTERM, SIGINT: no new connections; idle ones close now, busy ones after their response,
/// and the loop ends when none is left, or after the grace period.
fn shut_down(base: &mut Base, server: &mut Server) {
    if std::mem::replace(&mut server.shutting_down, true) {
        return;
    }
    log::info!("thread {}: shutting down", server.thread);
    if let Some(acceptor) = server.acceptor.take() {
        base.stop_accepting(&acceptor);
    }
    let ids: Vec<ConnId> = server
        .conns
        .iter()
        .map(|(key, c)| ConnId { key, gen: c.gen })
        .collect();
    for id in ids {
        let Some(c) = conn(server, id) else {
            continue;
        };
        match c.response.as_mut() {
            Some(response) => response.request.keep_alive = false,
            None => close(base, server, id, "shutdown"),
        }
    }
    if server.conns.is_empty() {
        base.exit();
    } else {
        base.exit_after(server.config.grace);
    }
}

fn print_metrics(base: &mut Base, server: &mut Server) {
    let m = base.metrics();
    // Not println!, which panics when stdout is gone (a closed pipe).
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "metrics thread={} connections={} iterations={} callbacks={} aio_completions={} \
         helper_jobs={} longest_hold_us={}",
        server.thread,
        server.conns.len(),
        m.iterations,
        m.callbacks,
        m.aio_completions,
        m.helper_jobs,
        m.longest_hold.as_micros()
    );
    let _ = out.flush();
}

/// The access log: the `log` facade, written to stderr or to a file that SIGHUP reopens.
struct AccessLog {
    path: Option<PathBuf>,
    out: Mutex<Option<std::fs::File>>,
}

static LOG: std::sync::OnceLock<AccessLog> = std::sync::OnceLock::new();

impl AccessLog {
    fn install(path: Option<PathBuf>) -> io::Result<()> {
        let file = path.as_deref().map(open_log).transpose()?;
        let logger = LOG.get_or_init(|| AccessLog {
            path,
            out: Mutex::new(file),
        });
        log::set_logger(logger).map_err(|e| io::Error::other(e.to_string()))?;
        let verbose = std::env::var_os("FILESERVER_DEBUG").is_some();
        log::set_max_level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        });
        Ok(())
    }

    fn reopen() {
        let Some(log) = LOG.get() else {
            return;
        };
        let Some(path) = &log.path else {
            return;
        };
        match open_log(path) {
            Ok(file) => *log.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(file),
            Err(e) => eprintln!("fileserver: {e}"),
        }
    }
}

fn open_log(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open --log {}: {e}", path.display()),
            )
        })
}

impl log::Log for AccessLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{} {}\n", record.level(), record.args());
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = match out.as_mut() {
            Some(file) => file.write_all(line.as_bytes()),
            None => io::stderr().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}
