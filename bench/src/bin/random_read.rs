//! Random `O_DIRECT` reads through `EventBase::read_at`, a fixed number in flight, for a
//! fixed time: the aioloop side of `bench/random_vs_fio.sh`.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin random_read -- FILE [DEPTH] [SECONDS] [BLOCK]
//! ```
//!
//! Defaults: depth 32, 5 seconds, 4096-byte blocks at block-aligned offsets drawn uniformly
//! (xorshift) over the file. Each completion submits the next read from its callback, with
//! the buffer it got back. Prints `iops N mb/s X`.

use std::time::{Duration, Instant};

use aioloop::{AioFile, AioOptions, AlignedBuf, EventBase};

struct Reader {
    file: AioFile,
    blocks: u64,
    block: usize,
    rng: u64,
    until: Instant,
    done: u64,
}

impl Reader {
    fn next_offset(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % self.blocks) * self.block as u64
    }
}

fn submit(base: &mut EventBase<Reader>, reader: &mut Reader, buf: AlignedBuf) {
    let offset = reader.next_offset();
    let file = reader.file.clone();
    let submitted = base.read_at(&file, offset, buf, |base, reader, buf, n| {
        assert_eq!(n.expect("read failed"), reader.block);
        reader.done += 1;
        if base.now() < reader.until {
            submit(base, reader, buf);
        }
    });
    if let Err(e) = submitted {
        panic!("read_at refused: {}", e.error());
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: random_read FILE [DEPTH] [SECONDS] [BLOCK]");
    let depth: u32 = args.next().map_or(32, |a| a.parse().expect("DEPTH"));
    let seconds: f64 = args.next().map_or(5.0, |a| a.parse().expect("SECONDS"));
    let block: usize = args.next().map_or(4096, |a| a.parse().expect("BLOCK"));
    let file = AioFile::open(&path, true)?;
    let blocks = file.file().metadata()?.len() / block as u64;
    let mut base = EventBase::<Reader>::new()?;
    base.set_aio_options(AioOptions::new().max_in_flight(depth))?;
    let started = Instant::now();
    let mut reader = Reader {
        file,
        blocks,
        block,
        rng: 0x9e37_79b9_7f4a_7c15,
        until: started + Duration::from_secs_f64(seconds),
        done: 0,
    };
    for _ in 0..depth {
        submit(&mut base, &mut reader, AlignedBuf::new(block, 4096)?);
    }
    base.set_exit_when_empty(true);
    base.run(&mut reader)?;
    let secs = started.elapsed().as_secs_f64();
    let iops = reader.done as f64 / secs;
    println!("iops {iops:.0} mb/s {:.1}", iops * block as f64 / 1e6);
    eprintln!("{:?}", base.metrics());
    Ok(())
}
