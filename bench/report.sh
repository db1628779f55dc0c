#!/usr/bin/env bash
# Runs every benchmark against its peers and writes docs/benchmarks.md with its charts
# (docs/bench/*.svg); --quick is the CI-sized check, written to target/bench-quick/.
# usage: bench/report.sh [--quick] [--rounds N] [--seconds S] [--out DIR] [--only SECTIONS]
#   (see bench/src/bin/report/main.rs)
# Needs root for the FUSE rows of never-block; installs fio and valgrind if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
for tool in fio valgrind taskset; do
  command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  apt-get update && apt-get install -y ${missing/taskset/util-linux}
fi
cargo build --release -q --example echo
cargo build --release -q -p aioloop-bench --bins
# The target directory may be elsewhere (CARGO_TARGET_DIR); outputs go under this checkout.
target=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
AIOLOOP_ROOT=$(pwd) exec "$target/release/report" "$@"
