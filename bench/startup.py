#!/usr/bin/env python3
"""Cold process start: `berth run` vs `wasmtime run` on the same hello module.

Runs each command N times, interleaved (so machine noise hits all alike),
after a warm-up, and prints median / p10 / p90 wall time and the ratio of
each berth case to wasmtime. Usage: startup.py N NAME=CMD... (first is the
baseline). Guest output is discarded.
"""
import statistics
import subprocess
import sys
import time


def main():
    n = int(sys.argv[1])
    cases = [a.split("=", 1) for a in sys.argv[2:]]
    times = {name: [] for name, _ in cases}
    for i in range(n + 3):
        for name, cmd in cases:
            t = time.perf_counter()
            r = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            d = time.perf_counter() - t
            if r.returncode != 0:
                sys.exit(f"{name} failed ({r.returncode}): {r.stderr.decode()}")
            if i >= 3:
                times[name].append(d * 1000)
    base = statistics.median(times[cases[0][0]])
    print(f"| case | median ms | p10 ms | p90 ms | ratio to {cases[0][0]} |")
    print("| --- | --- | --- | --- | --- |")
    for name, _ in cases:
        t = sorted(times[name])
        med = statistics.median(t)
        p10, p90 = t[int(len(t) * 0.1)], t[int(len(t) * 0.9) - 1]
        print(f"| {name} | {med:.2f} | {p10:.2f} | {p90:.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
