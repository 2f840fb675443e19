#!/usr/bin/env python3
"""Two builds of berth side by side serving a wasi:http component through
containerd's shim (an instance per request), under the same load
generator (Debian's wrk), loopback, concurrency 50.

Usage: shim_http.py DIR_A DIR_B COMPONENT [SECONDS] [ROUNDS]
(each DIR holds `berth` and `containerd-shim-berth-v1`).

Each round runs A, then B: a private containerd with that build, the
component as a container of a pod (`io.kubernetes.cri.sandbox-id`, so a
pod's shim and its worker count) listening on a free loopback port
(`berth.dev/http-listen`), then `wrk -t2 -c50 -dSECONDS --latency` after
a 2 s warm-up. Prints requests/s and p50/p99 per round, the medians and
the B/A ratios.
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd as cb  # noqa: E402
from loopback import free_port, wait_port  # noqa: E402
from serve import load  # noqa: E402


def round_of(bindir, image_tar, seconds):
    """(req/s, p50 ms, p99 ms) of the component served by `bindir`'s shim."""
    c = cb.Containerd(bindir)
    try:
        c.ctr("image", "import", "--platform", "wasi/wasm", image_tar)
        port = free_port()
        c.ctr("run", "-d", "--null-io", "--runtime", "io.containerd.berth.v1",
              "--annotation", "io.kubernetes.cri.sandbox-id=web",
              "--annotation", f"berth.dev/http-listen=127.0.0.1:{port}",
              "bench.local/http:1", "web")
        wait_port(port)
        return load(port, seconds)
    finally:
        c.stop()


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    dirs = [os.path.abspath(d) for d in sys.argv[1:3]]
    component = os.path.abspath(sys.argv[3])
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    work = tempfile.mkdtemp()
    try:
        tar = f"{work}/http.tar"
        cb.sh(f"{dirs[0]}/berth", "image", "build", component, "-t", "bench.local/http:1", "-o", tar, env=dict(os.environ, BERTH_ROOT=f"{work}/root"))
        results = {d: [] for d in dirs}
        print(f"### a wasi:http component served by a pod's shim, wrk -t2 -c50 -d{seconds}s, {rounds} rounds, {os.cpu_count()} CPUs")
        print()
        print("| round | build | req/s | p50 ms | p99 ms |")
        print("| --- | --- | --- | --- | --- |")
        for r in range(rounds):
            for label, d in zip("AB", dirs):
                x = round_of(d, tar, seconds)
                results[d].append(x)
                print(f"| {r + 1} | {label} | {x[0]:.0f} | {x[1]:.2f} | {x[2]:.2f} |", flush=True)
                time.sleep(1)
        med = {d: [statistics.median(x[i] for x in results[d]) for i in range(3)] for d in dirs}
        a, b = med[dirs[0]], med[dirs[1]]
        print()
        print(f"medians: A {a[0]:.0f} req/s, p99 {a[2]:.2f} ms; B {b[0]:.0f} req/s, p99 {b[2]:.2f} ms")
        print(f"ratio B / A: req/s **{b[0] / a[0]:.2f}**, p99 **{b[2] / a[2]:.2f}**")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
