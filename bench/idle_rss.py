#!/usr/bin/env python3
"""The memory of an idle shim, for several builds of berth side by side.

Usage: idle_rss.py ROUNDS BINARY...   (root)

Each BINARY (a static release binary, e.g. ./dist.sh's) is copied onto a
scratch ext4 on a loop device. Per round, per read-ahead (128 KB, the
kernel's default, and 8 MB, as on this machine's disk), per binary, in turn:
the page cache is emptied, a private containerd (bench/containerd.py)
starts, and two sleeping wasm guests are run each in its own shim (`ctr
run -d`): the first shim's pages come from disk, the second's mostly from
the page cache the first filled. Prints each shim's RSS and anonymous
memory (/proc/PID/smaps_rollup), then per binary and read-ahead the
medians (min-max) and the ratio of each binary's median to the first's.
"""
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd as cb  # noqa: E402
from loopfs import LoopFs  # noqa: E402

READ_AHEADS_KB = (128, 8192)


def main():
    if os.geteuid() != 0 or len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds, binaries = int(sys.argv[1]), [os.path.abspath(b) for b in sys.argv[2:]]
    work = tempfile.mkdtemp(prefix="berth-idle-rss-")
    cb.build_images(binaries[0], work, dict(os.environ, BERTH_ROOT=f"{work}/berth-root"))
    fs = LoopFs(work, sum(os.path.getsize(b) for b in binaries) + (64 << 20))
    results = {}
    try:
        dirs = [fs.install(b, f"b{i}") for i, b in enumerate(binaries)]
        for r in range(rounds):
            for ra in READ_AHEADS_KB:
                for i, d in enumerate(dirs):
                    fs.cold(ra)
                    c = cb.Containerd(d)
                    try:
                        c.ctr("image", "import", "--platform", "wasi/wasm", f"{work}/sleep.tar")
                        for k in range(2):
                            c.ctr("run", "-d", "--null-io", "--runtime", "io.containerd.berth.v1", "bench.local/sleep:1", f"idle{k}")
                            time.sleep(4)
                        shims = sorted(c.pids("containerd-shim-berth-v1"))
                        if len(shims) != 2:
                            sys.exit(f"expected two shims, found {shims}")
                        got = [(m["Rss"], m["Anonymous"]) for m in map(cb.smaps_rollup, shims)]
                    finally:
                        c.stop()
                    results.setdefault((i, ra), []).append(got)
                    print(f"round {r} read-ahead {ra} KB {binaries[i]}: (RSS, anonymous) KiB {got}", flush=True)
    finally:
        fs.close()
    print()
    print("| binary | read-ahead | first shim RSS, KiB | second shim RSS | anonymous | RSS ratio to the first binary |")
    print("| --- | --- | --- | --- | --- | --- |")
    for ra in READ_AHEADS_KB:
        base = [g[0][0] for g in results[(0, ra)]]
        for i, b in enumerate(binaries):
            runs = results[(i, ra)]
            first, second = [g[0][0] for g in runs], [g[1][0] for g in runs]
            anon = [a for g in runs for _, a in g]
            span = lambda xs: f"{statistics.median(xs):.0f} ({min(xs)}-{max(xs)})"  # noqa: E731
            ratio = f"{statistics.median(first) / statistics.median(base):.2f} ({min(first) / max(base):.2f}-{max(first) / min(base):.2f})"
            print(f"| {b} | {ra} KB | {span(first)} | {span(second)} | {span(anon)} | {ratio} |")


if __name__ == "__main__":
    main()
