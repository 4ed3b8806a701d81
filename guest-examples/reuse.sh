# Sourced by the build scripts of guests whose tools do not build byte for
# byte reproducibly (componentize-js, componentize-py). Hosts cache compiled
# code by a component's hash, so a fresh checkout (CI) should get the very
# component built from the same inputs before: each one is kept under the
# digest of its inputs.

# up_to_date WASM INPUTS...: WASM exists and no input is newer.
up_to_date() {
  local wasm=$1
  shift
  [ -f "$wasm" ] && [ -z "$(find "$@" -newer "$wasm" -print -quit)" ]
}

# reuse KEPT NAME WASM INPUTS...: copies the component kept in KEPT for these
# inputs to WASM, if there is one; either way sets REUSE_KEY for `keep`.
reuse() {
  local kept=$1 name=$2 wasm=$3
  shift 3
  # Byte order (LC_ALL=C): the same inputs make the same key in any locale.
  REUSE_KEY=$(find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat | sha256sum | cut -c1-32)
  [ -f "$kept/$name-$REUSE_KEY.wasm" ] && cp "$kept/$name-$REUSE_KEY.wasm" "$wasm"
}

# keep KEPT NAME WASM: keeps a component just built, under REUSE_KEY.
keep() {
  mkdir -p "$1"
  cp "$3" "$1/$2-$REUSE_KEY.wasm"
}
