#!/usr/bin/env bash
# Where the server's time goes under one cell of the benchmark matrix: starts bankcache (release build) as
# `compare` does for that cell (memory-only, or with the disk store and `fsync: every_sec`; over JSON, or over
# the HTTP file API), drives it with bankcache-bench, samples the server with perf for a few seconds mid-run,
# and prints the split by thread and the hottest symbols.
# Usage: scripts/profile.sh [a|b|c|d|a-disk|b-disk|c-disk|d-disk|e|file-get|file-put]   (default a).
# Needs perf (apt-get install linux-perf) and permission to sample (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "$0")/.."
cell=${1:-a}
disk=no proto=json keys=100000 ratio=0.9
case $cell in
  a | a-disk) conns=50 pipeline=1 size=32 ;;
  b | b-disk) conns=50 pipeline=16 size=32 ;;
  c | c-disk) conns=1 pipeline=1 size=32 ;;
  d | d-disk) conns=50 pipeline=1 size=4096 ;;
  e) conns=20 pipeline=1 size=204800 keys=2000 ratio=0.5 disk=yes proto=http ;;
  file-get) conns=20 pipeline=1 size=204800 keys=2000 ratio=1 disk=yes proto=http ;;
  file-put) conns=20 pipeline=1 size=204800 keys=2000 ratio=0 disk=yes proto=http ;;
  *) echo "usage: $0 [a|b|c|d|a-disk|b-disk|c-disk|d-disk|e|file-get|file-put]" >&2; exit 2 ;;
esac
case $cell in *-disk) disk=yes ;; esac
cargo build --release --workspace -q
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
echo '{}' > "$work/config.json"
store=(--data-dir none)
if [ $disk = yes ]; then
  # compare's disk store: 4 volumes of 512 MiB in a temp dir, fsync every second.
  store=(--data-dir "$work/data" --fsync every_sec --volume-size 536870912 --volume-count 4)
fi
target/release/bankcache --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --log-level warn \
  --memory-max-bytes 8589934592 "${store[@]}" "$work/config.json" >"$work/out" 2>/dev/null &
pid=$!
for _ in $(seq 100); do grep -q 'http listening' "$work/out" && break; sleep 0.05; done
port=$(sed -n "s/^bankcache: $proto listening on .*:\([0-9]*\)$/\1/p" "$work/out")
prefill=--prefill
[ "$cell" = file-put ] && prefill=
target/release/bankcache-bench --addr "127.0.0.1:$port" --proto $proto --connections $conns \
  --pipeline $pipeline --value-size $size --keys $keys --get-ratio $ratio $prefill --duration 8 --warmup 0 &
bench=$!
# The prefill of the file cells takes a few seconds of its own.
sleep $([ $disk = yes ] && echo 6 || echo 3)
perf record -g -o "$work/perf.data" -p "$pid" -- sleep 3 2>/dev/null
wait $bench
echo "== cell $cell: samples by thread and object"
perf report -i "$work/perf.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
echo "== hottest symbols"
perf report -i "$work/perf.data" --no-children --sort sym --stdio -g none --percent-limit 0.8 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
