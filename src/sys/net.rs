//! Socket calls that std and mio do not offer: a listening TCP socket with a chosen backlog and
//! `SO_REUSEPORT`; accept, shutdown and the fd budget for the accept loop and connections.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use super::check;

/// A non-blocking, close-on-exec TCP socket bound to `addr` (with `SO_REUSEADDR`, and
/// `SO_REUSEPORT` if `reuse_port`) and listening with `backlog`.
pub(crate) fn tcp_listen(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket takes three ints and returns a new fd or -1.
    let fd = check(unsafe { libc::socket(domain, kind, 0) }.into())?;
    // SAFETY: the fd is new and owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    set_flag(&socket, libc::SO_REUSEADDR)?;
    if reuse_port {
        set_flag(&socket, libc::SO_REUSEPORT)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a sockaddr of `len` bytes for the socket's family.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    check(bound.into())?;
    // SAFETY: listen takes an fd and an int.
    check(unsafe { libc::listen(socket.as_raw_fd(), backlog) }.into())?;
    Ok(socket)
}

/// Sets a boolean `SOL_SOCKET` option.
fn set_flag(socket: &OwnedFd, option: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the value is a c_int that outlives the call, with its size.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(ret.into()).map(drop)
}

/// `addr` as a C socket address and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the family-specific view written below
    // fits inside it (that is what sockaddr_storage is for).
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage, whose alignment is larger.
            unsafe {
                (&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage, whose alignment is larger.
            unsafe {
                (&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// `accept4(2)` on the listening socket `fd`: a new non-blocking, close-on-exec connection.
pub(crate) fn accept(fd: RawFd) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: null address and length pointers ask for no peer address.
    let new = check(unsafe { libc::accept4(fd, ptr::null_mut(), ptr::null_mut(), flags) }.into())?;
    // SAFETY: the fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new as i32) })
}

/// Sets `O_NONBLOCK` on `fd` (`fcntl(F_SETFL)`), keeping its other status flags.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer argument.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) }.into())?;
    if flags as libc::c_int & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: F_SETFL takes an int of flags.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags as libc::c_int | libc::O_NONBLOCK) }.into())
        .map(drop)
}

/// `recv(2)` into `buf`: the count read, 0 at the end of the stream.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// `shutdown(fd, SHUT_WR)`: the peer reads the end of the stream after what was sent.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes two ints.
    check(unsafe { libc::shutdown(fd, libc::SHUT_WR) }.into()).map(drop)
}

/// The `RLIMIT_NOFILE` soft limit and the lowest free fd number (Linux hands out the lowest
/// free number, so every number below it is taken: at most `limit - lowest` more fds can be
/// opened). `probe` is any open fd, duplicated once (and closed) to find that number.
pub(crate) fn fd_budget(probe: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero rlimit is valid for the kernel to fill.
    let mut limit: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: `limit` outlives the call.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }.into())?;
    // SAFETY: F_DUPFD_CLOEXEC makes a new fd or fails; it is owned (and closed) below.
    let dup = check(unsafe { libc::fcntl(probe, libc::F_DUPFD_CLOEXEC, 0) }.into())?;
    // SAFETY: the fd is new and owned by nobody else.
    drop(unsafe { OwnedFd::from_raw_fd(dup as i32) });
    Ok((limit.rlim_cur, dup as u64))
}

/// Whether `fd` has `O_NONBLOCK` (`fcntl(F_GETFL)`); `EBADF` if it is not open.
pub(crate) fn is_nonblocking(fd: RawFd) -> io::Result<bool> {
    // SAFETY: F_GETFL takes no pointer argument; a bad fd number only gives EBADF.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) }.into())?;
    Ok(flags as libc::c_int & libc::O_NONBLOCK != 0)
}

/// Sets `TCP_NODELAY` on the socket `fd` (an error on a socket that is not TCP).
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the value is a c_int that outlives the call, with its size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(ret.into()).map(drop)
}

/// The bytes in the send queue of the socket `fd` that its peer has not acknowledged yet
/// (`ioctl(SIOCOUTQ)`).
pub(crate) fn unsent(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int, which outlives the call.
    check(unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) }.into())?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Refuses a socket that cannot carry a connection: a listening one, or one that is not a
/// stream (`SO_ACCEPTCONN`, `SO_TYPE`). An fd that is not a socket (a pipe) passes.
pub(crate) fn check_stream(fd: RawFd) -> io::Result<()> {
    let refuse = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()));
    match int_option(fd, libc::SO_ACCEPTCONN) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => Ok(()),
        Err(e) => Err(e),
        Ok(0) => match int_option(fd, libc::SO_TYPE)? {
            libc::SOCK_STREAM => Ok(()),
            _ => {
                refuse("not a stream socket (a datagram or packet socket): connections are streams")
            }
        },
        Ok(_) => {
            refuse("a listening socket, not a connection: serve or accept_connections takes it")
        }
    }
}

/// An int-valued `SOL_SOCKET` option of `fd`.
fn int_option(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` outlive the call, and `len` is `value`'s size.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    check(ret.into()).map(|_| value)
}
