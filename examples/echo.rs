//! A TCP echo server on one event base, with an idle-connection timeout.
//!
//! ```text
//! cargo run --release --example echo -- [--addr HOST:PORT] [--level] [--idle-timeout SECS]
//! ```
//!
//! Prints `listening <addr>` once it accepts connections (`--addr 127.0.0.1:0` picks a free
//! port; the default is `127.0.0.1:7000`; a host name such as `localhost:7000` is resolved).
//! Every byte received is written back on the same connection; a connection silent for the idle
//! timeout (default 60 s; 0 turns it off) is closed. `--level` uses level-triggered handlers
//! that read one buffer per call; the default edge-triggered handlers read until `WouldBlock`.
//! Talk to it with `nc 127.0.0.1 7000`; stop it with Ctrl-C. Errors name what failed, exit 1.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use aioloop::mio::net::{TcpListener, TcpStream};
use aioloop::{Direction, EventBase, Handlers, IoEvent, IoOptions};

/// Past this many unsent bytes a connection stops reading until its peer catches up.
const MAX_PENDING: usize = 1 << 20;

struct Server {
    listener: TcpListener,
    conns: HashMap<RawFd, Conn>,
    /// Edge-triggered reads drain the socket; level-triggered ones read one buffer per call.
    edge: bool,
    read_options: IoOptions,
    write_options: IoOptions,
}

struct Conn {
    stream: TcpStream,
    /// Received bytes not yet echoed back.
    pending: Vec<u8>,
    /// The peer finished sending: close once `pending` is flushed.
    eof: bool,
    reading: bool,
}

type Base = EventBase<Server>;

const USAGE: &str = "usage: echo [--addr HOST:PORT] [--level] [--idle-timeout SECS]";

fn main() {
    if let Err(e) = run() {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let args = Args::parse()?;
    let listener = TcpListener::bind(args.addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.addr)))?;
    let mut base = Base::new()?;
    base.set_io_handler(&listener, Direction::Read, IoOptions::new(), on_accept)?;
    let trigger = if args.level { "level" } else { "edge" };
    let mut server = Server {
        listener,
        conns: HashMap::new(),
        edge: !args.level,
        read_options: with_idle_timeout(args.trigger_options(), args.idle_timeout),
        write_options: with_idle_timeout(args.trigger_options(), args.idle_timeout),
    };
    eprintln!(
        "echo: {trigger}-triggered handlers, idle timeout {:?}",
        args.idle_timeout
    );
    println!("listening {}", server.listener.local_addr()?);
    io::stdout().flush()?;
    base.run(&mut server)
}

/// `options` with an inactivity timeout, unless `idle` is `None` (no timeout).
fn with_idle_timeout(options: IoOptions, idle: Option<Duration>) -> IoOptions {
    match idle {
        Some(idle) => options.timeout(idle),
        None => options,
    }
}

fn on_accept(base: &mut Base, server: &mut Server, _: IoEvent) {
    loop {
        match server.listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = open(base, server, stream) {
                    eprintln!("dropping connection: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            // EMFILE and friends: the connection stays queued; try again on the next event.
            Err(e) => return eprintln!("accept: {e}"),
        }
    }
}

fn open(base: &mut Base, server: &mut Server, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let fd = stream.as_raw_fd();
    base.set_io_handler(&fd, Direction::Read, server.read_options, on_readable)?;
    let conn = Conn {
        stream,
        pending: Vec::new(),
        eof: false,
        reading: true,
    };
    server.conns.insert(fd, conn);
    Ok(())
}

fn on_readable(base: &mut Base, server: &mut Server, ev: IoEvent) {
    if ev.ready.is_timeout() {
        return close(base, server, ev.fd);
    }
    let edge = server.edge;
    let Some(conn) = server.conns.get_mut(&ev.fd) else {
        return;
    };
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.stream.read(&mut buf) {
            Ok(0) => {
                conn.eof = true;
                break;
            }
            Ok(n) => conn.pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return close(base, server, ev.fd),
        }
        // Level-triggered: one buffer per call is enough, the loop calls again while ready.
        if !edge || conn.pending.len() >= MAX_PENDING {
            break;
        }
    }
    flush(base, server, ev.fd);
}

fn on_writable(base: &mut Base, server: &mut Server, ev: IoEvent) {
    if ev.ready.is_timeout() {
        return close(base, server, ev.fd); // the peer stopped taking its echo
    }
    flush(base, server, ev.fd);
}

/// Writes what is pending, then arranges the handlers for what is left.
fn flush(base: &mut Base, server: &mut Server, fd: RawFd) {
    let Some(conn) = server.conns.get_mut(&fd) else {
        return;
    };
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(n) => drop(conn.pending.drain(..n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return close(base, server, fd),
        }
    }
    if conn.pending.is_empty() && conn.eof {
        return close(base, server, fd);
    }
    let must_write = !conn.pending.is_empty();
    if must_write != base.has_fd_handler(&fd, aioloop::HandlerKind::Write) {
        if must_write {
            let _ = base.set_io_handler(&fd, Direction::Write, server.write_options, on_writable);
        } else {
            base.remove_fd_handlers(&fd, Handlers::WRITE);
        }
    }
    // Back-pressure: stop reading while the peer is not taking its echo.
    let should_read = conn.pending.len() < MAX_PENDING && !conn.eof;
    if should_read != conn.reading {
        conn.reading = should_read;
        if should_read {
            let _ = base.set_io_handler(&fd, Direction::Read, server.read_options, on_readable);
        } else {
            base.remove_fd_handlers(&fd, Handlers::READ);
        }
    }
}

fn close(base: &mut Base, server: &mut Server, fd: RawFd) {
    base.remove_fd_handlers(&fd, Handlers::ALL);
    server.conns.remove(&fd); // drops the stream: the fd is closed after its handlers are gone
}

struct Args {
    addr: SocketAddr,
    level: bool,
    /// `None`: no idle timeout.
    idle_timeout: Option<Duration>,
}

impl Args {
    fn parse() -> io::Result<Args> {
        let bad =
            |what: String| io::Error::new(ErrorKind::InvalidInput, format!("{what}\n{USAGE}"));
        let mut args = Args {
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            level: false,
            idle_timeout: Some(Duration::from_secs(60)),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--addr" => {
                    let value = it
                        .next()
                        .ok_or_else(|| bad("--addr needs a value".into()))?;
                    args.addr = resolve(&value).map_err(|e| bad(format!("--addr {value}: {e}")))?;
                }
                "--level" => args.level = true,
                "--idle-timeout" => {
                    let value = it
                        .next()
                        .ok_or_else(|| bad("--idle-timeout needs a value".into()))?;
                    let secs: f64 = value.parse().map_err(|_| {
                        bad(format!(
                            "--idle-timeout takes seconds (0: none), got {value:?}"
                        ))
                    })?;
                    args.idle_timeout = match Duration::try_from_secs_f64(secs) {
                        Ok(d) if d.is_zero() => None,
                        Ok(d) => Some(d),
                        Err(_) => {
                            return Err(bad(format!(
                                "--idle-timeout takes a non-negative number of seconds, got \
                                 {value:?}"
                            )))
                        }
                    };
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(bad(format!("unknown argument {other}"))),
            }
        }
        Ok(args)
    }

    fn trigger_options(&self) -> IoOptions {
        if self.level {
            IoOptions::new().level()
        } else {
            IoOptions::new().edge()
        }
    }
}

/// The first address `HOST:PORT` resolves to (a literal address, or a name such as
/// `localhost:7000`).
fn resolve(value: &str) -> io::Result<SocketAddr> {
    value
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "the name resolves to no address"))
}
