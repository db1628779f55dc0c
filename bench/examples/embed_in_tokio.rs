//! Drives an aioloop base from inside a tokio runtime: the recipe of "Liveness and
//! embedding" in `docs/architecture.md`.
//!
//! ```text
//! cargo run -p aioloop-bench --example embed_in_tokio
//! ```
//!
//! The base's epoll fd (a duplicate of it) goes into tokio's reactor through `AsyncFd`; the task that owns the
//! base waits until that fd is readable or the base's `next_timeout()` elapses, then runs one
//! iteration with `run_once(state, Some(Duration::ZERO))`, which never blocks. Everything the
//! base does keeps working inside tokio: here an aioloop TCP echo server answers a tokio
//! client, an aioloop timer ticks, and a file read completes, all on tokio's one thread.
//! Prints what happened and exits 0; any failure exits 1.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Duration;

use aioloop::{tcp_listener, AioFile, ConnEvent, ConnOptions, EventBase, ListenOptions, Schedule};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the aioloop side saw.
#[derive(Default, Debug)]
struct State {
    echoed: usize,
    ticks: u32,
    file_head: Vec<u8>,
}

/// Runs `base` inside tokio until `done(state)` holds: the embedding loop itself.
async fn drive<S>(
    base: &mut EventBase<S>,
    state: &mut S,
    done: impl Fn(&S) -> bool,
) -> io::Result<()> {
    // A duplicate of the base's epoll fd (the same epoll instance), owned by the `AsyncFd`.
    let epoll = base.as_fd().try_clone_to_owned()?;
    // SAFETY: the `AsyncFd` owns `epoll`, so the fd stays open and the same for its whole
    // life, as `register_with_interest` requires.
    let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    while !done(state) {
        match base.next_timeout() {
            Some(Duration::ZERO) => {} // work is owed: run it now
            // A timer is due then; an event may come first.
            Some(wait) => {
                if let Ok(ready) = tokio::time::timeout(wait, epoll.readable()).await {
                    ready?.clear_ready();
                }
            }
            None => epoll.readable().await?.clear_ready(), // only an event can wake it
        }
        // The readiness was cleared *before* the base drains its events: one that arrives
        // after `run_once` polled makes the fd readable again and wakes `readable()`.
        base.run_once(state, Some(Duration::ZERO))?;
    }
    Ok(())
}

/// The example proper: returns what the aioloop side saw.
fn run() -> io::Result<State> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut base = EventBase::<State>::new()?;

        // An aioloop echo server...
        let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), &ListenOptions::new())?;
        let addr = listener.local_addr()?;
        base.serve(
            listener,
            ConnOptions::new(),
            |base, st: &mut State, conn, event| match event {
                ConnEvent::Data(bytes) => {
                    st.echoed += bytes.len();
                    let _ = base.conn_write(conn, bytes);
                }
                ConnEvent::PeerShutdown => drop(base.conn_finish(conn)),
                _ => {}
            },
        )?;
        // ... an aioloop timer ...
        base.add_repeating_timer(
            Duration::from_millis(5),
            Schedule::FixedRate,
            |b, st, me| {
                st.ticks += 1;
                if st.ticks == 3 {
                    b.cancel_timer(me);
                }
            },
        );
        // ... and an aioloop file read.
        let file = AioFile::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"), false)?;
        base.read_at(&file, 0, vec![0; 9], |_, st, buf, n| {
            st.file_head = buf[..n.unwrap_or(0)].to_vec();
        })?;

        // A tokio client of the aioloop server, on the same thread.
        let answer = Rc::new(RefCell::new(None));
        let client = {
            let answer = answer.clone();
            tokio::task::spawn_local(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await?;
                stream.write_all(b"hello from tokio").await?;
                stream.shutdown().await?;
                let mut back = Vec::new();
                stream.read_to_end(&mut back).await?;
                *answer.borrow_mut() = Some(back);
                io::Result::Ok(())
            })
        };

        let mut state = State::default();
        let all_done =
            |st: &State| st.ticks == 3 && !st.file_head.is_empty() && answer.borrow().is_some();
        tokio::time::timeout(
            Duration::from_secs(30),
            drive(&mut base, &mut state, all_done),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the embedded loop stalled"))??;
        client.await.map_err(io::Error::other)??;
        assert_eq!(answer.borrow().as_deref(), Some(&b"hello from tokio"[..]));
        Ok(state)
    })
}

fn main() {
    match run() {
        Ok(state) => println!(
            "echoed {} bytes, {} timer ticks, file starts with {:?}",
            state.echoed,
            state.ticks,
            String::from_utf8_lossy(&state.file_head)
        ),
        Err(e) => {
            eprintln!("embed_in_tokio: {e}");
            std::process::exit(1);
        }
    }
}

#[test]
fn an_aioloop_base_runs_inside_a_tokio_runtime() {
    let state = run().unwrap();
    assert_eq!(state.echoed, b"hello from tokio".len());
    assert_eq!(state.ticks, 3);
    assert_eq!(state.file_head, b"[package]");
}
