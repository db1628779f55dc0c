//! What the benchmark binaries share: process measurements (CPU time, memory, pinning),
//! sample statistics, the machine's description and hand-written SVG charts.
//!
//! The binaries under `src/bin/` each measure one thing and print plain lines; `report`
//! runs them all, round by round, and writes `docs/benchmarks.md` with its charts.

pub mod chart;
pub mod machine;
pub mod process;
pub mod stats;

/// The next number of a xorshift64 sequence (never 0 from a non-zero state): fast, and the
/// same sequence for every contender that starts from the same seed.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
