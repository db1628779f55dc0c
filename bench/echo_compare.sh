#!/usr/bin/env bash
# Echo throughput of examples/echo.rs, edge- vs level-triggered, alternating, in one run.
# usage: bench/echo_compare.sh [ROUNDS] [CONNECTIONS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} conns=${2:-100} secs=${3:-10} port=47999
cargo build --release -q --example echo
cargo build --release -q -p aioloop-bench --bin echo_client
for round in $(seq "$rounds"); do
  for mode in edge level; do
    flag=""; [ "$mode" = level ] && flag=--level
    ./target/release/examples/echo --addr 127.0.0.1:$port $flag >/dev/null 2>&1 &
    server=$!
    sleep 0.3
    echo "round $round $mode: $(./target/release/echo_client 127.0.0.1:$port "$conns" "$secs")"
    kill "$server"; wait "$server" 2>/dev/null || true
  done
done
