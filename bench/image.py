#!/usr/bin/env python3
"""Image import + first run vs a second run of a ~10 MB wasm image.

Usage: image.py BERTH N. Generates a module with ~10 MB of code (so the
first run pays for unpacking and compiling), builds it as a wasi/wasm image
and as a wasm artifact with `berth image build`, then per round, in a fresh
BERTH_ROOT: `berth image import` + `berth run` (cold), then `berth run`
again (rootfs and precompile cache hit). Prints median / p10 / p90 and the
ratio of the second run to import + first run.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

FUNCS = 92000


def module_wat():
    body = "\n".join(
        f"(func $f{i} (param i32) (result i32) "
        + " ".join(f"local.get 0 i32.const {i * 7 + k} i32.add i32.const {k + 3} i32.mul local.set 0" for k in range(8))
        + " local.get 0)"
        for i in range(FUNCS)
    )
    return f"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "big image ok\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  {body})"""


def run(cmd, env):
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    d = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()}")
    return d, r.stdout.decode()


def main():
    berth, n = sys.argv[1], int(sys.argv[2])
    work = tempfile.mkdtemp()
    env = dict(os.environ, BERTH_ROOT=os.path.join(work, "build-root"))
    wat = os.path.join(work, "big.wat")
    with open(wat, "w") as f:
        f.write(module_wat())
    archives = {}
    for form, extra in [("wasi/wasm image", []), ("wasm artifact", ["--artifact"])]:
        out = os.path.join(work, f"{len(archives)}.tar")
        run([berth, "image", "build", wat, "-t", "example.com/big:1", "-o", out] + extra, env)
        archives[form] = out
    wasm_size = os.path.getsize(archives["wasm artifact"])
    print(f"module: {FUNCS} functions, artifact archive {wasm_size / 1e6:.1f} MB; {os.cpu_count()} cores; N={n}")
    print()
    print("| image form | import | first run | import + first run | second run | second / (import + first) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for form, archive in archives.items():
        imp, first, second = [], [], []
        for i in range(n):
            env = dict(os.environ, BERTH_ROOT=os.path.join(work, f"root-{len(archive)}-{i}"))
            imp.append(run([berth, "image", "import", archive], env)[0])
            d, out = run([berth, "run", "example.com/big:1"], env)
            assert "big image ok" in out, out
            first.append(d)
            second.append(run([berth, "run", "example.com/big:1"], env)[0])
            subprocess.run(["rm", "-rf", env["BERTH_ROOT"]])
        def fmt(xs):
            xs = sorted(xs)
            return f"{statistics.median(xs):.0f} ms ({xs[0]:.0f}–{xs[-1]:.0f})"
        cold = [a + b for a, b in zip(imp, first)]
        print(f"| {form} | {fmt(imp)} | {fmt(first)} | {fmt(cold)} | {fmt(second)} | {statistics.median(second) / statistics.median(cold):.3f} |")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
