#!/usr/bin/env bash
# Where the server's time goes under one cell of the benchmark matrix: starts a memory-only bankcache (release
# build), drives it with bankcache-bench, samples it with perf for a few seconds mid-run, and prints the split by
# thread and the hottest symbols.
# Usage: scripts/profile.sh [a|b|c|d]   (default a). Needs perf (apt-get install linux-perf) and permission to
# sample (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "$0")/.."
cell=${1:-a}
case $cell in
  a) conns=50 pipeline=1 size=32 ;;
  b) conns=50 pipeline=16 size=32 ;;
  c) conns=1 pipeline=1 size=32 ;;
  d) conns=50 pipeline=1 size=4096 ;;
  *) echo "usage: $0 [a|b|c|d]" >&2; exit 2 ;;
esac
cargo build --release --workspace -q
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
echo '{}' > "$work/config.json"
target/release/bankcache --listen 127.0.0.1:0 --http-listen none --log-level warn --data-dir none \
  "$work/config.json" >"$work/out" 2>/dev/null &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/out" && break; sleep 0.05; done
port=$(sed -n 's/^bankcache: json listening on .*:\([0-9]*\)$/\1/p' "$work/out")
target/release/bankcache-bench --addr "127.0.0.1:$port" --connections $conns --pipeline $pipeline \
  --value-size $size --keys 100000 --get-ratio 0.9 --prefill --duration 8 --warmup 0 &
bench=$!
sleep 3
perf record -g -o "$work/perf.data" -p "$pid" -- sleep 3 2>/dev/null
wait $bench
echo "== cell $cell: samples by thread and object"
perf report -i "$work/perf.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
echo "== hottest symbols"
perf report -i "$work/perf.data" --no-children --sort sym --stdio -g none --percent-limit 0.8 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
