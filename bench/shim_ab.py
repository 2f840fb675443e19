#!/usr/bin/env python3
"""Two builds of berth's shim side by side (and runc), through one private
containerd: cold `ctr run --rm` of the wasm hello, interleaved, medians and
ratios to runc. For measuring a change to the shim against the build before
it in one run, where machine noise hits both alike.

Usage: shim_ab.py BERTH_BIN_DIR SHIM_A SHIM_B [N]
(BERTH_BIN_DIR holds `berth`, used to build the images; SHIM_A and SHIM_B
are two `containerd-shim-berth-v1` binaries. They are registered as the
runtimes io.containerd.bertha.v1 and io.containerd.berthb.v1.)

Run it once with the same binary as A and B to see the noise floor.
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd as bench  # noqa: E402


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    bindir, shim_a, shim_b = (os.path.abspath(p) for p in sys.argv[1:4])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    work = tempfile.mkdtemp()
    shims = f"{work}/bin"
    os.makedirs(shims)
    shutil.copy(shim_a, f"{shims}/containerd-shim-bertha-v1")
    shutil.copy(shim_b, f"{shims}/containerd-shim-berthb-v1")
    env = dict(os.environ, BERTH_ROOT=f"{work}/root")
    hello = f"{work}/guests/wasm32-wasip1/release/hello.wasm"
    bench.sh("cargo", "build", "--release", "-q", "--manifest-path", f"{bench.ROOT}/guest-examples/Cargo.toml", "--target", "wasm32-wasip1", "--target-dir", f"{work}/guests", "--bin", "hello")
    bb = f"{work}/bbroot"
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"]:
        os.makedirs(f"{bb}/{d}")
    shutil.copy("/bin/busybox", f"{bb}/bin/busybox")
    os.symlink("busybox", f"{bb}/bin/echo")
    bench.sh(f"{bindir}/berth", "image", "build", hello, "-t", "bench.local/hello:1", "-o", f"{work}/hello.tar", env=env)
    bench.sh(f"{bindir}/berth", "image", "build", "--rootfs", bb, "--entrypoint", "/bin/echo", "-t", "bench.local/busybox:1", "-o", f"{work}/busybox.tar", env=env)
    c = bench.Containerd(shims)
    try:
        c.ctr("image", "import", "--platform", "wasi/wasm", f"{work}/hello.tar")
        c.ctr("image", "import", f"{work}/busybox.tar")
        rows = [
            ("A", lambda i: c.ctr("run", "--rm", "--runtime", "io.containerd.bertha.v1", "bench.local/hello:1", f"a{i}")),
            ("B", lambda i: c.ctr("run", "--rm", "--runtime", "io.containerd.berthb.v1", "bench.local/hello:1", f"b{i}")),
            ("runc", lambda i: c.ctr("run", "--rm", "bench.local/busybox:1", f"r{i}", "/bin/echo", "hello")),
        ]
        a, b, _ = bench.interleaved("cold `ctr run --rm`", rows, n)
        print(f"B / A (median): **{b / a:.3f}**")
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
