#!/usr/bin/env python3
"""What a pod's shim costs for each worker thread it starts.

Usage: pod_workers.py BERTH_BIN_DIR [N_PODS] [WORKERS] [ROUNDS]
(BERTH_BIN_DIR holds `berth` and `containerd-shim-berth-v1`; defaults 20
pods, 16 workers, 2 rounds).

A pod's shim starts at most two workers by default, whatever the node's
CPU count; `BERTH_SHIM_WORKERS` sets the number. Starting WORKERS of them
is what a shim with a worker per CPU would do on a node of WORKERS CPUs,
so this compares that shape with the default on any machine. Each round
runs, through one private containerd each, N_PODS pods as CRI makes them
(a sandbox id each, a native busybox pause, one sleeping wasm guest),
first with the default and then with WORKERS workers, and sums the PSS of
every process the shims keep (shims and their descendants), per pod.
"""
import os
import statistics
import sys
import tempfile
import time
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd as cb  # noqa: E402


def per_pod(bindir, work, n_pods, workers):
    """(PSS per pod KiB, threads per shim) of n_pods pods, with the
    shim's default worker count (workers None) or that many."""
    if workers is None:
        os.environ.pop("BERTH_SHIM_WORKERS", None)
    else:
        os.environ["BERTH_SHIM_WORKERS"] = str(workers)
    c = cb.Containerd(bindir)
    try:
        c.ctr("image", "import", "--platform", "wasi/wasm", f"{work}/sleep.tar")
        c.ctr("image", "import", f"{work}/busybox.tar")
        cb.run_idle(c, cb.pod_containers(n_pods, "p", cb.BERTH, cb.WASM_APP))
        time.sleep(3)
        running = c.ctr("task", "ls").stdout.decode().count("RUNNING")
        if running != 2 * n_pods:
            sys.exit(f"pod_workers.py: {running} of {2 * n_pods} containers running")
        shims = c.pids("containerd-shim-berth-v1")
        threads = sum(len(os.listdir(f"/proc/{p}/task")) for p in shims)
        return cb.pss_kb(cb.descendants(shims)) / n_pods, threads / len(shims)
    finally:
        os.environ.pop("BERTH_SHIM_WORKERS", None)
        c.stop()


def main():
    bindir = os.path.abspath(sys.argv[1])
    n_pods = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    work = tempfile.mkdtemp()
    try:
        cb.build_images(f"{bindir}/berth", work, dict(os.environ, BERTH_ROOT=f"{work}/root"))
        rows = {"default": [], f"{workers} workers": []}
        for _ in range(rounds):
            rows["default"].append(per_pod(bindir, work, n_pods, None))
            rows[f"{workers} workers"].append(per_pod(bindir, work, n_pods, workers))
        print(f"### {n_pods} pods, a shim each: the default workers vs {workers}, {rounds} rounds, {os.cpu_count()} CPUs")
        print()
        print("| shim workers | PSS per pod KiB, median (min–max) | threads per shim |")
        print("| --- | --- | --- |")
        for label, xs in rows.items():
            pss = [x[0] for x in xs]
            print(f"| {label} | {statistics.median(pss):.0f} ({min(pss):.0f}–{max(pss):.0f}) | {statistics.median(x[1] for x in xs):.1f} |")
        d = statistics.median(x[0] for x in rows["default"])
        w = statistics.median(x[0] for x in rows[f"{workers} workers"])
        print(f"\nratio default / {workers} workers (median): **{d / w:.2f}**\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
