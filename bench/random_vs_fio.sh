#!/usr/bin/env bash
# Random O_DIRECT reads: bench/src/bin/random_read.rs against fio's libaio engine, same file,
# block size and depth, alternating round by round in one run. With OLD=path/to/random_read
# (the same source built against another aioloop), that binary runs in each round too.
# bench/report.sh measures more (latency, CPU, io_uring, a thread pool); this is the quick
# before-and-after check.
# usage: bench/random_vs_fio.sh FILE [ROUNDS] [DEPTH] [SECONDS] [BLOCK_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
file=$1 rounds=${2:-5} depth=${3:-32} secs=${4:-5} bs=${5:-4096}
command -v fio >/dev/null || { apt-get update && apt-get install -y fio; }
cargo build --release -q -p aioloop-bench --bin random_read
ours() { "$1" "$file" --depth "$depth" --seconds "$secs" --block "$bs" | sed -n 's/^iops \([0-9]*\).*/\1/p'; }
fio_iops() {
  fio --name=rand --filename="$file" --rw=randread --bs="$bs" --iodepth="$depth" \
      --ioengine=libaio --direct=1 --time_based --runtime="$secs" --norandommap \
      --iomem=mmap --output-format=terse --terse-version=3 \
    | awk -F';' '{ print $8 }'   # field 8: read IOPS
}
echo "random ${bs}-byte O_DIRECT reads, depth $depth, ${secs} s per run, $(uname -r)"
for round in $(seq "$rounds"); do
  line="round $round: aioloop $(ours ./target/release/random_read) IOPS"
  [ -n "${OLD:-}" ] && line="$line   old $(ours "$OLD") IOPS"
  echo "$line   fio libaio $(fio_iops) IOPS"
done
