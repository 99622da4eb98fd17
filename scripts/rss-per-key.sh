#!/usr/bin/env bash
# Memory per key: loads N keys of 32-byte values (keys `key:%08d`, 12 bytes) into bankcache (memory-only
# and with the disk store), redis-server and memcached in turn, with the same driver, and prints the growth
# of each server's RSS divided by N. For the disk store it also times a restart (until the listening line).
# Usage: scripts/rss-per-key.sh [N ...]   (default: 1000000). Needs redis-server and memcached.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace -q
B=target/release/bankcache-bench
counts=("${@:-1000000}")
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Anonymous memory only: the disk store's reads go through file maps whose pages are page cache (they count
# in VmRSS as RssFile, but belong to the kernel's cache and are dropped under pressure).
rss_kb() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }

wait_line() { for _ in $(seq 600); do grep -q listening "$1" && return 0; sleep 0.05; done; return 1; }

# load PROTO ADDR N: every key once (prefill), then a short all-gets run.
load() {
  $B --addr "$2" --proto "$1" --connections 20 --pipeline 64 --value-size 32 --keys "$3" --get-ratio 1 \
    --prefill --warmup 0 --duration 0.2 --json >/dev/null 2>&1
}

report() { # name pid before_kb n
  local after; after=$(rss_kb "$2")
  awk -v name="$1" -v b="$3" -v a="$after" -v n="$4" \
    'BEGIN { printf "%-22s keys=%-9d rss_before=%7.1fMB rss_after=%8.1fMB bytes_per_key=%6.1f\n", name, n, b/1024, a/1024, (a-b)*1024/n }'
}

echo '{}' > "$work/none.json"
for n in "${counts[@]}"; do
  # bankcache, memory only
  out=$work/bc.out
  target/release/bankcache --listen 127.0.0.1:0 --http-listen none --log-level warn --data-dir none --memory-max-bytes 34359738368 \
    --max-connections 100000 "$work/none.json" >"$out" 2>/dev/null &
  pid=$!; pids+=("$pid")
  wait_line "$out"; port=$(sed -n 's/^bankcache: json listening on .*:\([0-9]*\)$/\1/p' "$out")
  before=$(rss_kb "$pid"); load json "127.0.0.1:$port" "$n"; report "bankcache (memory)" "$pid" "$before" "$n"
  kill "$pid"; wait "$pid" 2>/dev/null || true

  # bankcache with the disk store: values on disk, keys and locations in RAM
  rm -rf "$work/data"
  target/release/bankcache --listen 127.0.0.1:0 --http-listen none --log-level warn --data-dir "$work/data" --volume-count 4 \
    --fsync never "$work/none.json" >"$out" 2>/dev/null &
  pid=$!; pids+=("$pid")
  wait_line "$out"; port=$(sed -n 's/^bankcache: json listening on .*:\([0-9]*\)$/\1/p' "$out")
  before=$(rss_kb "$pid"); load json "127.0.0.1:$port" "$n"; report "bankcache (disk store)" "$pid" "$before" "$n"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  started=$(date +%s.%N)
  target/release/bankcache --listen 127.0.0.1:0 --http-listen none --log-level warn --data-dir "$work/data" --volume-count 4 \
    --fsync never "$work/none.json" >"$out" 2>/dev/null &
  pid=$!; pids+=("$pid")
  wait_line "$out"
  awk -v s="$started" -v e="$(date +%s.%N)" -v n="$n" 'BEGIN { printf "%-22s keys=%-9d restart_s=%.2f\n", "bankcache restart", n, e-s }'
  kill "$pid"; wait "$pid" 2>/dev/null || true

  # redis-server
  redis-server --bind 127.0.0.1 --port 16380 --save '' --appendonly no >/dev/null &
  pid=$!; pids+=("$pid"); sleep 0.5
  before=$(rss_kb "$pid"); load resp 127.0.0.1:16380 "$n"; report "redis-server" "$pid" "$before" "$n"
  kill "$pid"; wait "$pid" 2>/dev/null || true

  # memcached, with room for every key
  memcached -l 127.0.0.1 -p 11212 -U 0 -m 16384 -u root >/dev/null 2>&1 &
  pid=$!; pids+=("$pid"); sleep 0.5
  before=$(rss_kb "$pid"); load memcache 127.0.0.1:11212 "$n"; report "memcached" "$pid" "$before" "$n"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
