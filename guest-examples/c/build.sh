#!/usr/bin/env bash
# Builds the C example scenarios into components at
# target/guests/c/<name>.wasm (repository root). Works from any directory.
#
# Needs Debian's clang-19, lld-19, libclang-rt-19-dev-wasm32 and wasi-libc
# (installed when missing) and cargo, which builds the small tool in
# componentize/ (C bindings from the WIT, core module -> component). The
# tool's build is cached in $SESSIONBOX_C_TOOL_TARGET (default
# ~/.cache/sessionbox/c-tool-target); bindings and core modules go to
# target/c-guests-build/. Outputs newer than their inputs are not rebuilt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/guests/c
work=$root/target/c-guests-build
tool_target=${SESSIONBOX_C_TOOL_TARGET:-$HOME/.cache/sessionbox/c-tool-target}
tool=$tool_target/release/sessionbox-c-tool
names=(hello remote-control call-handler visit-counter ivr-menu call-centre webhook kv-probe)
shared=("$here/sessionbox.c" "$here/sessionbox.h" "$here/defaults.c")

say() { echo "== $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# 1. The C toolchain, from Debian.
packages=(clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root apt-get update
  as_root apt-get install -y "${missing[@]}"
fi

# 2. The tool (cargo does nothing when it is up to date).
command -v cargo >/dev/null || { echo "build.sh: cargo is needed to build componentize/" >&2; exit 1; }
say "cargo build in guest-examples/c/componentize"
(cd "$here/componentize" && CARGO_TARGET_DIR=$tool_target cargo build --release --locked --quiet)

# Whether $1 is missing or older than any of the other arguments.
stale() {
  local target=$1 f
  shift
  [ -e "$target" ] || return 0
  for f in "$@"; do
    [ "$f" -nt "$target" ] && return 0
  done
  return 1
}

# 3. Bindings: the world `scenario` from the repository's wit/, and the
# world `http` (wasi:http, for sb_http_request) from wit/ here. Two sets,
# not one world with both: see wit/http.wit.
gen=$work/gen
mapfile -t wit_files < <(find "$root/wit" "$here/wit" -name '*.wit')
if stale "$gen/http.h" "${wit_files[@]}" "$tool"; then
  say "generating C bindings from wit/ and guest-examples/c/wit/"
  rm -rf "$gen" "$gen.tmp"
  "$tool" bindgen "$root/wit" scenario "$gen.tmp"
  "$tool" bindgen "$here/wit" http "$gen.tmp"
  mv "$gen.tmp" "$gen"
fi
generated=("$gen/scenario.c" "$gen/scenario.h" "$gen/scenario_component_type.o"
  "$gen/http.c" "$gen/http.h" "$gen/http_component_type.o")

# 4. Each scenario: C -> core module (reactor) -> component.
mkdir -p "$out" "$work"
for name in "${names[@]}"; do
  src=$here/$name.c
  if ! stale "$out/$name.wasm" "$src" "${shared[@]}" "${generated[@]}" "$tool" "$here/build.sh"; then
    continue
  fi
  say "building $name"
  clang-19 --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor \
    -Wall -Wextra -Wl,--strip-debug -I"$gen" -I"$here" \
    -o "$work/$name.core.wasm" "$src" "$here/sessionbox.c" "$here/defaults.c" \
    "$gen/scenario.c" "$gen/scenario_component_type.o" \
    "$gen/http.c" "$gen/http_component_type.o"
  "$tool" component "$work/$name.core.wasm" "$out/$name.wasm.tmp"
  mv "$out/$name.wasm.tmp" "$out/$name.wasm"
done

for name in "${names[@]}"; do
  printf '%-36s %8d bytes\n' "target/guests/c/$name.wasm" "$(wc -c <"$out/$name.wasm")"
done
