//! Latency from `kill(getpid(), SIGUSR1)` to the start of the aioloop signal callback.
//!
//! ```text
//! cargo run --release -p aioloop-bench --bin signal_latency [SAMPLES]
//! ```
//!
//! Each sample: read the clock, `kill`, then `run_once` until the handler has run; the handler
//! reads the clock first thing. Also measures the raw floor the same way: `kill` +
//! `epoll_wait` + `read(signalfd)` without aioloop, interleaved with the aioloop samples.
//! The last line, `result M P FM FP`, gives the medians and p99s in nanoseconds, ours then
//! the floor's.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use aioloop::EventBase;

struct St {
    sent: Instant,
    latency: Option<Duration>,
}

fn kill_self() {
    // SAFETY: sending SIGUSR1, blocked in this (only) thread, to our own process.
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
}

/// kill + epoll_wait + read(signalfd), the floor from shared/research/limits.md.
struct Raw {
    epoll: RawFd,
    sfd: RawFd,
}

impl Raw {
    fn new() -> Raw {
        // SAFETY: plain syscalls on fds this struct owns; the sigset is initialised first.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            let sfd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            let epoll = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 0,
            };
            libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, sfd, &mut ev);
            Raw { epoll, sfd }
        }
    }

    fn sample(&self) -> Duration {
        let start = Instant::now();
        // SAFETY: as above; the buffers outlive the calls.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGUSR2);
            let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
            while libc::epoll_wait(self.epoll, ev.as_mut_ptr(), 4, -1) < 1 {}
            let mut info = [0u8; 128];
            libc::read(self.sfd, info.as_mut_ptr().cast(), 128);
        }
        start.elapsed()
    }
}

fn median_and_p99(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn main() -> std::io::Result<()> {
    let samples: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("SAMPLES"));
    aioloop::block_signals(&[libc::SIGUSR1, libc::SIGUSR2])?;
    let mut base = EventBase::<St>::new()?;
    base.add_signal_handler(libc::SIGUSR1, |_, st, _| {
        st.latency = Some(st.sent.elapsed())
    })?;
    let raw = Raw::new();
    let mut st = St {
        sent: Instant::now(),
        latency: None,
    };
    let (mut ours, mut floor) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for i in 0..samples + samples / 10 {
        st.latency = None;
        st.sent = Instant::now();
        kill_self();
        while st.latency.is_none() {
            base.run_once(&mut st, None)?;
        }
        let raw_sample = raw.sample();
        if i >= samples / 10 {
            ours.push(st.latency.unwrap());
            floor.push(raw_sample);
        }
    }
    let (m, p) = median_and_p99(&mut ours);
    let (fm, fp) = median_and_p99(&mut floor);
    println!(
        "{samples} samples (after {} warm-up), interleaved:",
        samples / 10
    );
    println!("aioloop kill -> callback:          median {m:?}, p99 {p:?}");
    println!("raw kill + epoll_wait + read(sfd): median {fm:?}, p99 {fp:?}");
    println!(
        "overhead: {:.2}x the raw floor",
        m.as_nanos() as f64 / fm.as_nanos() as f64
    );
    println!(
        "result {} {} {} {}",
        m.as_nanos(),
        p.as_nanos(),
        fm.as_nanos(),
        fp.as_nanos()
    );
    Ok(())
}
