#!/usr/bin/env python3
"""`berth serve` vs `wasmtime serve` on the same wasi:http component, same
load generator (Debian's wrk), loopback, concurrency 50.

Usage: serve.py BERTH WASMTIME COMPONENT [SECONDS] [ROUNDS]. wasmtime gets
`-Scli` (the wasi:cli imports a Rust std component has; berth links all of
WASI p2). Rounds alternate
between the two servers; each round is `wrk -t2 -c50 -dSECONDS --latency`
after a 2 s warm-up. Prints requests/s and p50/p99 latency per round and the
medians, with berth/wasmtime ratios.
"""
import re
import statistics
import subprocess
import sys

from loopback import free_port, ms, wait_port
from loopback import servers as loopback_servers


def load(port, seconds):
    url = f"http://127.0.0.1:{port}/"
    subprocess.run(["wrk", "-t2", "-c50", "-d2s", url], stdout=subprocess.DEVNULL)
    out = subprocess.run(["wrk", "-t2", "-c50", f"-d{seconds}s", "--latency", url], capture_output=True, text=True).stdout
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = ms(re.search(r"\n\s+50%\s+(\S+)", out).group(1))
        p99 = ms(re.search(r"\n\s+99%\s+(\S+)", out).group(1))
    except (AttributeError, KeyError):
        sys.exit(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"{errors.group(1)} failed responses:\n{out}")
    return rps, p50, p99


def main():
    berth, wasmtime, component = sys.argv[1:4]
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    servers = loopback_servers(berth, wasmtime, component)
    results = {name: [] for name in servers}
    for r in range(rounds):
        for name, cmd in servers.items():
            port = free_port()
            proc = subprocess.Popen(cmd(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_port(port)
                results[name].append(load(port, seconds))
            finally:
                proc.terminate()
                proc.wait()
    print("| server | round | requests/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    for name, rs in results.items():
        for i, (rps, p50, p99) in enumerate(rs):
            print(f"| {name} | {i + 1} | {rps:.0f} | {p50:.2f} | {p99:.2f} |")
    med = {n: [statistics.median(x[i] for x in rs) for i in range(3)] for n, rs in results.items()}
    b, w = med["berth serve"], med["wasmtime serve"]
    print()
    print(f"medians: berth {b[0]:.0f} req/s, p50 {b[1]:.2f} ms, p99 {b[2]:.2f} ms; wasmtime {w[0]:.0f} req/s, p50 {w[1]:.2f} ms, p99 {w[2]:.2f} ms")
    print(f"ratio berth / wasmtime: requests/s **{b[0] / w[0]:.2f}**, p99 **{b[2] / w[2]:.2f}**")


if __name__ == "__main__":
    main()
