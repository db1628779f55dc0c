//! The mio token of an fd registration: the fd number and a generation, packed in a word.
//!
//! The generation of an fd slot changes every time its registration is dropped, so an event for
//! an earlier registration of the same fd number no longer matches. The bit budget depends on
//! the pointer width, because a mio `Token` is a `usize`:
//!
//! | width | fd bits (largest fd) | generation bits | top bit |
//! |---|---|---|---|
//! | 64 | 31 (every `i32` fd) | 32 | always 0 |
//! | 32 | 20 (1,048,575: Linux's default `nr_open`) | 11 | always 0 |
//!
//! With the top bit always 0, no fd token can equal one of the internal sources' tokens, which
//! count down from `usize::MAX` (`source.rs`). A generation wraps around after `2^bits`
//! re-registrations of one fd number, and wrapping is only unsafe while a registration that
//! used the next value may still report events: the fd table skips such generations (see
//! `FdTable::retire`).

use std::os::fd::RawFd;

use mio::Token;

/// How a token splits into fd number and generation, for one pointer width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    fd_bits: u32,
    gen_bits: u32,
}

impl Layout {
    /// The layout for a `width`-bit `usize`.
    pub(crate) const fn for_width(width: u32) -> Layout {
        if width >= 64 {
            Layout {
                fd_bits: 31,
                gen_bits: 32,
            }
        } else {
            Layout {
                fd_bits: 20,
                gen_bits: 11,
            }
        }
    }

    /// The layout of this build.
    pub(crate) const NATIVE: Layout = Layout::for_width(usize::BITS);

    /// The largest fd number a token can carry.
    pub(crate) const fn max_fd(self) -> RawFd {
        ((1u64 << self.fd_bits) - 1) as RawFd
    }

    /// Generations run from 0 to `max_gen` and wrap.
    pub(crate) const fn max_gen(self) -> u32 {
        ((1u64 << self.gen_bits) - 1) as u32
    }

    /// The token value of `fd` (at most `max_fd`) at generation `gen` (at most `max_gen`).
    pub(crate) const fn encode(self, fd: RawFd, gen: u32) -> u64 {
        fd as u64 | (gen as u64) << self.fd_bits
    }

    /// The fd number and generation of a token value made by `encode`.
    pub(crate) const fn decode(self, value: u64) -> (RawFd, u32) {
        let fd = value & ((1u64 << self.fd_bits) - 1);
        (fd as RawFd, (value >> self.fd_bits) as u32)
    }
}

pub(crate) fn token(fd: RawFd, gen: u32) -> Token {
    Token(Layout::NATIVE.encode(fd, gen) as usize)
}

pub(crate) fn decode(token: Token) -> (RawFd, u32) {
    Layout::NATIVE.decode(token.0 as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;

    /// Both widths are checked on any host: the 32-bit layout is plain arithmetic.
    #[test]
    fn both_widths_round_trip_and_stay_below_the_reserved_tokens() {
        for width in [32, 64] {
            let layout = Layout::for_width(width);
            let word_max = if width == 64 {
                u64::MAX
            } else {
                u64::from(u32::MAX)
            };
            let lowest_reserved = word_max - (Source::RESERVED_TOKENS as u64 - 1);
            for fd in [0, 1, 7, layout.max_fd() - 1, layout.max_fd()] {
                for gen in [0, 1, layout.max_gen() - 1, layout.max_gen()] {
                    let value = layout.encode(fd, gen);
                    assert_eq!(layout.decode(value), (fd, gen), "width {width}");
                    assert!(value < lowest_reserved, "width {width}: {fd}/{gen}");
                    assert!(value <= word_max >> 1, "width {width}: top bit set");
                }
            }
        }
    }

    #[test]
    fn the_budget_matches_the_documented_table() {
        let wide = Layout::for_width(64);
        assert_eq!(wide.max_fd(), i32::MAX);
        assert_eq!(wide.max_gen(), u32::MAX);
        let narrow = Layout::for_width(32);
        assert_eq!(narrow.max_fd(), 1_048_575);
        assert_eq!(narrow.max_gen(), 2047);
    }

    #[test]
    fn native_tokens_never_name_an_internal_source() {
        let layout = Layout::NATIVE;
        let top = token(layout.max_fd(), layout.max_gen());
        assert_eq!(Source::from_token(top), None);
        assert_eq!(decode(top), (layout.max_fd(), layout.max_gen()));
    }
}
