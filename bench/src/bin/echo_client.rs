//! Load client for the echo servers: N connections, each with one 64-byte message in flight.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin echo_client -- ADDR [CONNECTIONS] [SECONDS]
//! ```
//!
//! Prints `N connections, S s: R round trips/s (T in all)`: the rate after a one-second
//! warm-up, and every round trip since the connections were made (for CPU time per round
//! trip, measured on the server over the client's whole run). It runs on aioloop with
//! edge-triggered handlers, so it loads servers of either mode identically, and it is kept
//! lean (a short read means drained, one write per answer) so that it runs out of CPU after
//! the servers it measures, not before.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aioloop::{Direction, EventBase, IoEvent, IoOptions};

const MESSAGE: usize = 64;

struct Client {
    /// Connections by fd, with the bytes of the current answer received so far.
    conns: Vec<Option<(TcpStream, usize)>>,
    round_trips: u64,
}

fn on_readable(_: &mut EventBase<Client>, client: &mut Client, ev: IoEvent) {
    let Some(Some((stream, received))) = client.conns.get_mut(ev.fd as usize) else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => panic!("server closed a connection"),
            Ok(n) => {
                *received += n;
                if *received >= MESSAGE {
                    *received -= MESSAGE;
                    client.round_trips += 1;
                    stream.write_all(&[7u8; MESSAGE]).expect("send");
                }
                if n < buf.len() {
                    return; // a short read on a stream socket: drained
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7000".into());
    let connections: usize = args.next().map_or(100, |a| a.parse().expect("CONNECTIONS"));
    let seconds: u64 = args.next().map_or(10, |a| a.parse().expect("SECONDS"));
    let mut base = EventBase::<Client>::new()?;
    let mut client = Client {
        conns: Vec::new(),
        round_trips: 0,
    };
    for _ in 0..connections {
        let mut stream = TcpStream::connect(&addr)?;
        stream.set_nodelay(true)?;
        stream.write_all(&[7u8; MESSAGE])?;
        stream.set_nonblocking(true)?;
        base.set_io_handler(&stream, Direction::Read, IoOptions::new(), on_readable)?;
        let fd = stream.as_raw_fd() as usize;
        if client.conns.len() <= fd {
            client.conns.resize_with(fd + 1, || None);
        }
        client.conns[fd] = Some((stream, 0));
    }
    base.run_for(&mut client, Duration::from_secs(1))?;
    let (start, before) = (Instant::now(), client.round_trips);
    base.run_for(&mut client, Duration::from_secs(seconds))?;
    let rate = (client.round_trips - before) as f64 / start.elapsed().as_secs_f64();
    println!(
        "{connections} connections, {seconds} s: {rate:.0} round trips/s ({} in all)",
        client.round_trips
    );
    Ok(())
}
