#!/usr/bin/env bash
# The linker of ./dist.sh's final link (rustc's `-C linker`): runs
# $BERTH_LINKER with the arguments rustc gives it, plus an lld symbol
# ordering (--symbol-ordering-file) that lays out the symbols named in
# $BERTH_HOT_SYMBOLS first, in that file's order.
#
# The list names Rust symbols without what changes between builds: the
# hash a legacy-mangled symbol ends in (`17h<16 hex digits>E`), which
# changes whenever a crate's dependencies do (cargo's -C metadata), and the
# `.N` suffix LLVM gives local symbols of the same name. A list of exact
# names goes stale at the first new dependency. Here each listed Rust name
# the build has exactly takes its place in the order; for one it lacks,
# every symbol of the Rust objects being linked with the same name, so
# stripped, does. Other names (C: the libc, zstd, ring) are stable and
# passed on as they are.
#
# Writes the ordering to $BERTH_HOT_ORDER, and to $BERTH_HOT_ORDER.matched
# how many of the listed Rust names (without hash) matched, of how many,
# and how many of those exactly; dist.sh reports them.
set -euo pipefail
: "${BERTH_LINKER:?the real linker}" "${BERTH_HOT_SYMBOLS:?the list}" "${BERTH_HOT_ORDER:?where the ordering goes}"

# The objects rustc links (its arguments, or a response file's lines).
objects=()
for arg in "$@"; do
  if [[ $arg == @* ]]; then
    while IFS= read -r line; do [[ $line == *.o ]] && objects+=("$line"); done <"${arg#@}"
  elif [[ $arg == *.o ]]; then
    objects+=("$arg")
  fi
done

# The objects' symbols. Without them (no object, or nm failing on one) the
# link goes on in the default order: the list costs memory, never a build.
symbols=$(mktemp)
trap 'rm -f "$symbols" "$symbols.err"' EXIT
if ((${#objects[@]} == 0)) || ! "${BERTH_NM:-nm}" --defined-only --format=just-symbols "${objects[@]}" >"$symbols" 2>"$symbols.err"; then
  echo "link-hot-first.sh: could not read the symbols of ${objects[*]:-(no objects)}: $(head -c 300 "$symbols.err" 2>/dev/null); linking in the default order" >&2
  : >"$symbols"
fi
awk -v list="$BERTH_HOT_SYMBOLS" -v matched="$BERTH_HOT_ORDER.matched" '
    function rust(s) { return s ~ /^(_ZN|_R)/ }
    function key(s) {
      sub(/[.][0-9]+$/, "", s)
      if (length(s) > 20 && substr(s, length(s) - 19, 3) == "17h" && substr(s, length(s)) == "E")
        return substr(s, 1, length(s) - 20)
      return s
    }
    BEGIN {
      while ((getline line < list) > 0) {
        if (line == "" || line ~ /^#/) continue
        k = rust(line) ? key(line) : line
        if (!(k in rank)) {
          rank[k] = ++names
          if (rust(line)) rust_names++
          else c[names] = line "\n"
        }
        if (rust(line)) listed[line] = rank[k]
      }
    }
    # A symbol the list names exactly takes its place; failing any, every
    # symbol of the same name without hash does (all the instances of a
    # generic function, say, where the list named the ones that ran).
    rust($0) && !($0 in seen) {
      seen[$0] = 1
      if ($0 in listed) exact[listed[$0]] = exact[listed[$0]] $0 "\n"
      else if ((k = key($0)) in rank) loose[rank[k]] = loose[rank[k]] $0 "\n"
    }
    END {
      for (i = 1; i <= names; i++) {
        if (i in exact) { printf "%s", exact[i]; found++; exactly++ }
        else if (i in loose) { printf "%s", loose[i]; found++ }
        else if (i in c) printf "%s", c[i]
      }
      print found + 0, rust_names + 0, exactly + 0 > matched
    }' "$symbols" >"$BERTH_HOT_ORDER"

"$BERTH_LINKER" "$@" "-Wl,--symbol-ordering-file=$BERTH_HOT_ORDER" -Wl,--no-warn-symbol-ordering
