#!/usr/bin/env python3
"""Measures which functions a shim runs, and writes shim/hot-symbols-ARCH.txt
(ARCH: this machine's), the order in which ./dist.sh lays them out for
that architecture (lld's --symbol-ordering-file, through
shim/link-hot-first.sh, which matches the names to a build's symbols).

Usage: hot_symbols.py [OUT]   (root; default OUT shim/hot-symbols-ARCH.txt)

Why: an idle shim maps every page of the binary it touches, and the kernel
maps a touched page's neighbours too (fault-around, large page-cache
folios). Scattered over the binary's text, the few thousand functions a
shim runs map most of it; laid out together, a few MB.

How:
1. `./dist.sh` (host architecture) builds a measuring binary: the release
   build, unstripped (-C strip=none, for the final crate only), with every
   function aligned to its own page (LLVM's -align-all-functions=12), so
   that a page present means the function starting on it ran.
2. The binary is copied onto a loop-mounted ext4 with read-ahead off and
   a cold page cache.
3. Through a private containerd (bench/containerd.py), a shim is made the
   way a pod's is and sampled from /proc/PID/pagemap:
   phase A: it starts and holds one sleeping wasm guest, whose module it
   has compiled (in a helper process: the first pod of an image);
   phase B: a native busybox container joins its group and the wasm guest
   is killed and deleted.
4. The list: phase A's functions, then phase B's others (each group in
   the order of the binary), then the read-only data symbols on pages
   either phase read.

A function is also listed when the kernel mapped its page into the shim
around a page the shim touched (fault-around, up to 64 KB) because another
process of the binary (the shim's `start`, the compile helper) had just
read it: the list holds somewhat more than the shim ran. Functions of C code are not aligned:
every one on a page present is listed.

It builds in the cargo target directory (the dist binary there is the
measuring one until the next ./dist.sh), and uses a loop device, a
temporary directory and the containerd it starts, all removed at the end.
"""
import datetime
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd as cb  # noqa: E402
from loopfs import LoopFs, run  # noqa: E402

ROOT = cb.ROOT
PAGE = 4096


def present_pages(pid, binary_path):
    """The addresses of the pages of `binary_path`'s mappings in process
    `pid` that are present in memory."""
    pages, path = set(), os.path.realpath(binary_path)
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pm:
        for line in maps:
            f = line.split()
            if len(f) < 6 or f[5] != path:
                continue
            start, end = (int(x, 16) for x in f[0].split("-"))
            pm.seek(start // PAGE * 8)
            data = pm.read((end - start) // PAGE * 8)
            for i in range((end - start) // PAGE):
                if struct.unpack_from("<Q", data, i * 8)[0] >> 63:
                    pages.add(start + i * PAGE)
    if not pages:
        sys.exit(f"hot_symbols.py: no page of {binary_path} is present in process {pid}")
    return pages


def remove(c, container):
    """Kills `container`'s task, and deletes it and the container."""
    c.ctr("task", "kill", "-s", "KILL", container)
    for _ in range(100):
        if any(line.split()[:1] == [container] and "STOPPED" in line for line in c.ctr("task", "ls").stdout.decode().splitlines()):
            break
        time.sleep(0.1)
    c.ctr("task", "delete", container)
    c.ctr("container", "delete", container)


def wait_gone(c):
    """Waits for the shims (which end with their last container) to exit."""
    for _ in range(100):
        if not c.pids("containerd-shim-berth-v1"):
            return
        time.sleep(0.1)
    sys.exit("hot_symbols.py: a shim outlived its containers")


def symbols(binary):
    """(address, size, type, name) of every sized symbol, by address."""
    out = []
    for line in run("nm", "-n", "-S", "--defined-only", binary).splitlines():
        f = line.split()
        if len(f) == 4 and int(f[1], 16) > 0:
            out.append((int(f[0], 16), int(f[1], 16), f[2], f[3]))
    return out


def main():
    if os.geteuid() != 0:
        sys.exit("hot_symbols.py needs root (a loop device, containerd)")
    arch = os.uname().machine
    out_path = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else f"{ROOT}/shim/hot-symbols-{arch}.txt")
    work = tempfile.mkdtemp(prefix="berth-hot-")
    dist = f"{work}/dist"
    env = dict(os.environ, HOT_SYMBOLS="", DIST_DIR=dist, DIST_RUSTC_ARGS="-C llvm-args=-align-all-functions=12 -C strip=none")
    print(f"== building the measuring binary (./dist.sh {arch}, every function on its own page)", flush=True)
    subprocess.run([f"{ROOT}/dist.sh", arch], check=True, env=env, stdout=subprocess.DEVNULL)
    version = run("sed", "-n", 's/^version = "\\(.*\\)"/\\1/p', f"{ROOT}/Cargo.toml").splitlines()[0]
    measuring = f"{dist}/berth-{version}-{arch}-linux/berth"
    # The images are built by another copy of the binary, so that the
    # measured copy's page cache stays cold.
    cb.build_images(measuring, work, dict(os.environ, BERTH_ROOT=f"{work}/berth-root"))

    fs = LoopFs(work, os.path.getsize(measuring) + (64 << 20))
    c = None
    try:
        bindir = fs.install(measuring, "bin")
        binary = f"{bindir}/berth"
        c = cb.Containerd(bindir)
        c.ctr("image", "import", "--platform", "wasi/wasm", f"{work}/sleep.tar")
        c.ctr("image", "import", f"{work}/busybox.tar")
        group = ("--annotation", "berth.dev/group=hot")
        fs.cold(0)
        print("== phase A: a shim holding one sleeping wasm guest", flush=True)
        c.ctr("run", "-d", "--null-io", *group, "--runtime", "io.containerd.berth.v1", "bench.local/sleep:1", "guest")
        time.sleep(5)
        shims = c.pids("containerd-shim-berth-v1")
        if len(shims) != 1:
            sys.exit(f"hot_symbols.py: expected one shim, found {shims}")
        shim = shims[0]
        phase_a = present_pages(shim, binary)
        print("== phase B: a native container joins; the guest is killed and deleted", flush=True)
        c.ctr("run", "-d", "--null-io", *group, "--runtime", "io.containerd.berth.v1", "bench.local/busybox:1", "native", "/bin/sleep", "600")
        remove(c, "guest")
        time.sleep(1)
        phase_b = present_pages(shim, binary) | phase_a
        remove(c, "native")
        wait_gone(c)
    finally:
        if c:
            c.stop()
        fs.close()

    syms = symbols(measuring)
    text = [s for s in syms if s[2] in "tTwW"]
    ran = lambda pages: [s[3] for s in text if s[0] // PAGE * PAGE in pages]  # noqa: E731
    first = ran(phase_a)
    seen = set(first)
    then = [n for n in ran(phase_b) if n not in seen]
    data = [s[3] for s in syms if s[2] in "rR" and any(p in phase_b for p in range(s[0] // PAGE * PAGE, s[0] + s[1], PAGE))]
    commit = run("git", "-C", ROOT, "describe", "--always", "--dirty")
    sizes = {s[3]: s[1] for s in text}
    size = lambda names: sum(sizes[n] for n in names)  # noqa: E731
    with open(out_path, "w") as f:
        f.write("# The link order of ./dist.sh (lld --symbol-ordering-file): what a shim runs, laid\n")
        f.write(f"# out together. Written by bench/hot_symbols.py on {datetime.date.today()} from {commit} ({arch}).\n")
        f.write(f"# {len(first)} functions an idle shim ran, its guest's module compiled by its helper ({size(first)} bytes),\n")
        f.write(f"# {len(then)} more of a native container and a delete ({size(then)} bytes), {len(data)} read-only data symbols.\n")
        for n in first + then + data:
            f.write(n + "\n")
    print(f"== {out_path}: {len(first)} + {len(then)} functions ({size(first)} + {size(then)} bytes of {sum(s[1] for s in text)}), {len(data)} data symbols")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
