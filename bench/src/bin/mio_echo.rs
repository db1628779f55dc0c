//! The textbook raw mio echo server, the floor aioloop's `examples/echo` is measured against.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin mio_echo -- [ADDR]
//! ```
//!
//! One thread, one `mio::Poll`, edge-triggered: on a readable event it reads until `WouldBlock`
//! into one reused buffer and writes everything back at once, keeping what the socket does not
//! take until it is writable. Connections live in a `Vec` indexed by token. Prints
//! `listening <addr>` once it accepts.

use std::io::{self, ErrorKind, Read, Write};

use aioloop::mio::net::{TcpListener, TcpStream};
use aioloop::mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let mut listener = TcpListener::bind(addr.parse().map_err(io::Error::other)?)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening {}", listener.local_addr()?);
    let mut events = Events::with_capacity(256);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    let slot = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    poll.registry()
                        .register(&mut stream, Token(slot), interest)?;
                    conns[slot] = Some(Conn {
                        stream,
                        pending: Vec::new(),
                    });
                }
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns[slot].as_mut() else {
                continue;
            };
            if serve(conn, &mut buf).is_err() {
                if let Some(mut conn) = conns[slot].take() {
                    poll.registry().deregister(&mut conn.stream)?;
                }
                free.push(slot);
            }
        }
    }
}

/// Reads until `WouldBlock`, echoing as it goes; `Err` closes the connection.
fn serve(conn: &mut Conn, buf: &mut [u8]) -> io::Result<()> {
    flush(conn)?;
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                conn.pending.extend_from_slice(&buf[..n]);
                flush(conn)?;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn flush(conn: &mut Conn) -> io::Result<()> {
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(n) => drop(conn.pending.drain(..n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
