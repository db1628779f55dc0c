//! Measurements of processes (CPU time, memory), the fd limit and the page cache.

use std::io;
use std::time::Duration;

/// User plus system CPU time of this process (all its threads) so far.
pub fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` outlives the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// This process's peak resident set size so far, in KiB (`ru_maxrss`).
pub fn peak_rss_kib() -> u64 {
    // SAFETY: as in `cpu_time`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` outlives the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64
}

/// This process's resident set size now, in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (status.lines())
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/PID/stat`, to the
/// kernel's clock tick (10 ms on most systems).
pub fn cpu_time_of(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: the fields follow its last ')'.
    let fields: Vec<&str> = (stat.rsplit_once(')').map_or("", |(_, rest)| rest))
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> io::Result<u64> {
        (fields.get(i).and_then(|f| f.parse().ok()))
            .ok_or_else(|| io::Error::other(format!("bad /proc/{pid}/stat")))
    };
    // utime and stime are fields 14 and 15; the list starts at field 3.
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(total * 1_000_000_000 / hz))
}

/// Drops the clean cached pages of `file` from the page cache, so that the next reads go to
/// the disk.
pub fn drop_cached_pages(file: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    // SAFETY: advice on an open fd; DONTNEED drops clean cached pages of the whole file.
    match unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Raises this process's soft fd limit to its hard limit, for 1,000-connection runs.
pub fn raise_fd_limit() -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` outlives both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
