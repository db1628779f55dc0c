//! When no kernel AIO context can be made (`aio-max-nr` reached; provoked here with a seccomp
//! filter that answers `io_setup` with `EAGAIN` in a forked child, since the system-wide limit
//! is shared and must not be touched), `O_DIRECT` reads and writes and syncs run on the helpers
//! instead of failing.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use aioloop::{AioFile, AlignedBuf, EventBase};

mod common;

/// Makes every later `io_setup` of this process fail with `EAGAIN`, as when `aio-max-nr` is
/// reached.
fn refuse_io_setup() {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let mut filter = [
        libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        }, // seccomp_data.nr
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_setup as u32,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EAGAIN as u32,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; the program outlives the call that installs it.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program),
            0
        );
    }
}

#[derive(Default)]
struct Seen {
    read: Option<bool>,
    written: Option<usize>,
    synced: Option<bool>,
}

#[test]
fn o_direct_requests_fall_back_to_helpers_when_no_aio_context_can_be_made() {
    let (path, data) = common::data_file("no-context", 1 << 20);
    let written = PathBuf::from(&path);
    // SAFETY: the child only runs the base below and `_exit`s, bounded by an alarm.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: async-signal-safe.
        unsafe { libc::alarm(20) };
        let code = std::panic::catch_unwind(|| child(&written, &data)).unwrap_or(90);
        // SAFETY: ends the child without the parent's atexit handlers.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child killed: {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "10+n: check n failed; 20: refused; 90: panic"
    );
}

fn child(path: &PathBuf, data: &[u8]) -> i32 {
    refuse_io_setup();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let file = AioFile::new(file).unwrap();
    let mut base = EventBase::<Seen>::new().unwrap();
    let want = data[..64 << 10].to_vec();
    let read = base.read_at(
        &file,
        0,
        AlignedBuf::new(64 << 10, 4096).unwrap(),
        move |_, seen, buf, n| {
            seen.read = Some(n.is_ok_and(|n| n == buf.len()) && buf[..] == want[..])
        },
    );
    let mut block = AlignedBuf::new(4096, 4096).unwrap();
    block.fill(b'z');
    let write = base.write_at(&file, 1 << 20, block, |_, seen, _, n| seen.written = n.ok());
    let sync = base.fsync(&file, |_, seen, r| seen.synced = Some(r.is_ok()));
    if read.is_err() || write.is_err() || sync.is_err() {
        return 20;
    }
    base.set_exit_when_empty(true);
    base.exit_after(Duration::from_secs(10));
    let mut seen = Seen::default();
    base.run(&mut seen).unwrap();
    let on_file = std::fs::read(path).unwrap();
    let checks = [
        seen.read == Some(true),
        seen.written == Some(4096) && on_file.len() == (1 << 20) + 4096,
        seen.synced == Some(true),
        base.metrics().aio_on_helpers >= 3 && base.metrics().aio_submit_calls == 0,
    ];
    match checks.iter().position(|ok| !ok) {
        None => 0,
        Some(i) => 10 + i as i32,
    }
}
