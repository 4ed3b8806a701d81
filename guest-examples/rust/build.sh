#!/usr/bin/env bash
# Builds the Rust guest components (the examples here and the test guests in
# tests/guests) and copies them to target/guests/<name>.wasm at the repository
# root. Works from any directory.
#
# The ordinary route needs `rustup target add wasm32-wasip2`. Without it, the
# offline route uses Debian's rustc-web + rust-web-src + wasi-libc and builds
# std from source (see docs on guest toolchains); that std build happens once
# per target directory, so every guest shares one:
#   SESSIONBOX_GUEST_TARGET (default ~/.cache/sessionbox/guest-target)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/guests
export CARGO_TARGET_DIR=${SESSIONBOX_GUEST_TARGET:-$HOME/.cache/sessionbox/guest-target}

# workspace directory, then the components it produces (cargo's file names
# use underscores; ours use dashes).
workspaces=(
  "$here:hello call-handler remote-control farewell visit-counter ivr-menu call-centre webhook kv-probe"
  "$root/tests/guests:phase-probe bench-echo bench-storage fetcher sip-probe"
)

say() { echo "== $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if command -v rustc >/dev/null && [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2" ]; then
  say "building with the installed wasm32-wasip2 target"
  build=(cargo build --release --target wasm32-wasip2)
else
  if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/wasm32-wasi ] \
    || [ ! -d "$(/usr/bin/rustc --print sysroot 2>/dev/null)/lib/rustlib/src/rust/library" ]; then
    say "installing Debian's wasm toolchain (rustc-web rust-web-src lld wasi-libc)"
    as_root apt-get update
    as_root apt-get install -y rustc-web rust-web-src lld wasi-libc
  fi
  say "no wasm32-wasip2 target installed: building std from source with Debian's rustc-web"
  export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-L /usr/lib/wasm32-wasi"
  build=(cargo build --release --target wasm32-wasip2 -Zbuild-std=std,panic_abort)
fi

mkdir -p "$out"
for entry in "${workspaces[@]}"; do
  dir=${entry%%:*}
  locked=()
  [ -f "$dir/Cargo.lock" ] && locked=(--locked)
  say "cargo build in ${dir#"$root"/}"
  # cd rather than --manifest-path: cargo reads .cargo/config.toml from the
  # current directory.
  (cd "$dir" && "${build[@]}" "${locked[@]}")
  for name in ${entry#*:}; do
    cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/${name//-/_}.wasm" "$out/$name.wasm"
  done
done

for entry in "${workspaces[@]}"; do
  for name in ${entry#*:}; do
    printf '%-36s %8d bytes\n' "target/guests/$name.wasm" "$(wc -c <"$out/$name.wasm")"
  done
done
