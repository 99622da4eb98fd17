#!/usr/bin/env bash
# CacheFS's benchmark, on the JSON port: 20 connections, 200 KB values over 2,000 keys, with the disk store;
# writes only, then reads only (after a prefill), beside the disk's raw sequential write bandwidth measured
# with dd in the same run, on the same filesystem. Usage: scripts/bench-200k.sh [DATA_PARENT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace -q
B=target/release/bankcache-bench
parent=${1:-$(pwd)/target}
work=$(mktemp -d "$parent/bench-200k.XXXXXX")
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

echo "dd, 1 GiB sequential write with fdatasync:"
dd if=/dev/zero of="$work/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1
rm -f "$work/dd.bin"

echo '{}' > "$work/config.json"
target/release/bankcache --listen 127.0.0.1:0 --http-listen none --log-level warn --data-dir "$work/data" --volume-size 1073741824 \
  --volume-count 4 "$work/config.json" > "$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/out" && break; sleep 0.1; done
port=$(sed -n 's/^bankcache: json listening on .*:\([0-9]*\)$/\1/p' "$work/out")
run() { # get_ratio [--prefill]
  $B --addr "127.0.0.1:$port" --proto json --connections 20 --pipeline 1 --value-size 204800 --keys 2000 \
    --get-ratio "$1" --duration 10 --warmup 1 "${@:2}" --json 2>/dev/null
}
show() { python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("%-6s %8.0f ops/s  %7.1f MB/s  p50 %.2f ms  p99 %.2f ms  errors %d" % (sys.argv[1], r["ops_per_sec"], r["ops_per_sec"]*204800/1e6, r["latency_us"]["p50"]/1000, r["latency_us"]["p99"]/1000, r["errors"]))' "$1"; }
run 0 | show write
run 1 --prefill | show read
run 0.5 | show mixed
