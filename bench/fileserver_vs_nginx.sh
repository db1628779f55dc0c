#!/usr/bin/env bash
# examples/fileserver against nginx, same files, same wrk load, contenders alternating round
# by round in one run. Requests/s and wrk's p99 latency, median of the rounds.
#
# usage: bench/fileserver_vs_nginx.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# Servers are pinned to CPU 0 (both CPUs for the two-thread/two-worker rows) and wrk to CPU 1,
# one wrk thread. Both servers write an access-log line per request to a file in the scratch
# directory; nginx runs with `worker_processes 1` (2 for its two-worker row), keep-alive on,
# `sendfile` off and on; the file server runs with one loop (`--threads 1`) and two.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} secs=${2:-5} conns=${3:-100}
for tool in wrk nginx taskset; do
  command -v $tool >/dev/null || { apt-get update && apt-get install -y wrk nginx util-linux; break; }
done
cargo build --release -q --example fileserver
work=$(mktemp -d /tmp/aioloop-fileserver-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir -p "$work/root"
head -c 4096 /dev/urandom > "$work/root/4k.bin"
head -c 1048576 /dev/urandom > "$work/root/1m.bin"
chmod -R a+rX "$work/root"

nginx_conf() { # WORKERS SENDFILE PORT
  cat > "$work/nginx-$1-$2.conf" <<EOF
worker_processes $1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log $work/nginx-access.log;
  sendfile $2;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$3; root $work/root; }
}
EOF
  echo "$work/nginx-$1-$2.conf"
}

port=18080
start() { # NAME -> sets pid and url
  port=$((port + 1))
  case $1 in
    aioloop-1) taskset -c 0 ./target/release/examples/fileserver --addr 127.0.0.1:$port \
                 --root "$work/root" --log "$work/aioloop-access.log" > /dev/null & ;;
    aioloop-2) taskset -c 0,1 ./target/release/examples/fileserver --addr 127.0.0.1:$port \
                 --root "$work/root" --log "$work/aioloop-access.log" --threads 2 > /dev/null & ;;
    nginx-1-off) taskset -c 0 nginx -c "$(nginx_conf 1 off $port)" & ;;
    nginx-1-on) taskset -c 0 nginx -c "$(nginx_conf 1 on $port)" & ;;
    nginx-2-on) taskset -c 0,1 nginx -c "$(nginx_conf 2 on $port)" & ;;
  esac
  pid=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/4k.bin" && return
    sleep 0.05
  done
  echo "$1 did not start" >&2; exit 1
}

contenders="aioloop-1 nginx-1-off nginx-1-on aioloop-2 nginx-2-on"
results="$work/results"
echo "fileserver vs nginx: $rounds rounds of ${secs}s, $conns connections, wrk -t1 on CPU 1; $(uname -r), $(nproc) CPUs"
for round in $(seq "$rounds"); do
  for file in 4k.bin 1m.bin; do
    for who in $contenders; do
      start "$who"
      out=$(taskset -c 1 wrk -t 1 -c "$conns" -d "$secs" --latency "http://127.0.0.1:$port/$file")
      kill "$pid"; wait "$pid" 2>/dev/null || true
      rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
      p99=$(echo "$out" | awk '$1 == "99%" { print $2 }')
      errors=$(echo "$out" | grep -c -E 'Socket errors|Non-2xx' || true)
      echo "round $round $file $who rps $rps p99 $p99 errors $errors" | tee -a "$results"
    done
  done
done

echo
echo "| file | server | requests/s (median) | p99 latency (median) | ratio to aioloop, 1 thread |"
echo "|---|---|---|---|---|"
for file in 4k.bin 1m.bin; do
  base=$(awk -v f=$file '$3 == f && $4 == "aioloop-1" { print $6 }' "$results" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  for who in $contenders; do
    rps=$(awk -v f=$file -v w=$who '$3 == f && $4 == w { print $6 }' "$results" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    p99=$(awk -v f=$file -v w=$who '$3 == f && $4 == w { print $8 }' "$results" | sort -V | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
    echo "| $file | $who | $rps | $p99 | $ratio |"
  done
done
