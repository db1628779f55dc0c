#!/usr/bin/env bash
# examples/linux_aio_test.rs against fio's libaio engine, same file, block size and depth,
# alternating, in one run. fio gets anonymous-mmap buffers (--iomem=mmap) like ours: with its
# default malloc'd buffers, warm buffered copies run ~5x slower on this VM, for fio and for
# psync alike.
# usage: bench/aio_vs_fio.sh FILE [ROUNDS] [BLOCK_BYTES] [DEPTH]
set -euo pipefail
cd "$(dirname "$0")/.."
file=$1 rounds=${2:-3} bs=${3:-1048576} depth=${4:-8}
command -v fio >/dev/null || { apt-get update && apt-get install -y fio; }
cargo build --release -q --example linux_aio_test
size=$(stat -c %s "$file")
ours() { ./target/release/examples/linux_aio_test "$@" --chunk-size "$bs" --depth "$depth" "$file" 2>/dev/null | sed -n 's/.* \([0-9.]*\) MB\/s.*/\1/p'; }
theirs() {
  fio --name=seq --filename="$file" --size="$size" --rw=read --bs="$bs" --iodepth="$depth" \
      --ioengine=libaio --invalidate=0 --iomem=mmap --output-format=terse --terse-version=3 "$@" \
    | awk -F';' '{ printf "%.1f\n", $7 * 1024 / 1e6 }'   # field 7: read bandwidth, KiB/s
}
for round in $(seq "$rounds"); do
  echo "round $round O_DIRECT:       aioloop $(ours --direct) MB/s   fio $(theirs --direct=1) MB/s"
  cat "$file" >/dev/null # warm the page cache for the buffered pair
  echo "round $round buffered, warm: aioloop $(ours) MB/s   fio $(theirs --direct=0) MB/s"
done
