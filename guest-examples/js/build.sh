#!/usr/bin/env bash
# Builds the JavaScript example scenarios with componentize-js (SpiderMonkey)
# and writes target/guests/js/<name>.wasm at the repository root. Works from
# any directory.
#
# The toolchain comes from the npm registry, installed with `npm ci` from
# package-lock.json into $SESSIONBOX_TOOLS/js (default
# ~/.cache/sessionbox/tools/js), outside the repository; it is reinstalled
# only when package.json or package-lock.json changes. A component is rebuilt
# only when it is older than its source, src/sessionbox.js, the WIT, the lock
# file or this script.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/guests/js
tools=${SESSIONBOX_TOOLS:-$HOME/.cache/sessionbox/tools}/js
names=(hello call-handler remote-control farewell visit-counter ivr-menu call-centre webhook kv-probe)

built=$tools/built
say() { echo "== $*" >&2; }
# shellcheck source=../reuse.sh
source "$here/../reuse.sh"


as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "installing Node.js and npm (Debian)"
  as_root apt-get update
  as_root apt-get install -y nodejs npm
fi

# The toolchain: reinstall when the manifest or lock file differs from the
# copies next to the installed node_modules.
componentize=$tools/node_modules/.bin/componentize-js
if [ ! -x "$componentize" ] \
  || ! cmp -s "$here/package.json" "$tools/package.json" \
  || ! cmp -s "$here/package-lock.json" "$tools/package-lock.json"; then
  say "installing componentize-js into ${tools/#"$HOME"/\~} (npm ci)"
  mkdir -p "$tools"
  rm -rf "$tools/node_modules"
  cp "$here/package.json" "$here/package-lock.json" "$tools/"
  (cd "$tools" && npm ci --no-audit --no-fund)
fi

mkdir -p "$out"
# Inputs every component depends on, all by absolute path: `reuse` keys on
# their contents in path order, which must not depend on how this script was
# invoked.
shared=("$here/src/sessionbox.js" "$root/wit" "$here/package-lock.json" "$here/build.sh")

for name in "${names[@]}"; do
  src=$here/src/$name.js
  wasm=$out/$name.wasm
  if up_to_date "$wasm" "$src" "${shared[@]}"; then
    say "$name: up to date"
    continue
  fi
  if reuse "$built" "$name" "$wasm" "$src" "${shared[@]}"; then
    say "$name: built before from the same inputs"
    continue
  fi
  say "$name: componentize-js"
  # Never --aot: weval would be downloaded from outside the registries. The
  # source goes by a path relative to the current directory: componentize-js
  # 0.23 mangles an absolute one when run from `/`.
  (cd "$here" && "$componentize" --wit "$root/wit" --world-name scenario \
    --out "$wasm.tmp" "src/$name.js")
  mv "$wasm.tmp" "$wasm"
  keep "$built" "$name" "$wasm"
done

for name in "${names[@]}"; do
  printf '%-36s %9d bytes\n' "target/guests/js/$name.wasm" "$(wc -c <"$out/$name.wasm")"
done
