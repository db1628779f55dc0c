//! A TCP echo server on one event base, with an idle-connection timeout.
//!
//! ```text
//! cargo run --release --example echo -- [--addr HOST:PORT] [--idle-timeout SECS]
//! ```
//!
//! Prints `listening <addr>` once it accepts connections (`--addr 127.0.0.1:0` picks a free
//! port; the default is `127.0.0.1:7000`; a host name such as `localhost:7000` is resolved).
//! Every byte received is written back on the same connection; once the peer has sent its
//! last byte (`nc -N`), the connection closes after the echo is out. A connection that makes
//! no progress for the idle timeout (default 60 s; 0 turns it off), silent or not taking its
//! echo, is closed. Talk to it with `nc 127.0.0.1 7000`; stop it with Ctrl-C. Errors name what
//! failed: a bad argument exits 2, any other failure 1.
//!
//! Each connection is an [`aioloop::ConnId`]: the base owns its socket, reads into one buffer
//! shared by all, queues what the peer does not take yet, stops reading while more than 1 MiB
//! waits (back-pressure) and closes the socket, its queue and its timers together.

use std::io::{self, ErrorKind, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use aioloop::{tcp_listener, ConnEvent, ConnId, ConnOptions, EventBase, ListenOptions};

/// Past this many unsent bytes a connection stops reading until its peer catches up.
const MAX_PENDING: usize = 1 << 20;

const USAGE: &str = "usage: echo [--addr HOST:PORT] [--idle-timeout SECS]";

fn main() {
    let args = Args::parse().unwrap_or_else(|e| {
        eprintln!("echo: {e}");
        std::process::exit(2)
    });
    if let Err(e) = run(args) {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> io::Result<()> {
    let listener = tcp_listener(args.addr, &ListenOptions::new())?;
    let addr = listener.local_addr()?;
    let mut base = EventBase::new()?;
    let mut options = ConnOptions::new().high_water(MAX_PENDING).nodelay(true);
    if let Some(idle) = args.idle_timeout {
        options = options.idle_timeout(idle);
    }
    // Accepts (surviving running out of fds without spinning), and makes each a connection.
    base.serve(listener, options, on_event)?;
    match args.idle_timeout {
        Some(idle) => eprintln!("echo: idle timeout {} s", idle.as_secs_f64()),
        None => eprintln!("echo: no idle timeout"),
    }
    println!("listening {addr}");
    io::stdout().flush()?;
    base.run(&mut ())
}

/// Everything a connection needs: echo what comes, finish when the peer is done. An idle
/// timeout closes it by default; a failure closes it and says so in `Closed`.
fn on_event(base: &mut EventBase<()>, _: &mut (), id: ConnId, event: ConnEvent<'_>) {
    match event {
        ConnEvent::Data(bytes) => drop(base.conn_write(id, bytes)),
        ConnEvent::PeerShutdown => drop(base.conn_finish(id)),
        _ => {}
    }
}

struct Args {
    addr: SocketAddr,
    /// `None`: no idle timeout.
    idle_timeout: Option<Duration>,
}

impl Args {
    fn parse() -> io::Result<Args> {
        let bad =
            |what: String| io::Error::new(ErrorKind::InvalidInput, format!("{what}\n{USAGE}"));
        let mut args = Args {
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
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
}

/// The first address `HOST:PORT` resolves to (a literal address, or a name such as
/// `localhost:7000`).
fn resolve(value: &str) -> io::Result<SocketAddr> {
    value
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "the name resolves to no address"))
}
