#!/usr/bin/env python3
"""`berth serve` vs `wasmtime serve` on the same wasi:http component, same
load generator (Debian's wrk), loopback, concurrency 50.

Usage: serve.py BERTH WASMTIME COMPONENT [SECONDS] [ROUNDS]
       serve.py --ab BERTH_A BERTH_B COMPONENT [SECONDS] [ROUNDS]
(the second form: two builds of berth, e.g. before and after a change).
wasmtime gets
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
    args = sys.argv[1:]
    ab = bool(args) and args[0] == "--ab"
    if ab:
        args = args[1:]
    berth, other, component = args[0:3]
    seconds = int(args[3]) if len(args) > 3 else 10
    rounds = int(args[4]) if len(args) > 4 else 3
    if ab:
        servers = {name: (lambda b: lambda p: [b, "serve", component, "--addr", f"127.0.0.1:{p}"])(b) for name, b in [("berth serve A", berth), ("berth serve B", other)]}
    else:
        servers = loopback_servers(berth, other, component)
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
    (bn, b), (wn, w) = med.items()
    print()
    print(f"medians: {bn} {b[0]:.0f} req/s, p50 {b[1]:.2f} ms, p99 {b[2]:.2f} ms; {wn} {w[0]:.0f} req/s, p50 {w[1]:.2f} ms, p99 {w[2]:.2f} ms")
    print(f"ratio {bn} / {wn}: requests/s **{b[0] / w[0]:.2f}**, p99 **{b[2] / w[2]:.2f}**")


if __name__ == "__main__":
    main()
