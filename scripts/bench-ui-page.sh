#!/usr/bin/env bash
# What an open admin page costs the server: runs `bankcache-bench compare` on one cell twice per round,
# alternating, against bankcache alone and bankcache with one headless Chromium tab on its /ui/ dashboard
# (with Redis in each run as the same-run reference), and prints each run's figures. The page is opened by
# a wrapper that `compare` starts in bankcache's place: it gives bankcache an HTTP port and points headless
# Chromium at it, and the tab closes when bankcache exits.
#
#   scripts/bench-ui-page.sh [cell] [rounds]      # defaults: a 2
#
# Needs a release build (cargo build --release --workspace), chromium, and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
cell=${1:-a}
rounds=${2:-2}
bin=$PWD/target/release/bankcache
bench=$PWD/target/release/bankcache-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The wrapper: bankcache with an HTTP port (instead of none) and a headless tab on its dashboard.
cat > "$work/bankcache-with-page" <<WRAP
#!/usr/bin/env bash
port=\$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
args=(); prev=""
for a in "\$@"; do
  if [ "\$prev" = "--http-listen" ]; then a="127.0.0.1:\$port"; fi
  args+=("\$a"); prev="\$a"
done
server=\$\$
(
  for _ in \$(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:\$port/ui/" && break; sleep 0.05; done
  profile=\$(mktemp -d)
  chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \\
    --user-data-dir="\$profile" "http://127.0.0.1:\$port/ui/" >/dev/null 2>&1 &
  tab=\$!
  while kill -0 "\$server" 2>/dev/null; do sleep 0.5; done
  kill "\$tab" 2>/dev/null; wait "\$tab" 2>/dev/null; rm -rf "\$profile"
) </dev/null >/dev/null 2>&1 &
exec "$bin" "\${args[@]}"
WRAP
chmod +x "$work/bankcache-with-page"

for round in $(seq "$rounds"); do
  for mode in none page; do
    program=$bin
    [ "$mode" = page ] && program=$work/bankcache-with-page
    out=$work/$mode-$round
    echo "== round $round, $mode" >&2
    # A 5 s warm-up: Chromium starts and loads the page before the measured 10 s.
    "$bench" compare --cells "$cell" --servers bankcache,redis --rounds 1 --warmup 5 --duration 10 \
      --bankcache "$program" --out "$out" > "$out.log" 2>&1
    grep -E "round 1/1 cell $cell " "$out.log" | sed "s/^bankcache-bench compare: round 1\/1/$mode round $round:/"
  done
done | tee "$work/lines"

# Medians per mode of bankcache's ops/s, Redis's, and their ratio (the same-run figure).
python3 - "$work/lines" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) round (\d+): cell \S+ (\w+) +([\d,]+) ops/s.*p99 (\d+) us", line)
    if m:
        mode, rnd, server, ops, p99 = m.groups()
        runs.setdefault((mode, rnd), {})[server] = (int(ops.replace(",", "")), int(p99))
for mode in ("none", "page"):
    got = [r for (m, _), r in sorted(runs.items()) if m == mode and len(r) == 2]
    if not got:
        continue
    bc = statistics.median(r["bankcache"][0] for r in got)
    rd = statistics.median(r["redis"][0] for r in got)
    ratio = statistics.median(r["bankcache"][0] / r["redis"][0] for r in got)
    p99 = statistics.median(r["bankcache"][1] for r in got)
    print(f"{mode:5} bankcache {bc:,.0f} ops/s (p99 {p99} us), redis {rd:,.0f} ops/s, bankcache/redis {ratio:.2f}x "
          f"(medians of {len(got)})")
PY
