#!/usr/bin/env python3
"""Measures what issue 11 asks of a bankcache build: memory against memory_max_bytes, a client that does not
read, isolation of a bank-wide walk, and the cost of many banks.

    python3 scripts/bounds.py target/release/bankcache [--only NAME ...]

Each measurement starts its own memory-only server on a free loopback port (output lines go to stdout as
`name: figures`). Pass an older build's binary to compare; flags the older build does not know are left out.
Every load is bounded in count and time.
"""

import argparse
import os
import json
import socket
import subprocess
import sys
import time


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Server:
    def __init__(self, binary, *args):
        cmd = [os.path.abspath(binary), "--listen", "127.0.0.1:0", "--http-listen", "none", "--data-dir", "none",
               "--log-level", "error", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd="/tmp")
        line = self.proc.stdout.readline().decode()
        self.port = int(line.strip().rsplit(":", 1)[1])

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(120)
        return s

    def rss(self):
        return rss_mb(self.proc.pid)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def pipeline(sock, lines, batch=1000):
    """Sends lines in batches, reads one reply per line; returns the error replies."""
    errors = []
    for i in range(0, len(lines), batch):
        chunk = lines[i:i + batch]
        sock.sendall(("\n".join(chunk) + "\n").encode())
        got, buf = 0, b""
        while got < len(chunk):
            data = sock.recv(1 << 20)
            if not data:
                raise RuntimeError("server closed the connection")
            buf += data
            *done, buf = buf.split(b"\n")
            got += len(done)
            errors += [d for d in done if d.startswith(b'{"status": "error"')]
    return errors


def request(sock, line):
    sock.sendall((line + "\n").encode())
    parts = []
    while not parts or not parts[-1].endswith(b"\n"):
        data = sock.recv(1 << 24)
        if not data:
            raise RuntimeError("server closed the connection")
        parts.append(data)
    return b"".join(parts)


def small_keys(binary):
    limit = 64 << 20
    srv = Server(binary, "--memory-max-bytes", str(limit))
    base = srv.rss()
    s, peak = srv.connect(), 0.0
    for start in range(0, 2_500_000, 100_000):
        lines = ['{"op":"put","bank":"b","key":"key:%09d","value":8}' % i for i in range(start, start + 100_000)]
        pipeline(s, lines, 2000)
        peak = max(peak, srv.rss())
    print(f"small_keys: 2.5 M keys, 8-byte values, memory_max_bytes 64 MB: baseline {base:.0f} MB, "
          f"peak RSS {peak:.0f} MB")
    srv.stop()


# Builds before issue 11 stall on pipelined requests of a megabyte (a paused read never resumed): old
# builds get one large put per round trip.
LARGE_BATCH = 10


def large_values(binary):
    limit = 64 << 20
    srv = Server(binary, "--memory-max-bytes", str(limit))
    s, peak = srv.connect(), 0.0
    value = '"' + "v" * 1_000_000 + '"'
    for start in range(0, 400, 10):
        pipeline(s, ['{"op":"put","bank":"b","key":"k%d","value":%s}' % (i, value) for i in range(start, start + 10)],
                 LARGE_BATCH)
        peak = max(peak, srv.rss())
    print(f"large_values: 400 values of 1 MB, memory_max_bytes 64 MB: peak RSS {peak:.0f} MB")
    srv.stop()


def non_reader(binary, new):
    args = ["--memory-max-bytes", str(256 << 20)]
    srv = Server(binary, *args)
    s = srv.connect()
    value = '"' + "v" * 1_000_000 + '"'
    pipeline(s, ['{"op":"put","bank":"b","key":"k%d","value":%s}' % (i, value) for i in range(4)], LARGE_BATCH)
    base = srv.rss()
    greedy = srv.connect()
    gets = "".join('{"op":"get","bank":"b","key":"k%d"}\n' % (i % 4) for i in range(750))  # ~30 KB of gets
    greedy.sendall(gets.encode())
    peak = base
    for _ in range(30):
        time.sleep(0.1)
        peak = max(peak, srv.rss())
    greedy.close()
    time.sleep(2)
    after = srv.rss()
    print(f"non_reader: 30 KB of gets of 1 MB values, never read: baseline {base:.0f} MB, peak {peak:.0f} MB, "
          f"2 s after it left {after:.0f} MB")
    srv.stop()


PROBE = """
import socket, sys, time, signal
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out = []
signal.signal(signal.SIGTERM, lambda *_: (print(" ".join(out)), sys.exit(0)))
while True:
    t = time.perf_counter()
    s.sendall(b'{"op":"get","bank":"small","key":"k"}\\n')
    buf = b""
    while not buf.endswith(b"\\n"):
        buf += s.recv(4096)
    out.append("%.6f" % (time.perf_counter() - t))
"""


def isolation(binary, new):
    args = ["--memory-max-bytes", str(2 << 30), "--workers", "2"]
    if new:
        args += ["--max-output-bytes", str(256 << 20)]
    srv = Server(binary, *args)
    s = srv.connect()
    for start in range(0, 2_000_000, 100_000):
        pipeline(s, ['{"op":"put","bank":"big","key":"key:%09d","value":1}' % i
                     for i in range(start, start + 100_000)], 5000)
    request(s, '{"op":"put","bank":"small","key":"k","value":1}')
    # The probe runs in its own process, so that reading the walk's reply here cannot delay it.
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(srv.port)], stdout=subprocess.PIPE)
    time.sleep(0.5)
    walker = srv.connect()
    walks = []
    for _ in range(3):
        started = time.perf_counter()
        reply = request(walker, '{"op":"bank.keys","bank":"big"}')
        walks.append(time.perf_counter() - started)
    probe.terminate()
    latencies = [float(x) for x in probe.communicate()[0].split()]
    lat = sorted(latencies)
    print(f"isolation: bank.keys of 2 M keys ({len(reply) >> 20} MB reply) x3, {min(walks)*1e3:.0f}-{max(walks)*1e3:.0f} ms each; "
          f"gets on another bank meanwhile: {len(lat)}, p50 {lat[len(lat)//2]*1e3:.2f} ms, "
          f"p99 {lat[int(len(lat)*0.99)]*1e3:.2f} ms, worst {lat[-1]*1e3:.1f} ms")
    srv.stop()


def many_banks(binary):
    for banks in (1, 200_000):
        srv = Server(binary, "--memory-max-bytes", str(256 << 20))
        s = srv.connect()
        if banks > 1:
            for start in range(0, banks, 50_000):
                pipeline(s, ['{"op":"put","bank":"bank%d","key":"k","value":1}' % i
                             for i in range(start, start + 50_000)], 5000)
                pipeline(s, ['{"op":"bank.reset","bank":"bank%d"}' % i for i in range(start, start + 50_000)], 5000)
        value = '"' + "v" * 1000 + '"'
        lines = ['{"op":"put","bank":"hot","key":"key:%09d","value":%s}' % (i, value) for i in range(600_000)]
        # Fill past the limit first, so that the measured puts evict.
        pipeline(s, lines[:300_000], 2000)
        started = time.perf_counter()
        pipeline(s, lines[300_000:], 2000)
        took = time.perf_counter() - started
        st = json.loads(request(s, '{"op":"stats"}'))["data"]
        print(f"many_banks: {banks} banks: {300_000 / took:,.0f} puts/s of 1 KB values while evicting "
              f"(evictions {st['evictions']:,})")
        srv.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--old", action="store_true", help="the build predates max_output_bytes")
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    global LARGE_BATCH
    if a.old:
        LARGE_BATCH = 1
    tests = {
        "small_keys": lambda: small_keys(a.binary),
        "large_values": lambda: large_values(a.binary),
        "non_reader": lambda: non_reader(a.binary, not a.old),
        "isolation": lambda: isolation(a.binary, not a.old),
        "many_banks": lambda: many_banks(a.binary),
    }
    for name, run in tests.items():
        if a.only and name not in a.only:
            continue
        try:
            run()
        except Exception as e:  # report and go on: one failure should not hide the other figures
            print(f"{name}: failed: {e}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
