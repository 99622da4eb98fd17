#!/usr/bin/env bash
# CacheFS's benchmark over HTTP: 20 connections, 200 KB bodies over 2,000 keys, PUT then GET, against
# bankcache's file API (disk store on) and against nginx serving the same 2,000 files statically from disk
# (once with nginx's default sendfile off, once with sendfile on), with the same driver, in one run.
# Needs nginx (apt-get install nginx). Usage: scripts/bench-200k-http.sh [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace -q
B=$(pwd)/target/release/bankcache-bench
DURATION=${1:-10}
T=$(mktemp -d "$(pwd)/target/bench-http.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$T"' EXIT
run() { # label addr get_ratio [--prefill]
  $B --proto http --addr "$2" --connections 20 --pipeline 1 --value-size 204800 --keys 2000 --get-ratio "$3" \
    --duration "$DURATION" --warmup 1 "${@:4}" --json 2>/dev/null |
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("%-26s %7.0f ops/s %7.1f MB/s  p50 %6.2f ms  p99 %6.2f ms  errors %d" % (sys.argv[1], r["ops_per_sec"], r["ops_per_sec"]*0.2048, r["latency_us"]["p50"]/1000, r["latency_us"]["p99"]/1000, r["errors"]))' "$1"
}

echo '{}' > "$T/config.json"
target/release/bankcache --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --log-level warn --data-dir "$T/data" \
  --volume-size 1073741824 --volume-count 2 "$T/config.json" > "$T/out" 2>"$T/err" &
pids+=($!)
for _ in $(seq 100); do [ "$(wc -l < "$T/out")" -ge 2 ] && break; sleep 0.1; done
http=$(sed -n 's/^bankcache: http listening on //p' "$T/out")
run "bankcache PUT" "$http" 0 --prefill
run "bankcache GET" "$http" 1

mkdir -p "$T/www" "$T/tmp" && chown nobody:nogroup "$T/tmp" 2>/dev/null || true
python3 -c '
import sys
data = bytes((i * 7 + 13) % 256 for i in range(204800))
for i in range(2000):
    open("%s/key:%08d" % (sys.argv[1], i), "wb").write(data)' "$T/www"
# nginx's workers drop privileges: let them read the files.
chmod -R a+rX "$T"
for sendfile in off on; do
  cat > "$T/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $T/nginx.pid;
error_log $T/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile $sendfile;
    keepalive_requests 100000000;
    client_body_temp_path $T/tmp/body;
    proxy_temp_path $T/tmp/proxy;
    fastcgi_temp_path $T/tmp/fastcgi;
    uwsgi_temp_path $T/tmp/uwsgi;
    scgi_temp_path $T/tmp/scgi;
    server { listen 127.0.0.1:18480; root $T/www; location / { } }
}
CONF
  nginx -c "$T/nginx.conf" -p "$T/" &
  pid=$!; pids+=($pid); sleep 0.5
  run "nginx static GET sendfile $sendfile" 127.0.0.1:18480 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
