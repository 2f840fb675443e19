#!/usr/bin/env bash
# Builds berth's release artifacts: for each architecture, one static,
# stripped multi-call binary (`berth`; as `containerd-shim-berth-v1` it is
# the shim), a tarball holding it with the shim's link, and SHA256SUMS.
#
#   ./dist.sh                  # x86_64 and aarch64
#   ./dist.sh aarch64          # one of them
#   DIST_DIR=out ./dist.sh     # where the artifacts go (default target/berth-dist)
#
# The functions (and read-only data) a shim touches to start and hold a
# guest are laid out together, first in their sections, in the order of
# shim/hot-symbols-ARCH.txt (lld's --symbol-ordering-file): an idle shim
# then maps a few MB of the binary's pages instead of most of them. The
# list is measured by bench/hot_symbols.py on a machine of that
# architecture (symbol names differ between targets). shim/link-hot-first.sh
# matches its names to the build's symbols without their hashes, which
# change with any change of a crate's dependencies; names a build no longer
# has are skipped (dist.sh says how many matched), so a stale list costs
# memory, never correctness. An architecture without a list is linked in
# the default order.
#   HOT_SYMBOLS= ./dist.sh     # link without a list
#   HOT_SYMBOLS=f ./dist.sh    # with list f (a path from the repository root)
#   DIST_RUSTC_ARGS='...'      # extra rustc arguments for the final crate
#                              # (whose fat-LTO codegen makes all the code)
#
# Statically linked with glibc (Debian's libc.a and libseccomp.a), not PIE:
# no dynamic loader, no relocations to apply at start. aarch64 is cross-built
# with Debian's gcc-aarch64-linux-gnu and the arm64 libseccomp-dev package,
# unpacked into the target directory (dpkg is given the arm64 architecture
# to download it; nothing of it is installed).
# Installs what is missing, asking first on a terminal.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '== %s\n' "$*"; }
agree() {
  if [[ -t 0 && -z "${CI:-}" ]]; then
    read -r -p "$1 [y/N] " answer
    [[ $answer == [yY]* ]]
  fi
}
sudo=()
((EUID == 0)) || sudo=(sudo)

arches=("$@")
((${#arches[@]})) || arches=(x86_64 aarch64)
for a in "${arches[@]}"; do
  [[ $a == x86_64 || $a == aarch64 ]] || { echo "dist.sh: unknown architecture $a; berth builds for x86_64 and aarch64" >&2; exit 2; }
done

target_dir=${CARGO_TARGET_DIR:-target}
dist=${DIST_DIR:-$target_dir/berth-dist}
[[ -z ${HOT_SYMBOLS:-} || -f ${HOT_SYMBOLS:-} ]] || { echo "dist.sh: the hot symbol list $HOT_SYMBOLS does not exist (HOT_SYMBOLS= links without one)" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
host=$(uname -m)

need=()
command -v cc >/dev/null || need+=(gcc)
command -v file >/dev/null || need+=(file)
dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev)
for a in "${arches[@]}"; do
  if [[ $a == aarch64 && $host != aarch64 ]]; then
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
  fi
done
if ((${#need[@]})); then
  agree "install ${need[*]} with apt-get?" || { echo "not installing; the release build needs: ${need[*]}" >&2; exit 1; }
  log "installing ${need[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}"
fi

# libseccomp.a for a foreign architecture: the Debian package's files,
# unpacked under the target directory.
seccomp_lib() {
  local arch=$1 deb=$2
  if [[ $arch == "$host" ]]; then
    echo "/usr/lib/$arch-linux-gnu"
    return
  fi
  local dir=$target_dir/dist-sysroot/$deb
  if [[ ! -f $dir/usr/lib/$arch-linux-gnu/libseccomp.a ]]; then
    if ! dpkg --print-foreign-architectures | grep -qx "$deb"; then
      agree "add the $deb architecture to dpkg (for libseccomp-dev:$deb)?" || { echo "not adding; the $arch build needs libseccomp-dev:$deb" >&2; exit 1; }
      "${sudo[@]}" dpkg --add-architecture "$deb"
      "${sudo[@]}" apt-get update -qq
    fi
    mkdir -p "$dir"
    (cd "$dir" && apt-get download -qq "libseccomp-dev:$deb" >&2) || { echo "downloading libseccomp-dev:$deb failed" >&2; exit 1; }
    dpkg-deb -x "$dir"/libseccomp-dev_*.deb "$dir"
  fi
  echo "$(cd "$dir" && pwd)/usr/lib/$arch-linux-gnu"
}

installed=$(rustup target list --installed)
mkdir -p "$dist"
for a in "${arches[@]}"; do
  triple=$a-unknown-linux-gnu
  grep -qx "$triple" <<<"$installed" || { log "rustup target add $triple"; rustup target add "$triple" >/dev/null; }
  case $a in x86_64) deb=amd64 ;; aarch64) deb=arm64 ;; esac
  upper=$(tr 'a-z-' 'A-Z_' <<<"$triple")
  # Static, not PIE; linked by the toolchain's lld, which folds identical
  # functions (--icf=all: generic code instantiated alike for many types).
  gcc_ld=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld
  export "CARGO_TARGET_${upper}_RUSTFLAGS=-C target-feature=+crt-static -C relocation-model=static -C link-arg=-fuse-ld=lld -C link-arg=-B$gcc_ld -C link-arg=-Wl,--icf=all"
  if [[ $a != "$host" ]]; then
    export "CARGO_TARGET_${upper}_LINKER=$a-linux-gnu-gcc" "CC_${triple//-/_}=$a-linux-gnu-gcc" "AR_${triple//-/_}=$a-linux-gnu-ar"
  fi
  LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=$(seccomp_lib "$a" "$deb") || exit 1
  export LIBSECCOMP_LINK_TYPE LIBSECCOMP_LIB_PATH
  hot=${HOT_SYMBOLS-shim/hot-symbols-$a.txt}
  [[ -z $hot || -f $hot ]] || { log "no $hot: $a is linked in the default order"; hot=; }
  # lld's -O2 also merges a string into one it ends (tail merging), for the
  # final link only (the other crates' builds are not changed by it).
  final=(-C link-arg=-Wl,-O2)
  # The count of the last link with this list (a build cargo finds fresh
  # does not link again); none without a list.
  order=$target_dir/$triple/dist/hot-order.txt
  [[ -n $hot ]] || rm -f "$order.matched"
  if [[ -n $hot ]]; then
    # The list's names are matched to this build's symbols at the link.
    linker=cc nm=nm
    [[ $a == "$host" ]] || linker=$a-linux-gnu-gcc nm=$a-linux-gnu-nm
    mkdir -p "$(dirname "$order")"
    export BERTH_LINKER=$linker BERTH_NM=$nm BERTH_HOT_SYMBOLS=$(realpath "$hot") BERTH_HOT_ORDER=$(realpath -m "$order")
    # Cargo links again when its arguments change, not when a file they
    # name does: the list's and the linker's digest is one of them.
    final+=(-C "linker=$PWD/shim/link-hot-first.sh" --cfg "berth_hot_order=\"$(cat "$hot" shim/link-hot-first.sh | sha256sum | cut -c1-16)\"")
  fi
  read -r -a extra <<<"${DIST_RUSTC_ARGS:-}"
  final+=("${extra[@]}")
  log "cargo rustc --profile dist --target $triple ${final[*]:+-- ${final[*]}}"
  cargo rustc --locked --profile dist --target "$triple" -p berth-shim --bin containerd-shim-berth-v1 ${final[@]:+-- "${final[@]}"}
  if [[ -f $order.matched ]]; then
    read -r matched listed exactly <"$order.matched"
    echo "hot symbols: $matched of the $listed Rust names in $hot matched ($exactly exactly); $(wc -l <"$order") symbols laid out first"
    ((matched * 10 >= listed * 9)) || echo "dist.sh: warning: $hot no longer fits this build; an idle shim maps more of the binary until bench/hot_symbols.py measures it again" >&2
  fi
  name=berth-$version-$a-linux
  stage=$dist/$name
  rm -rf "$stage"
  mkdir -p "$stage"
  cp "$target_dir/$triple/dist/containerd-shim-berth-v1" "$stage/berth"
  ln -s berth "$stage/containerd-shim-berth-v1"
  cp "$stage/berth" "$dist/$name.bin"
  tar -C "$dist" -czf "$dist/$name.tar.gz" "$name"
  file "$stage/berth" | sed "s|^$dist/||"
  echo "$name/berth: $(stat -c %s "$stage/berth") bytes"
  grep -q 'statically linked' <(file "$stage/berth") || { echo "dist.sh: $stage/berth is not statically linked" >&2; exit 1; }
done
(cd "$dist" && sha256sum berth-"$version"-*.bin berth-"$version"-*.tar.gz >SHA256SUMS)
log "artifacts in $dist"
cat "$dist/SHA256SUMS"
