#!/usr/bin/env bash
# What an auth_token costs once a connection has authenticated: two identical memory-only servers, one with a
# token and one without, driven alternately (the order flips each round) with cell a's load (50 connections,
# pipeline 1), cell b's (pipeline 16) and HTTP GETs of 32 B files (20 connections, where every request carries
# the bearer token). Prints each run, then the medians and the ratio token/open per cell.
# Usage: scripts/bench-auth.sh [ROUNDS] [SECONDS]   (default 5 rounds of 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace -q
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-5}
TOKEN=bench-token-$RANDOM$RANDOM
T=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$T"' EXIT
start() { # name [env...]
  env "${@:2}" target/release/bankcache --data-dir none --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --log-level warn > "$T/$1.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 100); do [ "$(wc -l < "$T/$1.out")" -ge 2 ] && break; sleep 0.1; done
}
start open
start token BANKCACHE_AUTH_TOKEN="$TOKEN"
addr() { sed -n "s/^bankcache: $2 listening on //p" "$T/$1.out"; }
run() { # cell side
  local proto=json conns=50 pipeline=1 port=json token=()
  case $1 in b) pipeline=16 ;; h) proto=http conns=20 port=http ;; esac
  [ "$2" = token ] && token=(--auth-token "$TOKEN")
  env -u BANKCACHE_AUTH_TOKEN target/release/bankcache-bench --addr "$(addr "$2" $port)" --proto $proto \
    --connections $conns --pipeline $pipeline --value-size 32 --keys 100000 --get-ratio 0.9 \
    --duration "$SECONDS_PER_RUN" --warmup 1 --prefill --json "${token[@]}" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(sys.argv[1], sys.argv[2], round(r["ops_per_sec"]), r["errors"])' "$1" "$2"
}
for cell in a b h; do
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then run $cell open; run $cell token; else run $cell token; run $cell open; fi
  done
done | tee "$T/runs"
python3 - "$T/runs" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    cell, side, ops, errors = line.split()
    runs[cell, side].append(int(ops))
for cell in "abh":
    o, t = statistics.median(runs[cell, "open"]), statistics.median(runs[cell, "token"])
    print(f"cell {cell}: without a token {o:,.0f} ops/s, with one {t:,.0f} ops/s (medians): token/open {t / o:.2f}x")
PY
