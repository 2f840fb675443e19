#!/usr/bin/env bash
# berth's benchmarks, side by side in one run. Prints markdown tables for
# BENCHMARKS.md. Installs wasmtime-cli 48.0.8 from crates.io into
# $BENCH_CACHE (default /var/cache/berth-bench) when it is not there.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-30}
BENCH_CACHE=${BENCH_CACHE:-/var/cache/berth-bench}
WASMTIME_VERSION=48.0.8
WASMTIME="$BENCH_CACHE/wasmtime-$WASMTIME_VERSION/bin/wasmtime"
if [[ ! -x "$WASMTIME" ]]; then
  echo "installing wasmtime-cli $WASMTIME_VERSION into $BENCH_CACHE (one time, several minutes)" >&2
  cargo install --locked "wasmtime-cli@$WASMTIME_VERSION" --root "$BENCH_CACHE/wasmtime-$WASMTIME_VERSION" >&2
fi
cargo build --release -q -p berth-host --bin berth
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BERTH="$TARGET_DIR/release/berth"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q --manifest-path guest-examples/Cargo.toml --target wasm32-wasip1 --target-dir "$work/guests" --bin hello
HELLO="$work/guests/wasm32-wasip1/release/hello.wasm"
export BERTH_ROOT="$work/berth-root"
"$WASMTIME" compile "$HELLO" -o "$work/hello.wasmtime.cwasm"
"$BERTH" compile "$HELLO" -o "$work/hello.berth.cwasm" >/dev/null
"$BERTH" compile "$HELLO" >/dev/null   # fill the cache for the .wasm case
"$BERTH" image build "$HELLO" -t bench/hello:1 >/dev/null
"$BERTH" image build "$HELLO" -t bench/hello-artifact:1 --artifact >/dev/null
"$BERTH" run bench/hello:1 >/dev/null && "$BERTH" run bench/hello-artifact:1 >/dev/null   # unpack + cache

echo "## Cold start of the precompiled hello module (wasm32-wasip1), N=$N each"
echo
echo "$("$WASMTIME" --version); $(uname -srm); $(nproc) cores; $(date -u +%F)"
echo
python3 bench/startup.py "$N" \
  "wasmtime run=$WASMTIME run --allow-precompiled $work/hello.wasmtime.cwasm" \
  "berth run (.cwasm)=$BERTH run --allow-precompiled $work/hello.berth.cwasm" \
  "berth run (.wasm, cache hit)=$BERTH run $HELLO" \
  "berth run IMAGE (wasi/wasm, unpacked, cache hit)=$BERTH run bench/hello:1" \
  "berth run IMAGE (wasm artifact, cache hit)=$BERTH run bench/hello-artifact:1"
echo
echo "## In-process instantiate + run (shared engine, pooling allocator)"
echo
cargo bench -q -p berth-host --bench instantiate 2>&1 >/dev/null | grep instantiate
cargo bench -q -p berth-host --bench instantiate -- "$HELLO" 2>&1 >/dev/null | grep instantiate | sed "s|$work/guests/||"
echo
echo "## containerd: berth's shim vs runc"
echo
if [[ ! -x /bin/busybox ]]; then
  apt-get install -y busybox-static >&2
fi
cargo build --release -q -p berth-shim
python3 bench/containerd.py "$TARGET_DIR/release" "${N_CTR:-20}" "${N_DENSITY:-200}" "${N_CHURN:-40}"
echo
echo "## Image: import + first run vs second run of a ~10 MB wasm image"
echo
python3 bench/image.py "$BERTH" "${N_IMAGE:-5}"
