#!/usr/bin/env bash
# Fetches the containerd releases of berth's test matrix that Debian 12
# does not install: 1.7 from Debian 13 (trixie) and 2.x from Debian sid.
# Nothing is installed or upgraded: `apt-get download` fetches each
# `containerd` package through a sources list of its own (with its own
# package lists and cache), and `dpkg-deb -x` unpacks it into
# $BERTH_CONTAINERD_CACHE/<suite>/ (default /var/cache/berth-containerd).
# Prints one line per suite: the directory whose usr/bin holds that
# release's containerd, ctr and containerd-shim-runc-v2.
#
# Usage: tests/containerd-matrix.sh [SUITE...]   (default: trixie sid)
set -euo pipefail

cache=${BERTH_CONTAINERD_CACHE:-/var/cache/berth-containerd}
suites=("$@")
((${#suites[@]})) || suites=(trixie sid)

# The mirror this machine already uses for Debian.
uris=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
if [[ -z $uris ]]; then
  uris=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\)[[:space:]].*/\2/p' /etc/apt/sources.list 2>/dev/null | grep -v security | head -1)
fi
if [[ -z $uris ]]; then
  echo "containerd-matrix: no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list; add one, then run $0 again" >&2
  exit 1
fi

for suite in "${suites[@]}"; do
  dir=$cache/$suite
  if [[ -x $dir/usr/bin/containerd && -x $dir/usr/bin/ctr ]]; then
    echo "$dir"
    continue
  fi
  work=$cache/.apt-$suite
  rm -rf "$work" "$dir.new"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$dir.new"
  cat >"$work/$suite.sources" <<EOF
Types: deb
URIs: $uris
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_opts=(-o "Dir::Etc::sourcelist=$work/$suite.sources" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Get::List-Cleanup=0)
  if ! apt-get "${apt_opts[@]}" update -qq >"$work/update.log" 2>&1; then
    echo "containerd-matrix: apt-get update of Debian $suite failed (log: $work/update.log):" >&2
    tail -5 "$work/update.log" >&2
    echo "fix the network or mirror, then run: $0 $suite" >&2
    exit 1
  fi
  if ! (cd "$work/debs" && apt-get "${apt_opts[@]}" download containerd >"$work/download.log" 2>&1); then
    echo "containerd-matrix: apt-get download containerd from Debian $suite failed (log: $work/download.log):" >&2
    tail -5 "$work/download.log" >&2
    echo "then run: $0 $suite" >&2
    exit 1
  fi
  dpkg-deb -x "$work"/debs/containerd_*.deb "$dir.new"
  rm -rf "$dir"
  mv "$dir.new" "$dir"
  rm -rf "$work"
  echo "$dir"
done
