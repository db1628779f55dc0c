//! A small daemon driven by signals, with a child process watched through a pidfd.
//!
//! ```text
//! cargo run --example signals
//! ```
//!
//! Prints `ready pid=<PID>` once its handlers are installed, then:
//! * `SIGUSR1` prints a `metrics ...` line;
//! * `SIGHUP` prints `reload`;
//! * `SIGTERM` or `SIGINT` start a graceful shutdown: stop accepting connections, let in-flight
//!   work (the child, if still running) finish, and exit 0 within one second.
//!
//! At start it spawns `sleep 0.2` and prints `child <PID> exited 0` when the watch reports it.
//! It also greets TCP clients on 127.0.0.1 (an ephemeral port, printed on stderr).

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use aioloop::mio::net::TcpListener;
use aioloop::signals::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use aioloop::{Direction, EventBase, Handlers, IoOptions};

const SIGNALS: [i32; 4] = [SIGUSR1, SIGHUP, SIGTERM, SIGINT];

struct Daemon {
    listener: TcpListener,
    shutting_down: bool,
}

type Base = EventBase<Daemon>;

fn main() {
    if let Some(arg) = std::env::args().nth(1) {
        eprintln!("signals: takes no arguments, got {arg:?}\nusage: signals");
        std::process::exit(2);
    }
    if let Err(e) = run() {
        eprintln!("signals: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    // Before any thread exists, so every thread inherits the mask.
    aioloop::block_signals(&SIGNALS)?;
    let mut base = Base::new()?;
    let listener = TcpListener::bind("127.0.0.1:0".parse().expect("valid literal"))?;
    eprintln!(
        "signals: greeting TCP clients on {}",
        listener.local_addr()?
    );
    base.set_io_handler(&listener, Direction::Read, IoOptions::new(), on_accept)?;

    let on_metrics = base.add_signal_handler(SIGUSR1, |base, _, _| {
        let m = base.metrics();
        println!(
            "metrics iterations={} polls={} callbacks={} fd_handlers={} timers={}",
            m.iterations, m.polls, m.callbacks, m.fd_handlers, m.timers
        );
    })?;
    let on_reload = base.add_signal_handler(SIGHUP, |_, _, _| println!("reload"))?;
    let on_term = base.add_signal_handler(SIGTERM, shutdown)?;
    let on_int = base.add_signal_handler(SIGINT, shutdown)?;
    // Signal handlers alone do not keep the daemon alive: its work does.
    for id in [on_metrics, on_reload, on_term, on_int] {
        base.set_signal_ref(id, false);
    }

    // Spawned through the base: the child starts with no signal blocked (this thread blocks
    // HUP, INT, USR1 and TERM for its signalfd).
    base.spawn_child(Command::new("sleep").arg("0.2"), |_, _, exit| {
        let code = exit
            .status
            .code()
            .map_or("killed".into(), |c| c.to_string());
        println!("child {} exited {code}", exit.pid);
    })?;

    println!("ready pid={}", std::process::id());
    let mut daemon = Daemon {
        listener,
        shutting_down: false,
    };
    base.run(&mut daemon)?;
    eprintln!("signals: shut down cleanly");
    Ok(())
}

fn on_accept(_: &mut Base, daemon: &mut Daemon, _: aioloop::IoEvent) {
    while let Ok((mut conn, _)) = daemon.listener.accept() {
        let _ = conn.write_all(b"hello\n");
    }
}

/// Stop taking new work, let what is in flight finish, and leave within a second regardless.
fn shutdown(base: &mut Base, daemon: &mut Daemon, info: aioloop::SignalInfo) {
    if daemon.shutting_down {
        return;
    }
    daemon.shutting_down = true;
    eprintln!(
        "signals: signal {} from pid {}: shutting down",
        info.signo, info.pid
    );
    base.remove_fd_handlers(&daemon.listener.as_raw_fd(), Handlers::ALL);
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_millis(900));
}
