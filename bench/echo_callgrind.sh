#!/usr/bin/env bash
# User-space instructions per round trip of an echo server, under callgrind (deterministic,
# unlike time): one connection, 64-byte ping-pong, two runs of 5,000 and 15,000 round trips;
# the difference divided by 10,000 leaves start-up and shutdown out.
# usage: bench/echo_callgrind.sh [SERVER...]
#   (default: aioloop, raw mio, tokio current_thread, calloop)
# A SERVER is a command line that listens on a port of its own choosing and prints
# `listening ADDR` on stdout once it accepts (pass it 127.0.0.1:0), as bench/report.sh's servers do.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
cargo build --release -q --example echo
cargo build --release -q -p aioloop-bench --bin pingpong --bin mio_echo --bin tokio_echo \
  --bin calloop_echo
addr=127.0.0.1:0
if [ $# -eq 0 ]; then
  set -- "./target/release/examples/echo --addr $addr" \
         "./target/release/mio_echo $addr" \
         "./target/release/tokio_echo $addr" \
         "./target/release/calloop_echo $addr"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for server in "$@"; do
  totals=()
  for n in 5000 15000; do
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$n" $server >"$out/stdout" 2>/dev/null &
    pid=$!
    listening=
    for _ in $(seq 300); do
      listening=$(sed -n 's/^listening //p' "$out/stdout")
      [ -n "$listening" ] && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$listening" ] || { echo "$server: never printed 'listening ADDR'" >&2; kill $pid 2>/dev/null; exit 1; }
    ./target/release/pingpong "$listening" $n
    sleep 0.3; kill -TERM $pid; wait $pid 2>/dev/null || true
    totals+=("$(awk '/^(summary|totals):/ { print $2; exit }' "$out/cg.$n")")
  done
  echo "$server: $(( (totals[1] - totals[0]) / 10000 )) instructions per round trip"
done
