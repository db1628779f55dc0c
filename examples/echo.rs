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

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use aioloop::mio::net::TcpStream;
use aioloop::{
    tcp_listener, Direction, EventBase, Handlers, IoEvent, IoOptions, ListenOptions, TimerId,
    WriteStatus, WriterEvent, WriterId, WriterOptions,
};

/// Past this many unsent bytes a connection stops reading until its peer catches up.
const MAX_PENDING: usize = 1 << 20;

struct Server {
    /// Connections by fd number. Safe here because nothing of a connection outlives it: its
    /// handler and writer go in `close`, before its fd does (a server with late callbacks,
    /// such as file reads, needs a key with a generation: see `examples/fileserver`).
    conns: Vec<Option<Conn>>,
    /// Edge-triggered reads drain the socket; level-triggered ones read one buffer per call.
    edge: bool,
    read_options: IoOptions,
    /// How long a connection may stay silent, or not take its echo.
    idle: Option<Duration>,
    /// One read buffer for all connections, allocated once (not zeroed per event).
    buf: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    writer: WriterId,
    /// Reading stopped because the peer is not taking its echo (back-pressure); the timer
    /// closes the connection if that lasts the idle timeout.
    paused: Option<Option<TimerId>>,
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
    let listener = tcp_listener(args.addr, &ListenOptions::new())?;
    let addr = listener.local_addr()?;
    let mut base = Base::new()?;
    // Drains the accept queue, and survives running out of fds without spinning or stalling.
    base.accept_connections(listener, |base, server, stream, _| {
        if let Err(e) = open(base, server, stream) {
            eprintln!("dropping connection: {e}");
        }
    })?;
    let trigger = if args.level { "level" } else { "edge" };
    let mut server = Server {
        conns: Vec::new(),
        edge: !args.level,
        read_options: with_idle_timeout(args.trigger_options(), args.idle_timeout),
        idle: args.idle_timeout,
        buf: vec![0; 16 * 1024],
    };
    eprintln!(
        "echo: {trigger}-triggered handlers, idle timeout {:?}",
        args.idle_timeout
    );
    println!("listening {addr}");
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

fn open(base: &mut Base, server: &mut Server, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let fd = stream.as_raw_fd();
    let options = WriterOptions::new().high_water(MAX_PENDING);
    let writer = base.add_writer(&fd, options, move |base, server, event| {
        on_writer(base, server, fd, event)
    })?;
    if let Err(e) = base.set_io_handler(&fd, Direction::Read, server.read_options, on_readable) {
        base.remove_writer(writer);
        return Err(e);
    }
    let slot = fd as usize;
    if slot >= server.conns.len() {
        server.conns.resize_with(slot + 1, || None);
    }
    server.conns[slot] = Some(Conn {
        stream,
        writer,
        paused: None,
    });
    Ok(())
}

fn conn(server: &mut Server, fd: RawFd) -> Option<&mut Conn> {
    server.conns.get_mut(fd as usize)?.as_mut()
}

fn on_readable(base: &mut Base, server: &mut Server, ev: IoEvent) {
    if ev.ready.is_timeout() {
        return close(base, server, ev.fd);
    }
    let (edge, buf) = (server.edge, &mut server.buf);
    let Some(conn) = server
        .conns
        .get_mut(ev.fd as usize)
        .and_then(Option::as_mut)
    else {
        return;
    };
    loop {
        let n = match conn.stream.read(buf) {
            Ok(0) => {
                // The peer is done: close once its echo is out.
                base.remove_fd_handlers(&ev.fd, Handlers::READ);
                let _ = base.finish_writer(conn.writer);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return close(base, server, ev.fd),
        };
        match base.write(conn.writer, &buf[..n]) {
            Ok(WriteStatus::Open) => {}
            Ok(WriteStatus::Full) => {
                let fd = ev.fd;
                let stuck = server.idle.map(|idle| {
                    base.add_timer(idle, move |base, server, _| close(base, server, fd))
                });
                conn.paused = Some(stuck);
                base.remove_fd_handlers(&fd, Handlers::READ);
                return;
            }
            Err(_) => return close(base, server, ev.fd),
        }
        // Level-triggered: one buffer per call is enough, the loop calls again while ready.
        // Edge-triggered: a short read drained the socket (new data makes a new edge), so
        // the read that would only say WouldBlock is skipped.
        if !edge || n < buf.len() {
            return;
        }
    }
}

fn on_writer(base: &mut Base, server: &mut Server, fd: RawFd, event: WriterEvent) {
    match event {
        WriterEvent::Drained => {
            let options = server.read_options;
            if let Some(stuck) = conn(server, fd).and_then(|c| c.paused.take()) {
                if let Some(timer) = stuck {
                    base.cancel_timer(timer);
                }
                let _ = base.set_io_handler(&fd, Direction::Read, options, on_readable);
            }
        }
        _ => close(base, server, fd), // finished, or the peer is gone
    }
}

fn close(base: &mut Base, server: &mut Server, fd: RawFd) {
    let Some(conn) = server.conns.get_mut(fd as usize).and_then(Option::take) else {
        return;
    };
    base.remove_fd_handlers(&fd, Handlers::ALL);
    base.remove_writer(conn.writer);
    if let Some(Some(timer)) = conn.paused {
        base.cancel_timer(timer);
    }
    // `conn` drops here, closing the fd after its handler and writer are gone.
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
