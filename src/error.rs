//! Errors that say what went wrong and what to do, without hiding the OS error.

use std::error::Error;
use std::fmt;
use std::io;

/// An OS error with a sentence of context in front of it.
#[derive(Debug)]
struct Context {
    what: String,
    source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// Wraps `source` with `what`, keeping its [`io::ErrorKind`]. The original error, with its
/// errno, stays reachable through [`Error::source`] and [`os_error`].
pub(crate) fn context(source: io::Error, what: impl Into<String>) -> io::Error {
    io::Error::new(
        source.kind(),
        Context {
            what: what.into(),
            source,
        },
    )
}

/// The errno behind an error made by this crate, or by the OS directly.
///
/// ```
/// let err = std::io::Error::from_raw_os_error(libc::EBADF);
/// assert_eq!(aioloop::os_error(&err), Some(libc::EBADF));
/// ```
pub fn os_error(err: &io::Error) -> Option<i32> {
    err.raw_os_error().or_else(|| {
        err.get_ref()?
            .downcast_ref::<Context>()
            .and_then(|c| os_error(&c.source))
    })
}
