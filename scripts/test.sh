#!/usr/bin/env bash
# The test command (README, .ci/run): builds the guest components and runs
# every check. On a fresh machine it installs what it needs first (Debian's
# wasm toolchain when no rustup wasm32-wasip2 target is present).
#
# Compiled dependencies are kept in $CARGO_TARGET_DIR (default
# ~/.cache/sessionbox/target) so that later runs rebuild only Sessionbox.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sessionbox/target}

step() { echo "== $*" >&2; }

# Cargo never collects the test and bench binaries each build of Sessionbox
# leaves behind (a few hundred MiB a build; one full run of this script
# leaves ~20 GiB in all). Past 40 GiB, drop Sessionbox's own artifacts and
# keep the compiled dependencies (a rebuild: ~2 minutes).
if [ -d "$CARGO_TARGET_DIR" ] && [ "$(du -s --block-size=1G "$CARGO_TARGET_DIR" | cut -f1)" -gt 40 ]; then
  step "pruning Sessionbox's old build artifacts from $CARGO_TARGET_DIR"
  for crate in sessionbox sessionbox-host sessionbox-sip sessionbox-server; do
    cargo clean --locked -p "$crate"
    cargo clean --locked -p "$crate" --release
  done
fi

# The serve tests drive the server with curl, as the README shows; the SIP
# tests call it with sipp (Debian's sip-tester). The multi-node tests run
# real PostgreSQL, HAProxy and Kamailio (each test starts its own); `say`
# speaks through flite; baresip (baresip-core: no sound card needed) is a
# second real phone, which records what it hears.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v sipp >/dev/null || missing+=(sip-tester)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v kamailio >/dev/null || missing+=(kamailio)
command -v flite >/dev/null || missing+=(flite)
command -v baresip >/dev/null || missing+=(baresip-core)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update && as_root apt-get install -y "${missing[@]}"
fi

step "guest components"
for language in rust c js python; do
  guest-examples/$language/build.sh
done

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --locked --all-targets -- -D warnings

step "tests"
cargo test --locked

# Keeps the benchmark working; a smoke run asserts nothing about speed.
# (RUST_BACKTRACE makes wasmtime capture a backtrace per error it builds.)
step "benchmark smoke run"
scripts/bench.sh --smoke
scripts/bench-sip.sh --smoke
env -u RUST_BACKTRACE cargo bench --locked --profile dev --bench languages -- --smoke
