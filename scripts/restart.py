#!/usr/bin/env python3
"""Restart time of a disk store holding N keys: load N keys of 32-byte values, stop the server gracefully,
start it again on the same directory, and time until it listens; also RSS before the stop and after the
restart.

    python3 scripts/restart.py target/release/bankcache 1000000 [10000000 ...] [--dir DIR]

Loads go through one pipelined connection; every loop is bounded.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import time


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(binary, data):
    cmd = [os.path.abspath(binary), "--listen", "127.0.0.1:0", "--http-listen", "none", "--data-dir", data,
           "--fsync", "never", "--memory-max-bytes", str(8 << 30), "--log-level", "warn"]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd="/tmp")
    line = p.stdout.readline().decode()
    took = time.perf_counter() - t
    return p, int(line.strip().rsplit(":", 1)[1]), took


def load(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    value = '"' + "v" * 30 + '"'
    batch = 20_000
    for start_at in range(0, n, batch):
        end = min(n, start_at + batch)
        s.sendall("".join('{"op":"put","bank":"b","key":"key:%010d","value":%s}\n' % (i, value)
                          for i in range(start_at, end)).encode())
        got = 0
        while got < end - start_at:
            data = s.recv(1 << 20)
            if not data:
                raise RuntimeError("closed")
            got += data.count(b"\n")
    s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("keys", nargs="+", type=int)
    ap.add_argument("--dir", default="/tmp/bankcache-restart")
    a = ap.parse_args()
    for n in a.keys:
        data = os.path.join(a.dir, str(n))
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data)
        p, port, _ = start(a.binary, data)
        load(port, n)
        before = rss_mb(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
        p, port, took = start(a.binary, data)
        time.sleep(1)
        after = rss_mb(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
        print(f"{n:>10,} keys: restart {took:.2f} s ({n / took / 1e6:.2f} M keys/s), "
              f"RSS before the stop {before:.0f} MB, after the restart {after:.0f} MB", flush=True)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
