//! A static HTTP/1.1 file server on aioloop: the daemon toolkit at work.
//!
//! ```text
//! cargo run --release --example fileserver -- --addr 127.0.0.1:8080 --root DIR [--threads N]
//!     [--direct] [--idle-timeout SECS] [--header-timeout SECS] [--grace SECS]
//!     [--max-header BYTES] [--fd-reserve N] [--log FILE]
//! ```
//!
//! It prints `listening ADDR` on stdout once it accepts (port 0 picks a free port, and the
//! line shows the real one), then serves `GET` and `HEAD` of the files under DIR: keep-alive
//! and pipelining (HTTP/1.0 too, with `Connection: keep-alive`, which is echoed),
//! `Content-Length`, one `Range` per request (206, 416) under `If-Range` (a range whose
//! `If-Range` no longer holds gets the whole file), `Last-Modified`, a weak `ETag` made of the
//! size and the modification time, `If-None-Match` (weak comparison; it overrides
//! `If-Modified-Since`) and `If-Modified-Since` (304, without `Content-Length`), and 400,
//! 403, 404, 405, 414, 431, 505 with short bodies (HTTP/1.1 without `Host`, a bare CR, a
//! control character or a field name that is not a token is 400; a name too long for the
//! file system is 414; what any client can cause is logged at debug, never as an error).
//! Targets in origin form (`/a`) and absolute form (`http://host/a`) are served. A request
//! body (`Content-Length`) is read and dropped as it comes, never buffered; a chunked one is
//! 400. A directory named without its trailing slash is `301` to its name with the slash;
//! with it, the request names the directory's `index.html`: there are no listings. A path never
//! leaves DIR: `..` is refused, and files are opened with `openat2(RESOLVE_BENEATH)`
//! ([`EventBase::open_beneath`]), so neither symbolic links nor encodings lead out. Only
//! regular files are opened ([`Dir::regular_files_only`]): a FIFO, a device or a socket is
//! 404 without being opened (a local writer waiting on a FIFO stays waiting).
//!
//! Every file operation goes through the library's non-blocking file API: opens and stats
//! answered from the kernel's caches on the loop thread or else run on the helper threads,
//! reads served from the page cache or by kernel AIO or the helpers (`--direct` uses
//! `O_DIRECT`). Each client is a connection the loop owns ([`EventBase::serve`]), with
//! back-pressure: a slow reader holds at most about 320 KiB of its file in the server's memory
//! (the queue's 256 KiB high mark and one 64 KiB chunk), and a client that pipelines requests
//! without reading their answers is not read from while its queue is over that mark. Files are
//! served up to the size `fstat` gives them, so pseudo-files that claim size 0 (`/proc`) come
//! out empty. Connections that make no progress for `--idle-timeout` seconds (default 30:
//! no byte read, none taken by the client) are closed, but not while their request waits on
//! the server's own file system (a stalled mount), for up to four timeouts, then 504. A
//! request head must arrive whole within `--header-timeout` seconds (default 10) of its first
//! byte (slowloris); one larger than `--max-header` (8192) gets 431. After a `Connection:
//! close` response the server shuts its write side and drops what the client still sends for
//! a moment before closing (a lingering close), so that the response is not reset away.
//!
//! Under its fd limit the server keeps `--fd-reserve` fds (default 16) free for the files of
//! the clients it accepted, and stops accepting meanwhile; an open that still finds no fd is
//! tried again for a few seconds before the client gets 503. Access-log lines that cannot be
//! written (a full disk) are counted, said once on stderr, and reported at exit.
//!
//! Signals: SIGTERM or SIGINT stops accepting, closes idle connections and lets responses in
//! flight finish, for at most `--grace` seconds (default 10), then exits 0; SIGHUP reopens the
//! `--log` file (for log rotation); SIGUSR1 prints each thread's counters on stdout. One line
//! per request goes to the access log (`--log FILE`, or stderr) through the `log` facade, in
//! the common log format's order (`client - - [06/Nov/1994:08:49:37 +0000] "GET /a HTTP/1.1"
//! 200 BYTES`, then the time taken); a response cut off before its end (the grace period ran
//! out, the client left) gets its line too, with `cut off` and the bytes it got. Every timeout
//! is 1 to 86400 seconds: `--idle-timeout 0` is refused (a connection is never closed at once).
//!
//! `--threads N` runs N independent loops, each with its own listening socket on the same
//! address (`SO_REUSEPORT`), among which the kernel spreads connections: the way to use more
//! than one core, since one loop runs on one thread. Under systemd, a socket passed by socket
//! activation is used instead of binding, readiness is notified, and the watchdog is fed.

mod http;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aioloop::mio::net::TcpListener;
use aioloop::signals::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use aioloop::{
    systemd, tcp_listener, AioFile, AlignedBuf, ConnEvent, ConnId, ConnOptions, ConnTimeout, Dir,
    EventBase, ListenOptions, WriteStatus,
};
use http::{Head, Refusal, Request, Span};

const USAGE: &str = "usage: fileserver --addr HOST:PORT --root DIR [--threads N] [--direct] \
                     [--idle-timeout SECS] [--header-timeout SECS] [--grace SECS] \
                     [--max-header BYTES] [--fd-reserve N] [--log FILE]";
/// Bytes read from a file per request.
const CHUNK: usize = 64 << 10;
/// A connection's queue holds at most this much before the file reading pauses and no further
/// pipelined request is started.
const HIGH_WATER: usize = 256 << 10;
/// How many idle timeouts a request may wait on the server's own file system before it gets
/// 504 (a hung mount must not hold a client for ever).
const FILE_WAIT_TIMEOUTS: u32 = 4;
/// How long an open that finds the process out of fds is tried again before 503.
const OPEN_RETRY_FOR: Duration = Duration::from_secs(5);

struct Config {
    root: Dir,
    direct: bool,
    idle: Duration,
    header_timeout: Duration,
    grace: Duration,
    max_header: usize,
    fd_reserve: u32,
}

/// One loop's server.
struct Server {
    config: Arc<Config>,
    thread: usize,
    clients: HashMap<ConnId, Client>,
    /// Aligned read buffers of finished reads, for the next ones.
    spare: Vec<AlignedBuf>,
    date: (u64, String),
    /// Numbers the responses, so that a late file callback never reaches a later response.
    next_response: u64,
}

/// What the server keeps of a connection (the loop keeps the socket, its queue and timers).
struct Client {
    peer: Option<SocketAddr>,
    input: Vec<u8>,
    /// The peer closed its side: no more requests.
    input_closed: bool,
    /// Reading paused because the input holds all a request head may take.
    input_paused: bool,
    /// The request head's deadline runs (from its first byte to its end).
    head_deadline: bool,
    /// The queue is over its high mark: no request starts until it drains.
    full: bool,
    /// Bytes of a request body still to come, read and dropped (never buffered).
    discard: u64,
    response: Option<Response>,
}

/// The response being produced.
struct Response {
    number: u64,
    request: Request,
    started: Instant,
    status: u16,
    sent: u64,
    /// The head, held back to go out with the first piece of the body in one `sendmsg`.
    head: Option<String>,
    body: Option<Body>,
    /// Waiting for `ConnEvent::Drained` before reading more of the file.
    paused: bool,
    /// Since when the response waits on the server's own file operation (not the client).
    waiting: Option<Instant>,
}

struct Body {
    file: AioFile,
    next: u64,
    end: u64,
}

/// A response of a connection: file callbacks carry it, and find nothing once it is over.
#[derive(Clone, Copy)]
struct Job {
    id: ConnId,
    number: u64,
}

type Base = EventBase<Server>;

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("fileserver: {e}");
        std::process::exit(2)
    });
    let result = serve(args);
    AccessLog::report_dropped();
    if let Err(e) = result {
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
    header_timeout: Duration,
    grace: Duration,
    max_header: usize,
    fd_reserve: u32,
    log: Option<PathBuf>,
}

fn parse_args() -> io::Result<Args> {
    let invalid =
        |msg: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{msg}\n{USAGE}"));
    let (mut addr, mut root, mut log) = (None, None, None);
    let (mut threads, mut direct, mut idle, mut grace, mut max_header) = (1, false, 30, 10, 8192);
    let (mut header_timeout, mut fd_reserve) = (10, 16);
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
            "--header-timeout" => {
                header_timeout = number("--header-timeout", value("--header-timeout")?)?
            }
            "--grace" => grace = number("--grace", value("--grace")?)?,
            "--max-header" => max_header = number("--max-header", value("--max-header")?)?,
            "--fd-reserve" => fd_reserve = number("--fd-reserve", value("--fd-reserve")?)?,
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
    if !(64..=1 << 20).contains(&max_header) {
        return Err(invalid("--max-header must be 64 to 1048576".into()));
    }
    let seconds = |name: &str, secs: u64| match secs {
        1..=86_400 => Ok(Duration::from_secs(secs)),
        _ => Err(invalid(format!(
            "{name} must be 1 to 86400 seconds, not {secs}"
        ))),
    };
    Ok(Args {
        addr: addr.ok_or_else(|| invalid("--addr is missing".into()))?,
        root: root.ok_or_else(|| invalid("--root is missing".into()))?,
        threads: threads as usize,
        direct,
        idle: seconds("--idle-timeout", idle)?,
        header_timeout: seconds("--header-timeout", header_timeout)?,
        grace: Duration::from_secs(grace.min(86_400)),
        max_header: max_header as usize,
        fd_reserve: u32::try_from(fd_reserve)
            .map_err(|_| invalid(format!("--fd-reserve is too large: {fd_reserve}")))?,
        log,
    })
}

fn serve(args: Args) -> io::Result<()> {
    // Before any thread exists, so that every thread inherits the mask.
    aioloop::block_signals(&[SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    AccessLog::install(args.log.clone())?;
    // Regular files only: a request never opens a FIFO (which would release a local writer
    // waiting on it) or a device (whose driver's open would run).
    let root = Dir::open(&args.root)?.regular_files_only();
    let config = Arc::new(Config {
        root,
        direct: args.direct,
        idle: args.idle,
        header_timeout: args.header_timeout,
        grace: args.grace,
        max_header: args.max_header,
        fd_reserve: args.fd_reserve,
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
    let options = ConnOptions::new()
        .high_water(HIGH_WATER)
        .idle_timeout(config.idle)
        .nodelay(true);
    // The loop owns each connection: socket, queue (back-pressure by default), idle timer,
    // the head deadline, and a lingering close after the last response.
    let acceptor = base.serve(listener, options, on_event)?;
    // Accepted clients need fds for their files: stop accepting before the last ones go.
    acceptor.set_fd_reserve(config.fd_reserve);
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
        clients: HashMap::new(),
        spare: Vec::new(),
        date: (0, String::new()),
        next_response: 0,
    };
    base.set_exit_when_empty(true);
    base.run(&mut server)
}

/// SIGTERM, SIGINT: no new connections; idle ones finish now, busy ones after their
/// response, and the loop ends when none is left, or after the grace period.
fn shut_down(base: &mut Base, server: &mut Server) {
    log::info!("thread {}: shutting down", server.thread);
    base.shut_down(server.config.grace);
}

/// Everything that happens to a connection.
fn on_event(base: &mut Base, server: &mut Server, id: ConnId, event: ConnEvent<'_>) {
    match event {
        ConnEvent::Opened => {
            let client = Client {
                peer: base.conn_peer(id),
                input: Vec::new(),
                input_closed: false,
                input_paused: false,
                head_deadline: false,
                full: false,
                discard: 0,
                response: None,
            };
            server.clients.insert(id, client);
        }
        ConnEvent::Data(bytes) => {
            let limit = 2 * server.config.max_header;
            let Some(c) = server.clients.get_mut(&id) else {
                return;
            };
            // A request body comes right after its head: what is still due of it is dropped.
            let skip = usize::try_from(c.discard).map_or(bytes.len(), |d| d.min(bytes.len()));
            c.discard -= skip as u64;
            c.input.extend_from_slice(&bytes[skip..]);
            if c.input.len() >= limit {
                c.input_paused = true;
                base.conn_pause_reading(id, true);
            }
            next_request(base, server, id);
        }
        ConnEvent::PeerShutdown => {
            if let Some(c) = server.clients.get_mut(&id) {
                c.input_closed = true;
            }
            next_request(base, server, id);
        }
        ConnEvent::Drained => {
            let Some(c) = server.clients.get_mut(&id) else {
                return;
            };
            c.full = false;
            let resume = match c.response.as_mut() {
                Some(r) => std::mem::take(&mut r.paused).then(|| job(id, r)),
                None => return next_request(base, server, id),
            };
            if let Some(job) = resume {
                read_body(base, server, job);
            }
        }
        ConnEvent::Timeout(ConnTimeout::Idle) => on_idle(base, server, id),
        ConnEvent::Timeout(ConnTimeout::Deadline) => {
            // The request head did not arrive in time (slowloris): closed by default.
            if let Some(c) = server.clients.get(&id) {
                log::debug!("{}: request head too slow, closed", show(c.peer));
            }
        }
        ConnEvent::ShuttingDown => {
            if let Some(r) = server
                .clients
                .get_mut(&id)
                .and_then(|c| c.response.as_mut())
            {
                r.request.keep_alive = false;
                base.conn_keep(id); // it finishes after this response
            }
        }
        ConnEvent::Closed(result) => {
            let Some(c) = server.clients.remove(&id) else {
                return;
            };
            if let Err(e) = &result {
                log::debug!("{}: closed: {e}", show(c.peer));
            }
            // A response cut off (the grace period ran out, the client left, an error): its
            // line says how far it got.
            if let Some(r) = &c.response {
                let why = match &result {
                    Err(e) => format!(" cut off: {e}"),
                    Ok(()) => " cut off".to_string(),
                };
                log_access(c.peer, r, &why);
            }
        }
        _ => {}
    }
}

fn job(id: ConnId, response: &Response) -> Job {
    Job {
        id,
        number: response.number,
    }
}

fn show(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "-".into(), |p| p.to_string())
}

/// The response `job` belongs to, if it is still under way.
fn response(server: &mut Server, job: Job) -> Option<&mut Response> {
    let r = server.clients.get_mut(&job.id)?.response.as_mut()?;
    (r.number == job.number).then_some(r)
}

/// No progress for the idle timeout. Waiting on the server's own file system is not the
/// client's idleness: the connection is kept, up to a limit, then told 504.
fn on_idle(base: &mut Base, server: &mut Server, id: ConnId) {
    let limit = server.config.idle * FILE_WAIT_TIMEOUTS;
    let Some(r) = server
        .clients
        .get_mut(&id)
        .and_then(|c| c.response.as_mut())
    else {
        return; // idle between requests: closed by default
    };
    let Some(since) = r.waiting else {
        return; // a download that stopped moving: closed by default
    };
    base.conn_keep(id);
    if since.elapsed() >= limit && r.sent == 0 {
        log::warn!("a file operation took over {limit:?}: 504");
        let id_job = job(id, r);
        r.waiting = None;
        respond_error(base, server, id_job, 504);
    }
}

/// Starts the next pipelined request, if the connection is free and one has fully arrived.
fn next_request(base: &mut Base, server: &mut Server, id: ConnId) {
    let (max_header, header_timeout) = (server.config.max_header, server.config.header_timeout);
    let Some(c) = server.clients.get_mut(&id) else {
        return;
    };
    if c.response.is_some() || c.full {
        return; // one at a time; none while the client does not take its answers
    }
    if c.input_paused && c.input.len() < 2 * max_header {
        c.input_paused = false;
        base.conn_pause_reading(id, false);
    }
    match http::parse_request(&c.input, max_header) {
        Ok(Some((request, used))) => {
            c.input.drain(..used);
            let body = usize::try_from(request.body_length)
                .map_or(c.input.len(), |n| n.min(c.input.len()));
            c.input.drain(..body);
            c.discard = request.body_length - body as u64;
            if std::mem::take(&mut c.head_deadline) {
                base.conn_set_deadline(id, None);
            }
            start_response(base, server, id, request);
        }
        Ok(None) if c.input_closed => drop(base.conn_finish(id)),
        Ok(None) => {
            // A head has begun: it must be complete within the header timeout.
            if !c.input.is_empty() && !std::mem::replace(&mut c.head_deadline, true) {
                base.conn_set_deadline(id, Some(header_timeout));
            }
        }
        Err(refusal) => {
            let request = Request::unparsed();
            c.input.clear();
            c.input_closed = true; // nothing after a broken request can be trusted
            if std::mem::take(&mut c.head_deadline) {
                base.conn_set_deadline(id, None);
            }
            let job = begin(server, id, request);
            refuse(base, server, job, refusal);
        }
    }
}

/// Makes `request` the connection's current response.
fn begin(server: &mut Server, id: ConnId, request: Request) -> Job {
    let number = server.next_response;
    server.next_response += 1;
    if let Some(c) = server.clients.get_mut(&id) {
        let mut request = request;
        request.keep_alive &= !c.input_closed;
        c.response = Some(Response {
            number,
            request,
            started: Instant::now(),
            status: 0,
            sent: 0,
            head: None,
            body: None,
            paused: false,
            waiting: None,
        });
    }
    Job { id, number }
}

fn start_response(base: &mut Base, server: &mut Server, id: ConnId, request: Request) {
    let method = request.method.clone();
    let path = http::request_path(&request.target);
    let job = begin(server, id, request);
    if method != "GET" && method != "HEAD" {
        return refuse(base, server, job, Refusal::MethodNotAllowed);
    }
    match path {
        Ok(path) => open_file(base, server, job, path),
        Err(refusal) => refuse(base, server, job, refusal),
    }
}

fn open_file(base: &mut Base, server: &mut Server, job: Job, path: PathBuf) {
    let (root, direct) = (server.config.root.clone(), server.config.direct);
    let opened = base.open_beneath(&root, path.clone(), direct, move |base, server, file| {
        opened(base, server, job, path, file)
    });
    match opened {
        Ok(_) => wait_on_files(server, job),
        Err(e) => {
            log::error!("cannot open a file: {e}");
            respond_error(base, server, job, 503);
        }
    }
}

/// Out of fds: other responses will end and free some (the accept loop keeps a reserve for
/// that), so the open is tried again, for a few seconds, before the client gets 503.
fn retry_open(base: &mut Base, server: &mut Server, job: Job, path: PathBuf) -> bool {
    let Some(r) = response(server, job) else {
        return true;
    };
    let waited = r.started.elapsed();
    if waited >= OPEN_RETRY_FOR {
        return false;
    }
    let delay = (waited / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
    r.waiting.get_or_insert_with(Instant::now);
    base.add_timer(delay, move |base, server, _| {
        if response(server, job).is_some() {
            open_file(base, server, job, path);
        }
    });
    true
}

/// The response now waits on the server's own file system.
fn wait_on_files(server: &mut Server, job: Job) {
    if let Some(r) = response(server, job) {
        r.waiting.get_or_insert_with(Instant::now);
    }
}

/// What a failed open or stat says to the client, and whether the client caused it.
fn refusal_of(e: &io::Error) -> Result<Refusal, u16> {
    match (e.kind(), aioloop::os_error(e)) {
        (io::ErrorKind::NotFound, _) | (_, Some(libc::ENOTDIR)) => Ok(Refusal::NotFound),
        (_, Some(libc::EXDEV | libc::EACCES | libc::ELOOP | libc::EPERM | libc::EISDIR)) => {
            Ok(Refusal::Forbidden)
        }
        // A name segment over 255 bytes, or a path over PATH_MAX.
        (_, Some(libc::ENAMETOOLONG)) => Ok(Refusal::UriTooLong),
        // Not a regular file (ENXIO: a FIFO, a socket, a device; the root opens regular
        // files only), or a file O_DIRECT cannot read (EINVAL).
        (_, Some(libc::ENXIO | libc::ENODEV | libc::EINVAL)) => Ok(Refusal::NotFound),
        // Out of fds or memory for now: the client may retry.
        (_, Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN)) => Err(503),
        _ => Err(500),
    }
}

fn opened(
    base: &mut Base,
    server: &mut Server,
    job: Job,
    path: PathBuf,
    file: io::Result<AioFile>,
) {
    let Some(r) = response(server, job) else {
        return; // the client left, or was answered, meanwhile; dropping the file closes it
    };
    r.waiting = None;
    let file = match file {
        Ok(file) => file,
        Err(e) if matches!(aioloop::os_error(&e), Some(libc::EMFILE | libc::ENFILE)) => {
            if !retry_open(base, server, job, path.clone()) {
                file_failed(base, server, job, &path, &e);
            }
            return;
        }
        Err(e) => return file_failed(base, server, job, &path, &e),
    };
    let stat = base.file_metadata(&file.clone(), move |base, server, meta| {
        if let Some(r) = response(server, job) {
            r.waiting = None;
        }
        match meta {
            Ok(meta) => respond_with_file(base, server, job, &path, file, &meta),
            Err(e) => file_failed(base, server, job, &path, &e),
        }
    });
    match stat {
        Ok(_) => wait_on_files(server, job),
        Err(_) => respond_error(base, server, job, 503),
    }
}

/// Answers a failed file operation: 4xx (logged at debug) for what any client can cause,
/// 5xx (logged as an error) for the server's own trouble.
fn file_failed(base: &mut Base, server: &mut Server, job: Job, path: &Path, e: &io::Error) {
    if aioloop::os_error(e) == Some(libc::EISDIR) {
        return redirect_to_directory(base, server, job);
    }
    match refusal_of(e) {
        Ok(refusal) => {
            log::debug!("{}: {e}", path.display());
            refuse(base, server, job, refusal);
        }
        Err(status) => {
            log::error!("{}: {e}", path.display());
            respond_error(base, server, job, status);
        }
    }
}

fn respond_with_file(
    base: &mut Base,
    server: &mut Server,
    job: Job,
    path: &Path,
    file: AioFile,
    meta: &std::fs::Metadata,
) {
    if meta.is_dir() {
        return redirect_to_directory(base, server, job);
    }
    if !meta.is_file() {
        return refuse(base, server, job, Refusal::NotFound);
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let size = meta.len();
    let date = now_date(server);
    let Some(r) = response(server, job) else {
        return;
    };
    let request = &r.request;
    let last_modified = modified.map(http::http_date);
    let etag = http::etag(size, modified.unwrap_or(0));
    // If-None-Match, when present, decides alone (RFC 9110 §13.2.2).
    let not_modified = match (&request.if_none_match, &request.if_modified_since, modified) {
        (Some(tags), _, _) => http::none_match(tags, &etag),
        (None, Some(since), Some(modified)) => {
            http::parse_http_date(since).is_some_and(|s| modified <= s)
        }
        _ => false,
    };
    // A Range under an If-Range that no longer holds gets the whole file: a resumed
    // download of a changed file must not be spliced from two versions.
    let range = match &request.if_range {
        Some(if_range) if !http::range_holds(if_range, &etag, modified) => None,
        _ => request.range.as_deref(),
    };
    let (status, span) = match http::parse_range(range, size) {
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
        // An error carries no validators of the file (as nginx).
        last_modified: last_modified.as_deref().filter(|_| status != 416),
        content_range: match status {
            206 => Some(format!("bytes {start}-{}/{size}", end - 1)),
            416 => Some(format!("bytes */{size}")),
            _ => None,
        },
        etag: (status != 416).then_some(etag.as_str()),
        location: None,
        close: !request.keep_alive,
        keep_alive: request.keep_alive_asked && request.keep_alive,
        allow: false,
    };
    let head_only = request.method == "HEAD" || span.is_none() || start == end;
    r.status = status;
    if !head_only {
        r.head = Some(head.render());
        r.body = Some(Body {
            file,
            next: start,
            end,
        });
        return read_body(base, server, job);
    }
    if send(base, server, job, &[head.render().as_bytes()]).is_some() {
        finish_response(base, server, job);
    }
}

/// Queues `parts` on the connection; `None` if that failed (the connection then closes, and
/// says so in `Closed`).
fn send(base: &mut Base, server: &mut Server, job: Job, parts: &[&[u8]]) -> Option<WriteStatus> {
    let status = base.conn_write_vectored(job.id, parts).ok()?;
    let c = server.clients.get_mut(&job.id)?;
    c.full |= status == WriteStatus::Full;
    if let Some(r) = c.response.as_mut() {
        r.sent += parts.iter().map(|p| p.len() as u64).sum::<u64>();
    }
    Some(status)
}

/// Reads the next chunk of the body.
fn read_body(base: &mut Base, server: &mut Server, job: Job) {
    let mut buf = match server.spare.pop() {
        Some(buf) => buf,
        None => match AlignedBuf::new(CHUNK, 4096) {
            Ok(buf) => buf,
            Err(_) => return respond_error(base, server, job, 503),
        },
    };
    let Some(Body { file, next, end }) = response(server, job).and_then(|r| r.body.as_ref()) else {
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
        body_read(base, server, job, buf, skip, want, n)
    });
    match submitted {
        Ok(_) => wait_on_files(server, job),
        Err(e) => {
            let (e, buf) = e.into_parts();
            server.spare.push(buf);
            log::error!("cannot read a file: {e}");
            // Before the head went out, the client can still be told to come back later.
            match response(server, job).is_some_and(|r| r.head.is_none()) {
                true => {
                    base.conn_close(job.id);
                }
                false => respond_error(base, server, job, 503),
            }
        }
    }
}

fn body_read(
    base: &mut Base,
    server: &mut Server,
    job: Job,
    buf: AlignedBuf,
    skip: usize,
    want: u64,
    n: io::Result<usize>,
) {
    let got = match n {
        Ok(n) if n > skip => (n - skip).min(usize::try_from(want).unwrap_or(usize::MAX)),
        Ok(_) => 0, // the file shrank under us
        Err(e) => {
            log::error!("file read failed: {e}");
            0
        }
    };
    let Some(r) = response(server, job) else {
        return server.spare.push(buf);
    };
    r.waiting = None;
    let head = r.head.take();
    if got == 0 {
        server.spare.push(buf);
        // The head promised more: the client must see an end.
        base.conn_close(job.id);
        return;
    }
    let body = &buf[skip..skip + got];
    let status = match &head {
        Some(head) => send(base, server, job, &[head.as_bytes(), body]),
        None => send(base, server, job, &[body]),
    };
    server.spare.push(buf);
    let Some(status) = status else {
        return;
    };
    let Some(r) = response(server, job) else {
        return;
    };
    let Some(body) = r.body.as_mut() else {
        return;
    };
    body.next += got as u64;
    if body.next >= body.end {
        r.body = None;
        finish_response(base, server, job);
    } else if status == WriteStatus::Full {
        r.paused = true;
    } else {
        read_body(base, server, job);
    }
}

/// Logs the response, then either finishes the connection after it or serves the next
/// request.
fn finish_response(base: &mut Base, server: &mut Server, job: Job) {
    let Some(c) = server.clients.get_mut(&job.id) else {
        return;
    };
    let Some(response) = c.response.take() else {
        return;
    };
    log_access(c.peer, &response, "");
    if !response.request.keep_alive {
        // The queue goes out, the write side shuts, and what the client still sends is read
        // and dropped for a moment (a lingering close), so that it is not reset.
        let _ = base.conn_finish(job.id);
        return;
    }
    next_request(base, server, job.id);
}

/// A directory named without its trailing slash: 301 to the name with it, as nginx does, so
/// that relative links in its `index.html` resolve; with the slash, the request names the
/// `index.html` (there are no listings). A target ending in `/` already is not redirected.
fn redirect_to_directory(base: &mut Base, server: &mut Server, job: Job) {
    let Some(r) = response(server, job) else {
        return;
    };
    let target = &r.request.target;
    let path = http::target_path(target);
    if path.ends_with('/') {
        return refuse(base, server, job, Refusal::Forbidden);
    }
    // One leading slash: `//host` would be read as another host (an open redirect).
    let mut location = format!("/{}/", path.trim_start_matches('/'));
    if let Some(at) = target.find('?') {
        location.push_str(&target[at..]);
    }
    respond_short(base, server, job, 301, Some(&location));
}

/// The access-log line of a response, in the common log format's order (client, time,
/// request line, status, bytes sent) plus how long it took and `note`.
fn log_access(peer: Option<SocketAddr>, response: &Response, note: &str) {
    let request = &response.request;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    log::info!(
        "{} - - [{}] \"{} {} {}\" {} {} {:.3}ms{note}",
        show(peer),
        http::log_date(now),
        request.method,
        request.target,
        request.version,
        // None yet: cut off while the file was being opened.
        match response.status {
            0 => "-".to_string(),
            status => status.to_string(),
        },
        response.sent,
        response.started.elapsed().as_secs_f64() * 1e3
    );
}

/// Answers `refusal` with a short body.
fn refuse(base: &mut Base, server: &mut Server, job: Job, refusal: Refusal) {
    respond_error(base, server, job, refusal.status());
}

fn respond_error(base: &mut Base, server: &mut Server, job: Job, status: u16) {
    respond_short(base, server, job, status, None);
}

/// Answers `status` with a short text body.
fn respond_short(
    base: &mut Base,
    server: &mut Server,
    job: Job,
    status: u16,
    location: Option<&str>,
) {
    let date = now_date(server);
    let Some(r) = response(server, job) else {
        return;
    };
    // After a malformed request nothing on the connection can be trusted; after 504 the file
    // operation may still be running.
    if matches!(status, 400 | 414 | 431 | 504 | 505) {
        r.request.keep_alive = false;
    }
    r.status = status;
    r.body = None;
    let body = format!("{status} {}\n", http::reason(status));
    let head = Head {
        status,
        date: &date,
        length: body.len() as u64,
        content_type: "text/plain; charset=utf-8",
        last_modified: None,
        content_range: None,
        etag: None,
        location,
        close: !r.request.keep_alive,
        keep_alive: r.request.keep_alive_asked && r.request.keep_alive,
        allow: status == 405,
    };
    let head_only = r.request.method == "HEAD";
    let mut message = head.render();
    if !head_only {
        message.push_str(&body);
    }
    if send(base, server, job, &[message.as_bytes()]).is_some() {
        finish_response(base, server, job);
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

fn print_metrics(base: &mut Base, server: &mut Server) {
    let m = base.metrics();
    // Not println!, which panics when stdout is gone (a closed pipe).
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "metrics thread={} connections={} iterations={} callbacks={} aio_completions={} \
         helper_jobs={} longest_hold_us={} log_lines_dropped={}",
        server.thread,
        server.clients.len(),
        m.iterations,
        m.callbacks,
        m.aio_completions,
        m.helper_jobs,
        m.longest_hold.as_micros(),
        AccessLog::dropped()
    );
    let _ = out.flush();
}

/// The access log: the `log` facade, written to stderr or to a file that SIGHUP reopens.
struct AccessLog {
    path: Option<PathBuf>,
    out: Mutex<Option<std::fs::File>>,
    /// Lines that could not be written (a full disk): counted, and said once on stderr.
    dropped: AtomicU64,
}

static LOG: std::sync::OnceLock<AccessLog> = std::sync::OnceLock::new();

impl AccessLog {
    fn install(path: Option<PathBuf>) -> io::Result<()> {
        let file = path.as_deref().map(open_log).transpose()?;
        let logger = LOG.get_or_init(|| AccessLog {
            path,
            out: Mutex::new(file),
            dropped: AtomicU64::new(0),
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

    /// The number of lines dropped so far.
    fn dropped() -> u64 {
        LOG.get()
            .map_or(0, |log| log.dropped.load(Ordering::Relaxed))
    }

    /// Says on stderr how many lines were dropped, if any (at exit).
    fn report_dropped() {
        let dropped = AccessLog::dropped();
        if dropped > 0 {
            eprintln!(
                "fileserver: {dropped} access-log lines could not be written and were dropped"
            );
        }
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
        let written = match out.as_mut() {
            Some(file) => file.write_all(line.as_bytes()),
            None => io::stderr().write_all(line.as_bytes()),
        };
        if let Err(e) = written {
            // Once, not per line: a full disk would otherwise fill stderr too.
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!(
                    "fileserver: cannot write the access log ({e}); dropping its lines, \
                     counted (SIGUSR1 and the exit report them)"
                );
            }
        }
    }

    fn flush(&self) {}
}
