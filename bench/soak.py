#!/usr/bin/env python3
"""A soak of mixed HTTP load: `berth serve` and `wasmtime serve` on the same
wasi:http component, one after the other in one run, each for MINUTES.

Usage: soak.py BERTH WASMTIME COMPONENT [MINUTES] [INTERVAL_SECONDS]

For the whole run each server gets, at once:
- keep-alive clients: `wrk -t1 -c16 --latency`, one run per interval;
- connection-close clients: `wrk -t1 -c8 --latency -H 'Connection: close'`;
- hostile clients from this script, a few at a time: requests abandoned
  after their headers (mid-body) or before their answer came, headers sent
  a byte every 0.5 s and never finished (dropped after 12 s, unless the
  server cut them off first), and 8 MiB bodies.
Every interval it samples the server's RSS and descriptors and the two wrk
runs' requests/s and p99. wasmtime gets `-Scli` (the wasi:cli imports a
Rust std component has). Loopback only; it stops by itself.
Prints a markdown table per server and the berth/wasmtime ratios, with
their spread over the intervals.
"""
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

from loopback import free_port, ms, wait_port
from loopback import servers as loopback_servers

MIB = 1 << 20


def wrk(port, seconds, extra):
    """One wrk run; returns (requests/s, p99 ms, non-2xx count, socket errors)."""
    cmd = ["wrk", "-t1", *extra, f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p99 = ms(re.search(r"\n\s+99%\s+(\S+)", out).group(1))
    except (AttributeError, KeyError):
        sys.exit(f"cannot read wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return rps, p99, int(bad.group(1)) if bad else 0, sum(map(int, errs.groups())) if errs else 0


def footprint(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Hostile:
    """Clients that misbehave, a few at a time, until stopped."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        # Per kind: [clients, of which the server cut off]
        self.counts = {k: [0, 0] for k in ("abandoned mid-body", "abandoned before the answer", "slow headers", "8 MiB bodies")}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(kind,), daemon=True) for kind in self.counts]

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return s

    def once(self, kind):
        head = b"POST /soak HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        with self.connect() as s:
            if kind == "abandoned mid-body":
                s.sendall(head + b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
                time.sleep(0.05)
            elif kind == "abandoned before the answer":
                s.sendall(b"GET /soak HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            elif kind == "slow headers":
                for b in b"GET /soak HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1"[:24]:
                    if self.stop.wait(0.5):
                        break
                    s.send(bytes([b]))
            else:
                s.sendall(head + f"Content-Length: {8 * MIB}\r\nConnection: close\r\n\r\n".encode())
                # A server that refuses the body (413) closes before it is all sent.
                chunk = b"y" * 65536
                for _ in range(8 * MIB // len(chunk)):
                    s.sendall(chunk)
                s.recv(4096)

    def loop(self, kind):
        while not self.stop.is_set():
            try:
                self.once(kind)
                cut = 0
            except OSError:
                cut = 1
            with self.lock:
                self.counts[kind][0] += 1
                self.counts[kind][1] += cut
            self.stop.wait(0.2)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for t in self.threads:
            t.join()


def soak(cmd, minutes, interval):
    port = free_port()
    proc = subprocess.Popen(cmd(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_port(port)
        # Warm up so the first sample is a server that has served.
        wrk(port, 2, ["-c16"])
        rows.append((0, None, None, *footprint(proc.pid)))
        with Hostile(port) as hostile:
            for i in range(max(1, minutes * 60 // interval)):
                out = {}
                close = threading.Thread(target=lambda: out.update(close=wrk(port, interval, ["-c8", "-H", "Connection: close"])))
                close.start()
                keep = wrk(port, interval, ["-c16"])
                close.join()
                if proc.poll() is not None:
                    sys.exit(f"{cmd(port)[0]} exited with {proc.returncode} during the soak")
                rows.append(((i + 1) * interval, keep, out["close"], *footprint(proc.pid)))
        counts = dict(hostile.counts)
    finally:
        proc.terminate()
        proc.wait()
    return rows, counts


def spread(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


def main():
    berth, wasmtime, component = sys.argv[1:4]
    minutes = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    interval = int(sys.argv[5]) if len(sys.argv) > 5 else 30
    servers = loopback_servers(berth, wasmtime, component)
    results = {}
    for name, cmd in servers.items():
        results[name] = soak(cmd, minutes, interval)
    for name, (rows, counts) in results.items():
        print(f"### {name}, {minutes} min")
        print()
        print("| s | keep-alive req/s | keep-alive p99 ms | close req/s | close p99 ms | non-2xx | socket errors | RSS MiB | fds |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for t, keep, close, rss, fds in rows:
            if keep is None:
                print(f"| {t} (after warm-up) | | | | | | | {rss / MIB:.1f} | {fds} |")
            else:
                print(f"| {t} | {keep[0]:.0f} | {keep[1]:.2f} | {close[0]:.0f} | {close[1]:.2f} | {keep[2] + close[2]} | {keep[3] + close[3]} | {rss / MIB:.1f} | {fds} |")
        print()
        print("hostile clients: " + ", ".join(f"{k} {n} ({cut} cut off by the server)" for k, (n, cut) in counts.items()))
        print()
    b, w = (results[n][0][1:] for n in servers)
    pairs = list(zip(b, w))
    print("berth / wasmtime, per interval, median (min–max):")
    print(f"- keep-alive requests/s {spread([x[1][0] / y[1][0] for x, y in pairs])}, p99 {spread([x[1][1] / y[1][1] for x, y in pairs])}")
    print(f"- connection-close requests/s {spread([x[2][0] / y[2][0] for x, y in pairs])}, p99 {spread([x[2][1] / y[2][1] for x, y in pairs])}")
    for name, (rows, _) in results.items():
        rss = [r[3] / MIB for r in rows[1:]]
        print(f"- {name} RSS: {rows[0][3] / MIB:.1f} MiB after warm-up, {rss[0]:.1f} after the first interval, {rss[-1]:.1f} at the end, at most {max(rss):.1f}")


if __name__ == "__main__":
    main()
