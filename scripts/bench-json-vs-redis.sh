#!/usr/bin/env bash
# Runs bankcache (JSON protocol) and redis-server (RESP) in turn under the same load, with the same driver:
# 50 connections, 90% get / 10% put of 32-byte values over 100k keys, pipeline 1 and 16, three alternating
# runs each; bankcache runs as a memory-only cache, like redis-server. Needs redis-server
# (apt-get install redis-server). Prints one JSON line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace -q
B=target/release/bankcache-bench
REDIS_PORT=${REDIS_PORT:-16379}
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}

out=$(mktemp)
target/release/bankcache --listen 127.0.0.1:0 --http-listen none --log-level warn --data-dir none "$@" >"$out" &
server=$!
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize no >/dev/null &
redis=$!
trap 'kill $server $redis 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
port=$(sed -n 's/^bankcache: json listening on .*:\([0-9]*\)$/\1/p' "$out")
sleep 0.5

for pipeline in 1 16; do
  for run in $(seq "$RUNS"); do
    for proto in json resp; do
      if [ "$proto" = json ]; then addr=127.0.0.1:$port; else addr=127.0.0.1:$REDIS_PORT; fi
      result=$($B --addr "$addr" --proto "$proto" --connections 50 --pipeline "$pipeline" --value-size 32 \
        --keys 100000 --get-ratio 0.9 --duration "$DURATION" --prefill --json 2>/dev/null)
      echo "run=$run $result"
    done
  done
done
