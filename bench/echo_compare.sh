#!/usr/bin/env bash
# Echo throughput, 64-byte ping-pong, servers alternating round by round in one run:
# examples/echo edge- and level-triggered, the raw mio loop (bench/src/bin/mio_echo.rs), and
# the peers: tokio current_thread (tokio_echo.rs) and calloop (calloop_echo.rs).
# Set OLD_ECHO=/path/to/an/older/echo to add that binary (e.g. main's, before a change).
# The server runs on CPU 0, the client on CPU 1.
# usage: bench/echo_compare.sh [ROUNDS] [CONNECTIONS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} conns=${2:-100} secs=${3:-10} port=61999
cargo build --release -q --example echo
cargo build --release -q -p aioloop-bench --bin echo_client --bin mio_echo --bin tokio_echo \
  --bin calloop_echo
declare -A servers=(
  [aioloop-edge]="./target/release/examples/echo --addr 127.0.0.1:$port"
  [aioloop-level]="./target/release/examples/echo --level --addr 127.0.0.1:$port"
  [mio-raw]="./target/release/mio_echo 127.0.0.1:$port"
  [tokio]="./target/release/tokio_echo 127.0.0.1:$port"
  [calloop]="./target/release/calloop_echo 127.0.0.1:$port"
)
order=(mio-raw aioloop-edge aioloop-level tokio calloop)
if [ -n "${OLD_ECHO:-}" ]; then
  servers[old-edge]="$OLD_ECHO --addr 127.0.0.1:$port"
  order+=(old-edge)
fi
for round in $(seq "$rounds"); do
  for name in "${order[@]}"; do
    taskset -c 0 ${servers[$name]} >/dev/null 2>&1 &
    server=$!
    sleep 0.3
    result=$(taskset -c 1 ./target/release/echo_client 127.0.0.1:$port "$conns" "$secs")
    echo "round $round $name: $result"
    kill "$server"; wait "$server" 2>/dev/null || true
  done
done
