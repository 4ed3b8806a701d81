#!/usr/bin/env bash
# The SIP load benchmark (README, "Performance"): how many calls per second
# the SIP listener sustains. sipp (tests/sip/uac_load.xml) places calls at a
# fixed rate against `sessionbox serve`, where the sip-probe scenario answers
# each and, by the number called:
#   play    plays the built-in chime (0.8 s of RTP) and hangs up;
#   say     says "Welcome." (flite, cached by text after the first call)
#           and hangs up;
#   bridge  dials an agent through the trunk (sipp's own UAS), connects the
#           two calls, and hangs both up 0.8 s later.
# The baseline, in the same run, is sipp calling sipp's own UAS: the load
# generator's ceiling on this machine. The relay's CPU per call-second is
# `cargo bench --bench relay` (scripts/bench.sh runs it).
#
#   scripts/bench-sip.sh          # 10 s at each rate of a sweep
#   scripts/bench-sip.sh --smoke  # a few calls; asserts they succeed, no timings
#
# Prints, per offered rate, the calls that succeeded per second, the failed
# calls, the median answer time (INVITE to 200 OK; sipp measures whole
# milliseconds) and, for Sessionbox, the server's CPU time per call; writes
# docs/perf/sip-load.csv. A rate is sustained when no call failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sessionbox/target}
unset RUST_BACKTRACE

rates=(100 200 400 800 1600 3200)
seconds=10
profile=(--release)
bin=$CARGO_TARGET_DIR/release
out=docs/perf
if [ "${1:-}" = "--smoke" ]; then
  rates=(10)
  seconds=1
  profile=()
  bin=$CARGO_TARGET_DIR/debug
fi
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
[ "${1:-}" != "--smoke" ] || out=$work
mkdir -p "$out"

step() { echo "== $*" >&2; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

[ -f target/guests/sip-probe.wasm ] || guest-examples/rust/build.sh
if ! command -v sipp >/dev/null; then
  step "installing sipp"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y sip-tester; else sudo apt-get install -y sip-tester; fi
fi
cargo build --locked "${profile[@]}" --bin sessionbox

sip_port=$(port)
uas_port=$(port)
cat >"$work/sessionbox.toml" <<TOML
[server]
listen = "127.0.0.1:$(port)"
database = "$work/history.db"
max_sessions = 10000
[tenants.bench]
api_keys = ["bench-key"]
quota = { max_sessions = 10000, starts_per_second = 100000 }
[apps.load]
tenant = "bench"
scenario = "$PWD/target/guests/sip-probe.wasm"
limits = { idle_timeout = 100 }
[sip]
listen = "127.0.0.1:$sip_port"
routes = [{ number = "^(play|say|bridge)$", app = "load" }]
trunk = { address = "127.0.0.1:$uas_port" }
TOML
"$bin/sessionbox" serve --config "$work/sessionbox.toml" >"$work/serve.log" 2>&1 &
server=$!
pids+=("$server")
# The server's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }
for _ in $(seq 100); do grep -q 'SIP listening' "$work/serve.log" 2>/dev/null && break; sleep 0.1; done

# The baseline: sipp's built-in UAS, answering at once; the caller (sipp's
# built-in UAC) hangs up after 0.8 s, as long as the chime plays. It also
# answers the bridged calls' agents.
(cd "$work" && exec sipp -sn uas -i 127.0.0.1 -p "$uas_port" -nostdin >/dev/null 2>&1) &
pids+=($!)

# Places $3 calls per second for $seconds to the number $4 (with $5 as its
# X-Prompt) at $2 with scenario $1 (`-sf file` or `-sn uac`); prints
# "succeeded succeeded_per_s failed median_answer_ms". `-d 800` is the built-in uac's call length (the
# baseline; uac_load.xml waits for Sessionbox's BYE instead); the prompt's
# RTP goes to port 9 (discard), and at most 4 s of calls are up at once.
load() {
  local scenario=$1 target=$2 rate=$3 number=$4 prompt=$5 dir
  dir=$(mktemp -d -p "$work")
  # shellcheck disable=SC2086 # $scenario is two words
  (cd "$dir" && sipp $scenario -i 127.0.0.1 -s "$number" -r "$rate" -m $((rate * seconds)) \
    -l $((rate * 4)) -d 800 -key rtp_port 9 -key prompt_url "$prompt" \
    -timeout $((seconds * 3 + 30))s -timeout_error -nostdin \
    -trace_stat -stf stat.csv -trace_rtt -rtt_freq 1 "$target" >/dev/null 2>&1 || true)
  python3 - "$dir" <<'PY'
import csv, glob, statistics, sys
d = sys.argv[1]
rows = list(csv.reader(open(glob.glob(d + "/*stat.csv")[0]), delimiter=";"))
last = dict(zip(rows[0], rows[-1]))
ok, failed = int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])
# The rate sipp actually placed calls at (below the offered one when either
# side could not keep up), scaled to the calls that succeeded.
placed = int(last["OutgoingCall(C)"])
rate = float(last["CallRate(C)"]) * ok / placed if placed else 0.0
rtts = []
for path in glob.glob(d + "/*_rtt.csv"):
    for row in list(csv.reader(open(path), delimiter=";"))[1:]:
        try: rtts.append(float(row[-2]))
        except (ValueError, IndexError): pass
print(ok, f"{rate:.1f}", failed, f"{statistics.median(rtts):.0f}" if rtts else "?")
PY
}

printf '%-10s %-12s %12s %8s %18s %14s\n' "offered" "target" "succeeded/s" "failed" "median answer ms" "CPU ms/call"
echo "target,offered_per_s,succeeded_per_s,failed,median_answer_ms,cpu_ms_per_call" >"$out/sip-load.csv"
ticks_per_ms=$(awk -v hz="$(getconf CLK_TCK)" 'BEGIN { print hz / 1000 }')
for rate in "${rates[@]}"; do
  for target in play say bridge baseline; do
    cpu="-"
    case $target in
      play | say | bridge)
        case $target in
          play) prompt=bundled:chime ;;
          say) prompt=Welcome. ;;
          bridge) prompt=agent ;;
        esac
        before=$(cpu_ticks)
        read -r ok per_s failed median < <(load "-sf $PWD/tests/sip/uac_load.xml" "127.0.0.1:$sip_port" "$rate" "$target" "$prompt")
        cpu=$(awk -v t=$(($(cpu_ticks) - before)) -v n="$ok" -v k="$ticks_per_ms" 'BEGIN { if (n) printf "%.2f", t / k / n; else print "-" }')
        ;;
      baseline) read -r ok per_s failed median < <(load "-sn uac" "127.0.0.1:$uas_port" "$rate" play -) ;;
    esac
    printf '%-10s %-12s %12s %8s %18s %14s\n' "$rate/s" "$target" "$per_s" "$failed" "$median" "$cpu"
    echo "$target,$rate,$per_s,$failed,$median,$cpu" >>"$out/sip-load.csv"
    if [ "${1:-}" = "--smoke" ] && [ "$target" != baseline ] && { [ "$ok" -eq 0 ] || [ "$failed" -ne 0 ]; }; then
      echo "smoke: calls failed ($ok succeeded, $failed failed); see $work/serve.log" >&2
      cat "$work/serve.log" >&2
      exit 1
    fi
  done
done
[ "${1:-}" != "--smoke" ] || echo "(smoke run: the figures are not measurements)"
