#!/usr/bin/env bash
# berth's test command: installs what the tests need when it is missing
# (the wasm targets; Debian's packages, on Debian), then checks formatting
# and lints, and runs every test, the end-to-end ones against a real
# containerd included. On a terminal it asks before it installs anything.
# Without arguments it then builds the aarch64 release binary (./dist.sh)
# and runs the `berth` command's suites for running, images and serving
# against it, through qemu-user, as an aarch64 board would run it.
# Arguments go to `cargo test` instead, and only it runs
# (e.g. `./test.sh -p berth-shim --test cri`).
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '== %s\n' "$*"; }

# Debian packages: gcc for crates that build C; containerd and runc for the
# end-to-end tests (they start their own containerd); libseccomp-dev for
# libcontainer's seccomp; busybox-static for native containers' rootfs;
# iproute2 for network namespaces; curl for the HTTP tests;
# containernetworking-plugins for the CRI suite's pod networks;
# protobuf-compiler for its CRI client's generated code (k8s-cri);
# docker-registry (the CNCF distribution registry), apache2-utils
# (htpasswd) and openssl for the registry tests; qemu-user-static to run
# the aarch64 release binary (./dist.sh installs its cross compiler).
need=()
command -v cc >/dev/null || need+=(gcc)
command -v curl >/dev/null || need+=(curl)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
if (($# == 0)) && [[ $(uname -m) != aarch64 ]]; then
  command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
fi

# Asks on a terminal (not in CI); elsewhere the answer is yes.
agree() {
  if [[ -t 0 && -z "${CI:-}" ]]; then
    read -r -p "$1 [y/N] " answer
    [[ $answer == [yY]* ]]
  fi
}

if ((${#need[@]})); then
  if [[ ! -f /etc/debian_version ]]; then
    echo "berth's tests need: ${need[*]} (Debian package names); install them, then run $0 again" >&2
    exit 1
  fi
  sudo=()
  ((EUID == 0)) || sudo=(sudo)
  if ! agree "install ${need[*]} with apt-get?"; then
    echo "not installing; the tests need: ${need[*]}" >&2
    exit 1
  fi
  log "installing ${need[*]}"
  # Never start the system-wide containerd (or registry) service while
  # installing: the tests run their own, in temp dirs.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null && "${sudo[@]}" chmod +x "$policy"
    trap '"${sudo[@]}" rm -f "$policy"' EXIT
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}"
fi

# The toolchain comes from rust-toolchain.toml; rustup does not add its
# targets by itself.
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
targets=(wasm32-wasip1 wasm32-wasip2)
installed=$(rustup target list --installed)
missing=()
for t in "${targets[@]}"; do grep -qx "$t" <<<"$installed" || missing+=("$t"); done
if ((${#missing[@]})); then
  agree "add the Rust targets ${missing[*]} with rustup?" || { echo "not adding; the guest programs need ${missing[*]}" >&2; exit 1; }
  log "rustup target add ${missing[*]}"
  rustup target add "${missing[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >/dev/null

if ((EUID != 0)); then
  echo "the end-to-end tests start containerd and make namespaces: run $0 as root" >&2
  exit 1
fi

log "cargo fmt --all --check"
cargo fmt --all --check
log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test --workspace $*"
cargo test --workspace "$@"
(($# == 0)) || exit 0

# The containerd matrix: the suites that run berth under containerd, again
# against containerd 1.7 (Debian 13's package) and 2.x (Debian sid's), each
# with its own ctr and runc shim first on PATH and its own config schema
# (the workspace run above used Debian 12's 1.6). The packages are fetched
# and unpacked, not installed (tests/containerd-matrix.sh).
log "fetching containerd 1.7 and 2.x (tests/containerd-matrix.sh)"
# (Not `< <(...)`: a failed fetch must fail the run, not skip the matrix.)
fetched=$(tests/containerd-matrix.sh)
mapfile -t releases <<<"$fetched"
((${#releases[@]} == 2)) || { echo "tests/containerd-matrix.sh gave ${#releases[@]} releases, not 2: $fetched" >&2; exit 1; }
for dir in "${releases[@]}"; do
  log "the containerd suites against $("$dir/usr/bin/containerd" --version | cut -d' ' -f3)"
  PATH="$dir/usr/bin:$PATH" cargo test --no-fail-fast --workspace \
    --test bootstrap --test wasm --test grouping --test failures --test native --test network --test users --test cri
  PATH="$dir/usr/bin:$PATH" cargo test --no-fail-fast --workspace --test install --test registry containerd
done

# The aarch64 release binary, run as a board runs it. On another machine
# the kernel runs aarch64 executables through qemu-user (binfmt_misc, as
# qemu-user-static registers it on a systemd machine), so berth's own
# re-executions of itself (its helpers) go through qemu too.
./dist.sh aarch64
if [[ $(uname -m) != aarch64 ]]; then
  binfmt=/proc/sys/fs/binfmt_misc
  [[ -e $binfmt/register ]] || mount -t binfmt_misc binfmt_misc "$binfmt"
  if [[ ! -e $binfmt/qemu-aarch64 ]]; then
    agree "register qemu-aarch64 with binfmt_misc, to run aarch64 executables?" || { echo "not registering; the aarch64 tests need it" >&2; exit 1; }
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$binfmt/register"
  fi
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
release=${CARGO_TARGET_DIR:-target}/berth-dist/berth-$version-aarch64-linux/berth
log "the berth suites (run_basics, images, serve) against $release"
# With the address space of a board whose kernel gives a process 39 bits of
# it (512 GiB; 256 GiB leaves room for the rest), so berth sizes its
# instance pools as it does there. It also keeps qemu-user (which keeps
# bookkeeping for every page a process reserves) from running out of
# memory on the terabytes a pool may reserve on a 48-bit kernel.
(
  ulimit -v $((256 << 20))
  BERTH_BIN=$(realpath "$release") cargo test --no-fail-fast --workspace --test run_basics --test images --test serve
)
