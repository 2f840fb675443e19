#!/usr/bin/env python3
"""`berth image pull` vs containerd's `ctr` pulling the same images from one
local registry (Debian's docker-registry on 127.0.0.1, plain HTTP), side by
side, interleaved.

Usage: pull.py BERTH_BIN_DIR [N]

Images (pushed once by berth): a 10 MB wasm artifact (application/wasm
layer) and a 10 MB compat wasi/wasm image (tar+gzip layer); the module is
hello.wasm plus a 10 MiB custom section of random bytes, so that gzip does
not shrink it. Each round pulls into an empty store: berth with a fresh
BERTH_ROOT, containerd in a fresh namespace with content_sharing_policy
"isolated" (no blob is shared between rounds). berth's pull stores the
blobs; so does `ctr content fetch`; `ctr image pull` also unpacks the
compat image into a snapshot (berth unpacks at its first run).
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from containerd import Containerd, interleaved, sh  # noqa: E402
from serve import free_port, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def big_module(path, hello):
    data = bytearray(open(hello, "rb").read())
    payload = os.urandom(10 << 20)
    name = b"pad"
    section = bytes([len(name)]) + name + payload
    n, leb = len(section), bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        leb.append(b | (0x80 if n else 0))
        if not n:
            break
    data += b"\x00" + leb + section
    open(path, "wb").write(data)


def main():
    bindir = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    berth = os.path.join(bindir, "berth")
    work = tempfile.mkdtemp(prefix="berth-bench-pull-")
    port = free_port()
    with open(f"{work}/registry.yml", "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/registry\nhttp:\n  addr: 127.0.0.1:{port}\n")
    reg = subprocess.Popen(["docker-registry", "serve", f"{work}/registry.yml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctrd = Containerd(bindir, '[plugins."io.containerd.metadata.v1.bolt"]\n  content_sharing_policy = "isolated"\n')
    try:
        wait_port(port)
        hello = os.path.join(work, "guests/wasm32-wasip1/release/hello.wasm")
        sh("cargo", "build", "--release", "-q", "--manifest-path", f"{ROOT}/guest-examples/Cargo.toml", "--target", "wasm32-wasip1", "--target-dir", f"{work}/guests", "--bin", "hello")
        big_module(f"{work}/big.wasm", hello)
        env = dict(os.environ, BERTH_ROOT=f"{work}/pusher")
        artifact, compat = f"127.0.0.1:{port}/bench/artifact:1", f"127.0.0.1:{port}/bench/compat:1"
        sh(berth, "image", "build", f"{work}/big.wasm", "-t", artifact, "--artifact", env=env)
        sh(berth, "image", "build", f"{work}/big.wasm", "-t", compat, env=env)
        for ref in (artifact, compat):
            sh(berth, "image", "push", ref, "--plain-http", env=env)

        def berth_pull(ref):
            def run(i):
                root = f"{work}/edge"
                shutil.rmtree(root, ignore_errors=True)
                sh(berth, "image", "pull", "-q", "--plain-http", ref, env=dict(os.environ, BERTH_ROOT=root))
            return run

        def ctr(ref, *how):
            def run(i):
                ns = f"pull{len(how)}{i}{ref[-10:].replace('/', '').replace(':', '')}"
                sh("ctr", "--address", f"{ctrd.dir}/c.sock", "--namespace", ns, *how, "--plain-http", ref)
            return run

        print("## Pulling from a local registry (10 MB, plain HTTP on loopback)")
        print()
        print(f"{subprocess.run(['docker-registry', '--version'], capture_output=True, text=True).stdout.strip()}; "
              f"{subprocess.run(['containerd', '--version'], capture_output=True, text=True).stdout.strip()}; {os.uname().machine}; {os.cpu_count()} cores")
        print()
        interleaved("wasm artifact (application/wasm layer)", [("berth image pull", berth_pull(artifact)), ("ctr content fetch", ctr(artifact, "content", "fetch"))], n)
        interleaved("compat wasi/wasm image (tar+gzip layer)", [("berth image pull", berth_pull(compat)), ("ctr content fetch", ctr(compat, "content", "fetch"))], n)
        interleaved("compat image, ctr unpacking too", [("berth image pull", berth_pull(compat)), ("ctr image pull", ctr(compat, "image", "pull"))], n)
    finally:
        reg.terminate()
        reg.wait()
        ctrd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
