//! N round trips of one 64-byte message on one connection, blocking: the fixed workload of
//! `bench/echo_callgrind.sh`, which counts a server's instructions per round trip.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin pingpong -- ADDR ROUND_TRIPS
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().expect("usage: pingpong ADDR ROUND_TRIPS");
    let n: u64 = args
        .next()
        .map_or(10_000, |a| a.parse().expect("ROUND_TRIPS"));
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    for _ in 0..n {
        conn.write_all(&buf)?;
        conn.read_exact(&mut buf)?;
    }
    Ok(())
}
