//! What the benchmark binaries share: process measurements (CPU time, memory, pinning),
//! sample statistics, the machine's description and hand-written SVG charts.
//!
//! The binaries under `src/bin/` each measure one thing and print plain lines; `report`
//! runs them all, round by round, and writes `docs/benchmarks.md` with its charts.

pub mod chart;
pub mod machine;
pub mod process;
pub mod stats;
