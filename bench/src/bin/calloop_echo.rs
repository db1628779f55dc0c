//! The calloop echo server of `bench/echo_compare.sh`, written like the raw mio one: one
//! thread, edge-triggered `Generic` sources, reads until `WouldBlock` into one buffer shared
//! through the loop's data, writes back at once and keeps what the socket does not take.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin calloop_echo -- [ADDR]
//! ```

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};

use calloop::generic::Generic;
use calloop::{EventLoop, Interest, LoopHandle, Mode, PostAction};

struct Shared {
    buf: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    println!("listening {}", listener.local_addr()?);
    let mut event_loop = EventLoop::<Shared>::try_new().map_err(io::Error::other)?;
    let handle = event_loop.handle();
    let accepting = Generic::new(listener, Interest::READ, Mode::Edge);
    event_loop
        .handle()
        .insert_source(accepting, move |_, listener, _| {
            while let Ok((stream, _)) = listener.accept() {
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                serve(&handle, stream)?;
            }
            Ok(PostAction::Continue)
        })
        .map_err(|e| io::Error::other(e.error))?;
    let mut shared = Shared {
        buf: vec![0; 16 * 1024],
    };
    event_loop
        .run(None, &mut shared, |_| {})
        .map_err(io::Error::other)
}

/// Echoes on `stream` until it closes.
fn serve(handle: &LoopHandle<'static, Shared>, stream: TcpStream) -> io::Result<()> {
    let mut pending = Vec::new();
    let source = Generic::new(stream, Interest::BOTH, Mode::Edge);
    let echo = move |_, stream: &mut calloop::generic::NoIoDrop<TcpStream>, shared: &mut Shared| {
        let mut stream: &TcpStream = stream;
        let action = match echo(&mut stream, &mut pending, &mut shared.buf) {
            Ok(()) => PostAction::Continue,
            Err(_) => PostAction::Remove,
        };
        Ok(action)
    };
    handle
        .insert_source(source, echo)
        .map(drop)
        .map_err(|e| io::Error::other(e.error))
}

fn echo(stream: &mut &TcpStream, pending: &mut Vec<u8>, buf: &mut [u8]) -> io::Result<()> {
    flush(stream, pending)?;
    loop {
        match stream.read(buf) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                flush(stream, pending)?;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn flush(stream: &mut &TcpStream, pending: &mut Vec<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        match stream.write(pending) {
            Ok(n) => drop(pending.drain(..n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
