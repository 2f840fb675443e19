#!/usr/bin/env python3
"""berth's shim vs runc through one private containerd, side by side.

Usage: containerd.py BERTH_BIN_DIR [N_COLD] [N_DENSITY] [N_CHURN] [N_PODS]
(BERTH_BIN_DIR holds `berth` and `containerd-shim-berth-v1`).

- cold start: `ctr run --rm` of the wasm hello via berth vs busybox `echo`
  via runc, interleaved, median and p10/p90, ratio berth/runc;
- density, each shape with both runtimes in the same shape; the sum of the
  PSS of every process a runtime keeps (shims and their descendants):
  N_PODS pods as CRI makes them (a sandbox id each, a native busybox pause,
  one idle app: the wasm sleep guest under berth, busybox `sleep` under
  runc), per pod, with berth's shim per pod and with its node-wide mode;
  and N_DENSITY idle containers all in one shim (one sandbox id), per
  container;
- churn: create-start-wait-delete (`ctr run --rm`) at parallelism 4, tasks/s;
- native: `ctr run --rm` of busybox `echo` via berth (its native fallback,
  libcontainer) vs via runc, interleaved, ratio berth/runc.
"""
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*cmd, check=True, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()}")
    return r


class Containerd:
    def __init__(self, bindir, extra_config=""):
        self.dir = tempfile.mkdtemp(prefix="berth-bench-ctrd-", dir="/tmp")
        d = self.dir
        with open(f"{d}/config.toml", "w") as f:
            f.write(f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
{extra_config}""")
        env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", BERTH_ROOT=f"{d}/berth")
        self.log = open(f"{d}/containerd.log", "w")
        self.proc = subprocess.Popen(["containerd", "--config", f"{d}/config.toml"], env=env, stdout=self.log, stderr=self.log)
        for _ in range(300):
            if self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        sys.exit("containerd did not start")

    def ctr(self, *args, check=True):
        return sh("ctr", "--address", f"{self.dir}/c.sock", "--namespace", "bench", *args, check=check)

    def pids(self, binary):
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if binary in cmd and f"{self.dir}/c.sock" in cmd:
                out.append(int(p))
        return out

    def stop(self):
        for p in self.pids("containerd-shim"):
            try:
                os.kill(p, 9)
            except OSError:
                pass
        self.proc.terminate()
        self.proc.wait()
        mounts = [l.split()[4] for l in open("/proc/self/mountinfo") if self.dir in l.split()[4]]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def descendants(roots):
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p))
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(children.get(p, []))
    return seen


def smaps_rollup(pid):
    """/proc/PID/smaps_rollup's sizes, in KiB, by field name."""
    fields = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        k, _, v = line.partition(":")
        if v.strip().endswith("kB"):
            fields[k] = int(v.split()[0])
    return fields


def pss_kb(pids):
    total = 0
    for p in pids:
        try:
            total += smaps_rollup(p)["Pss"]
        except OSError:
            pass
    return total


def stats(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[int(len(xs) * 0.1)], xs[max(0, int(len(xs) * 0.9) - 1)]


def interleaved(title, rows, n):
    """Times each (label, fn) in turn, n rounds after 3 warm-ups; prints a
    table of median/p10/p90 and the ratio of the first to the last
    (medians). Returns the medians."""
    times = [[] for _ in rows]
    for i in range(n + 3):
        for k, (_, fn) in enumerate(rows):
            t = time.perf_counter()
            fn(i)
            if i >= 3:
                times[k].append((time.perf_counter() - t) * 1000)
    st = [stats(ts) for ts in times]
    print(f"### {title}, N={n} each, interleaved")
    print()
    print("| runtime | median ms | p10 ms | p90 ms |")
    print("| --- | --- | --- | --- |")
    for (label, _), x in zip(rows, st):
        print(f"| {label} | {x[0]:.1f} | {x[1]:.1f} | {x[2]:.1f} |")
    print(f"\nratio {rows[0][0]} / {rows[-1][0]} (median): **{st[0][0] / st[-1][0]:.2f}**\n")
    return [x[0] for x in st]


def build_images(berth, work, env):
    """Builds, into `work`, sleep.tar (the wasm sleep guest,
    bench.local/sleep:1) and busybox.tar (a native busybox image,
    bench.local/busybox:1, with sh, echo and sleep)."""
    bb = f"{work}/bbroot"
    os.makedirs(f"{bb}/bin")
    for d in ["proc", "dev", "sys", "tmp", "etc"]:
        os.makedirs(f"{bb}/{d}")
    shutil.copy("/bin/busybox", f"{bb}/bin/busybox")
    for c in ["sh", "echo", "sleep"]:
        os.symlink("busybox", f"{bb}/bin/{c}")
    sh(berth, "image", "build", f"{ROOT}/guest-examples/wat/sleep.wat", "-t", "bench.local/sleep:1", "-o", f"{work}/sleep.tar", env=env)
    sh(berth, "image", "build", "--rootfs", bb, "--entrypoint", "/bin/sh", "-t", "bench.local/busybox:1", "-o", f"{work}/busybox.tar", env=env)


BERTH, RUNC = "io.containerd.berth.v1", "io.containerd.runc.v2"
# The pause of every pod (the same busybox image for both runtimes), and
# berth's idle app: the wasm sleep guest (build_images makes both images).
PAUSE = ("bench.local/busybox:1", ["/bin/sleep", "3600"])
WASM_APP = ("bench.local/sleep:1", [])


def pod_containers(n, prefix, rt, app, extra=()):
    """n pods as CRI makes them: a native pause and one idle app container
    (image, args), all with the pod's sandbox id; (id, runtime, image,
    args, ctr flags) for each container."""
    out = []
    for i in range(n):
        sid = f"{prefix}{i}"
        ann = ["--annotation", f"io.kubernetes.cri.sandbox-id={sid}", *extra]
        out.append((sid, rt, PAUSE[0], PAUSE[1], ann))
        out.append((f"{sid}-app", rt, app[0], app[1], ann))
    return out


def run_idle(c, containers):
    """Runs containers (id, runtime, image, args, ctr flags) detached,
    without stdio."""
    for cid, rt, image, args, flags in containers:
        c.ctr("run", "-d", "--null-io", "--runtime", rt, *flags, image, cid, *args)


def main():
    bindir = os.path.abspath(sys.argv[1])
    n_cold = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    n_density = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    n_churn = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    n_pods = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    berth = f"{bindir}/berth"
    work = tempfile.mkdtemp()
    env = dict(os.environ, BERTH_ROOT=f"{work}/root")
    hello = f"{work}/guests/wasm32-wasip1/release/hello.wasm"
    sh("cargo", "build", "--release", "-q", "--manifest-path", f"{ROOT}/guest-examples/Cargo.toml", "--target", "wasm32-wasip1", "--target-dir", f"{work}/guests", "--bin", "hello")
    sh(berth, "image", "build", hello, "-t", "bench.local/hello:1", "-o", f"{work}/hello.tar", env=env)
    build_images(berth, work, env)
    c = Containerd(bindir)
    try:
        for t in ["hello", "sleep"]:
            c.ctr("image", "import", "--platform", "wasi/wasm", f"{work}/{t}.tar")
        c.ctr("image", "import", f"{work}/busybox.tar")
        berth_run = lambda i: c.ctr("run", "--rm", "--runtime", "io.containerd.berth.v1", "bench.local/hello:1", f"b{i}")
        runc_run = lambda i: c.ctr("run", "--rm", "bench.local/busybox:1", f"r{i}", "/bin/echo", "hello")
        print(f"containerd {sh('containerd', '--version').stdout.decode().split()[2]}, runc {sh('runc', '--version').stdout.decode().split()[2]}; {os.cpu_count()} cores")
        print()
        interleaved("cold `ctr run --rm`", [("berth (wasm hello)", berth_run), ("runc (busybox echo)", runc_run)], n_cold)
        native_berth = lambda i: c.ctr("run", "--rm", "--runtime", "io.containerd.berth.v1", "bench.local/busybox:1", f"nb{i}", "/bin/echo", "hello")
        native_runc = lambda i: c.ctr("run", "--rm", "bench.local/busybox:1", f"nr{i}", "/bin/echo", "hello")
        interleaved("native: cold `ctr run --rm` of busybox `echo`", [("berth (native fallback)", native_berth), ("runc", native_runc)], n_cold)
        # Churn.
        def churn(fn):
            t = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                list(ex.map(fn, range(10000, 10000 + n_churn)))
            return n_churn / (time.perf_counter() - t)
        cb, cr = churn(berth_run), churn(runc_run)
        print(f"### churn: create-start-wait-delete (`ctr run --rm`), {n_churn} tasks at parallelism 4")
        print()
        print("| runtime | tasks/s |")
        print("| --- | --- |")
        print(f"| berth | {cb:.1f} |")
        print(f"| runc | {cr:.1f} |")
        print(f"\nratio berth / runc: **{cb / cr:.2f}**\n")
        # Footprint of a shim holding one sleeping wasm guest.
        c.ctr("run", "-d", "--null-io", "--runtime", "io.containerd.berth.v1", "bench.local/sleep:1", "idle")
        time.sleep(2)
        shim = c.pids("containerd-shim-berth-v1")
        fields = smaps_rollup(shim[0])
        print("### a shim holding one sleeping wasm guest")
        print()
        print("| RSS KiB | PSS KiB | private dirty KiB | shared clean KiB | shim processes |")
        print("| --- | --- | --- | --- | --- |")
        print(f"| {fields['Rss']} | {fields['Pss']} | {fields['Private_Dirty']} | {fields['Shared_Clean']} | {len(shim)} |")
        print()
        c.ctr("task", "kill", "-s", "SIGKILL", "idle", check=False)
        time.sleep(1)
        c.ctr("task", "rm", "-f", "idle", check=False)
        c.ctr("container", "rm", "idle", check=False)
        # Density, each shape with both runtimes in the same shape.
        node_cfg = f"{work}/berth-node.toml"
        with open(node_cfg, "w") as f:
            f.write('grouping = "node"\n')

        def density(label, containers):
            """Runs containers (id, runtime, image, args, ctr flags) idle; the
            PSS of every process the runtime keeps for them (shims and their
            descendants), then removes them."""
            berth = any(rt == BERTH for _, rt, _, _, _ in containers)
            run_idle(c, containers)
            time.sleep(2)
            running = c.ctr("task", "ls").stdout.decode().count("RUNNING")
            shims = c.pids("containerd-shim-berth-v1" if berth else "containerd-shim-runc-v2")
            procs = descendants(shims)
            kb = pss_kb(procs)
            for cid, *_ in containers:
                c.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
            time.sleep(1)
            for cid, *_ in containers:
                c.ctr("task", "rm", "-f", cid, check=False)
                c.ctr("container", "rm", cid, check=False)
            return label, running, len(shims), len(procs), kb

        def pods(prefix, rt, app, extra=()):
            return pod_containers(n_pods, prefix, rt, app, extra)

        def table(title, per, n, rows):
            print(f"### density: {title}")
            print()
            print(f"| runtime | running | shim processes | processes | total PSS MiB | PSS per {per} KiB |")
            print("| --- | --- | --- | --- | --- | --- |")
            for label, running, shims, procs, kb in rows:
                print(f"| {label} | {running} | {shims} | {procs} | {kb / 1024:.1f} | {kb / n:.0f} |")
            print(f"\nratio {rows[0][0]} / {rows[-1][0]} per {per}: **{rows[0][4] / rows[-1][4]:.3f}**\n")

        sleep_app = ("bench.local/busybox:1", ["/bin/sleep", "3600"])
        runc_pods = density("runc, a shim per pod", pods("r", RUNC, sleep_app))
        berth_pods = density("berth, a shim per pod", pods("b", BERTH, WASM_APP))
        berth_node = density("berth, node-wide shim", pods("n", BERTH, WASM_APP, ["--runtime-config-path", node_cfg]))
        table(f"{n_pods} pods (pause + one idle app container), per pod", "pod", n_pods, [berth_pods, runc_pods])
        table(f"{n_pods} pods, berth's node-wide mode vs runc's shim per pod", "pod", n_pods, [berth_node, runc_pods])
        one = ["--annotation", "io.kubernetes.cri.sandbox-id=all"]
        grouped_b = density("berth, one shim", [(f"gb{i}", BERTH, *WASM_APP, one) for i in range(n_density)])
        grouped_r = density("runc, one shim", [(f"gr{i}", RUNC, *sleep_app, one) for i in range(n_density)])
        table(f"{n_density} idle containers, all in one shim (one sandbox id) for both, per container", "container", n_density, [grouped_b, grouped_r])
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
