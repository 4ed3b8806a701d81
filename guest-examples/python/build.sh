#!/usr/bin/env bash
# Builds the Python example scenarios with componentize-py and writes
# target/guests/python/<name>.wasm at the repository root. Works from any
# directory.
#
# The toolchain is componentize-py from PyPI, in a virtualenv at
# $SESSIONBOX_TOOLS/python-venv (default ~/.cache/sessionbox/tools/python-venv),
# outside the repository; pip runs only when it is missing or another version.
# A component is rebuilt only when it is older than its source,
# src/sessionbox.py, the WIT (the repository's wit/ and wit/ here) or this
# script (which pins the version).
set -euo pipefail

componentize_py_version=0.25.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/guests/python
venv=${SESSIONBOX_TOOLS:-$HOME/.cache/sessionbox/tools}/python-venv
# output name: Python module (module names cannot contain dashes)
scenarios=(hello:hello call-handler:call_handler remote-control:remote_control farewell:farewell
  visit-counter:visit_counter ivr-menu:ivr_menu call-centre:call_centre webhook:webhook
  kv-probe:kv_probe)

say() { echo "== $*" >&2; }
# shellcheck source=../reuse.sh
source "$here/../reuse.sh"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

componentize=$venv/bin/componentize-py
if [ "$("$componentize" --version 2>/dev/null)" != "componentize-py $componentize_py_version" ]; then
  say "installing componentize-py $componentize_py_version into ${venv/#"$HOME"/\~}"
  if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv"; then
      as_root apt-get update
      as_root apt-get install -y python3-venv
      rm -rf "$venv"
      python3 -m venv "$venv"
    fi
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$componentize_py_version"
fi

mkdir -p "$out"
built=${SESSIONBOX_TOOLS:-$HOME/.cache/sessionbox/tools}/python-built
# Inputs every component depends on, all by absolute path: `reuse` keys on
# their contents in path order, which must not depend on how this script was
# invoked.
shared=("$here/src/sessionbox.py" "$root/wit" "$here/wit" "$here/build.sh")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

for entry in "${scenarios[@]}"; do
  name=${entry%%:*}
  module=${entry#*:}
  src=$here/src/$module.py
  wasm=$out/$name.wasm
  if up_to_date "$wasm" "$src" "${shared[@]}"; then
    say "$name: up to date"
    continue
  fi
  if reuse "$built" "$name" "$wasm" "$src" "${shared[@]}"; then
    say "$name: built before from the same inputs"
    continue
  fi
  say "$name: componentize-py"
  # componentize-py runs the app while building and writes __pycache__ next
  # to it: build from a copy, so the source tree stays clean.
  rm -rf "${stage:?}"/*
  cp "$src" "$here/src/sessionbox.py" "$stage/"
  # The world `sessionbox:python-guest/scenario` (wit/http.wit) is the
  # repository's `scenario` world plus wasi:http/outgoing-handler, so the
  # bindings include outbound HTTP. Each -d directory brings its deps/ along:
  # the repository's holds the 0.2.0 package that 0.3.0 includes.
  "$componentize" --quiet -d "$root/wit" -d "$here/wit" -w sessionbox:python-guest/scenario \
    componentize --python-path "$stage" "$module" -o "$wasm.tmp"
  mv "$wasm.tmp" "$wasm"
  keep "$built" "$name" "$wasm"
done

for entry in "${scenarios[@]}"; do
  name=${entry%%:*}
  printf '%-40s %9d bytes\n' "target/guests/python/$name.wasm" "$(wc -c <"$out/$name.wasm")"
done
