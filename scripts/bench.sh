#!/usr/bin/env bash
# The performance command (README, "Performance"): W1-W4 through Sessionbox's
# real paths, each beside its baseline measured in the same run, and the
# scaling curves as CSV under docs/perf/ (plotted by docs/perf/plot.gp when
# gnuplot is installed).
#
#   scripts/bench.sh          # full run (~8 min after the release build)
#   scripts/bench.sh --smoke  # a short run of everything; asserts no timings
#
# - W1 lifecycle, W2 dispatch: cargo bench --bench sessions (beside a bare
#   wasmtime embedding of the same guest, in the same process).
# - W3 density: cargo bench --bench density (1k, 10k and 100k idle sessions,
#   and the same on the bare embedding, each count in a process of its own;
#   raises vm.max_map_count when run as root).
# - W4 end to end: wrk with 64 connections against one session's access URL
#   through `sessionbox serve`, and against a plain hyper server answering the
#   same (examples/plain_echo.rs), taking turns, three rounds each.
# - Fairness: a healthy session's requests through `sessionbox serve`, alone
#   and beside another tenant's spinning sessions (cargo bench --bench
#   fairness), settings taking turns, three rounds each.
# - Storage: get and set from inside a handler beside rusqlite used directly
#   (cargo bench --bench storage), sides taking turns, five rounds each.
# - Past one node: history writes on PostgreSQL beside SQLite, W1 through
#   HAProxy on 1, 2 and 3 nodes, forwarding, a lost node noticed (cargo
#   bench --bench cluster; real nodes, PostgreSQL and HAProxy on loopback).
# - The media relay: CPU per call-second of bridged calls beside a plain UDP
#   forwarder (cargo bench --bench relay), sides taking turns.
# - The JavaScript peer (Node.js, one vm context per session) for W1, when
#   SESSIONBOX_NODE_PEER names its bench.mjs (the bench-baselines suite).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sessionbox/target}
# wasmtime captures a backtrace for every error it builds when this is set.
unset RUST_BACKTRACE

smoke=()
sweep=(--sweep)
profile=(--release)
bench_profile=()
densities=(1000 10000 100000)
density_runs=()
for n in "${densities[@]}"; do density_runs+=("$n" "--bare $n"); done
duration=10s
if [ "${1:-}" = "--smoke" ]; then
  smoke=(--smoke)
  sweep=()
  profile=()
  bench_profile=(--profile dev)
  densities=()
  density_runs=("--smoke" "--bare --smoke")
  duration=1s
fi
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# A smoke run's figures are no measurements: they stay out of docs/.
out=docs/perf
[ ${#smoke[@]} -eq 0 ] || out=$work
mkdir -p "$out"

step() { echo "== $*" >&2; }

[ -f target/guests/bench-echo.wasm ] && [ -f target/guests/bench-storage.wasm ] || guest-examples/rust/build.sh
if ! command -v wrk >/dev/null; then
  step "installing wrk"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y wrk; else sudo apt-get install -y wrk; fi
fi

# Runs a bench, shows its output, and keeps its `csv,` lines.
bench() {
  cargo bench --locked "${bench_profile[@]}" --bench "$@" >"$work/bench.out"
  grep -v '^csv,' "$work/bench.out"
  sed -n 's/^csv,//p' "$work/bench.out" >"$work/bench.csv"
}

step "W1 lifecycle, W2 dispatch"
bench sessions -- "${smoke[@]}" "${sweep[@]}"
sed -n 's/^table,//p' "$work/bench.csv" >"$work/table.csv"
{ echo "in_flight,sessionbox_per_s,bare_per_s"; sed -n 's/^w1,//p' "$work/bench.csv"; } >"$out/w1-scaling.csv"
{ echo "live_sessions,sessionbox_per_s,bare_per_s"; sed -n 's/^w2,//p' "$work/bench.csv"; } >"$out/w2-scaling.csv"

if [ -n "${SESSIONBOX_NODE_PEER:-}" ] && [ ${#smoke[@]} -eq 0 ]; then
  step "W1 on the Node.js vm-context peer"
  for threads in 1 2; do
    node "$SESSIONBOX_NODE_PEER" w1 --threads "$threads" |
      sed -n 's/.*"threads":\([0-9]*\).*"sessions_per_s":\([0-9]*\).*/\1,\2/p'
  done >"$work/node.csv"
  sed 's|\(.*\),\(.*\)|node vm peer, \1 thread(s): W1 \2 sessions/s|' "$work/node.csv"
fi

step "W3 density"
if [ ${#densities[@]} -gt 0 ] && [ "$(cat /proc/sys/vm/max_map_count)" -lt 1048576 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    sysctl -w vm.max_map_count=1048576
  else
    echo "vm.max_map_count is low: 100,000 sessions need 'sysctl -w vm.max_map_count=1048576'" >&2
  fi
fi
: >"$work/density.csv"
for run in "${density_runs[@]}"; do
  # shellcheck disable=SC2086 # a run is a word list
  bench density -- $run
  cat "$work/bench.csv" >>"$work/density.csv"
done
header="sessions,rss_kib_per_session,pte_kib_per_session,opened_per_s,maps"
{ echo "$header"; sed -n 's/^sessionbox,//p' "$work/density.csv"; } >"$out/w3-density.csv"
{ echo "$header"; sed -n 's/^bare,//p' "$work/density.csv"; } >"$out/w3-density-bare.csv"

step "W4 end to end (wrk, 64 connections, $duration)"
cargo build --locked "${profile[@]}" --bin sessionbox --example plain_echo
if [ ${#smoke[@]} -eq 0 ]; then bin=$CARGO_TARGET_DIR/release; else bin=$CARGO_TARGET_DIR/debug; fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

serve_port=$(port)
cat >"$work/sessionbox.toml" <<TOML
[server]
listen = "127.0.0.1:$serve_port"
database = "$work/history.db"
[tenants.bench]
api_keys = ["bench-key"]
[apps.echo]
tenant = "bench"
scenario = "$PWD/target/guests/bench-echo.wasm"
limits = { idle_timeout = 600000 }
TOML
"$bin/sessionbox" serve --config "$work/sessionbox.toml" >"$work/serve.log" 2>&1 &
serve_pid=$!
pids+=($!)
wait_for "http://127.0.0.1:$serve_port/metrics"
session=$(curl -s -X POST -H 'Authorization: Bearer bench-key' \
  -d '{"custom_data":"custom-data-of-32-bytes-xxxxxxx"}' \
  "http://127.0.0.1:$serve_port/v1/apps/echo/sessions")
access=$(echo "$session" | sed -E 's/.*"access_url":"([^"]+)".*/\1/')

plain_port=$(port)
"$bin/examples/plain_echo" "127.0.0.1:$plain_port" 2>/dev/null &
plain_pid=$!
pids+=($!)
wait_for "http://127.0.0.1:$plain_port/"

# The W2 request: GET /api/v1/echo, X-Tenant and X-Trace, a 64-byte body.
cat >"$work/echo.lua" <<'LUA'
wrk.method = "GET"
wrk.headers["X-Tenant"] = "t1"
wrk.headers["X-Trace"] = "abc"
wrk.body = string.rep("x", 64)
done = function(summary, latency, requests)
  io.write(string.format("result %.0f %.0f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, summary.requests))
end
LUA
# CPU time process $1 has used, in clock ticks: user, then system.
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
# wrk against URL $1 served by process $2: req/s, p99 µs, errors, requests,
# and the server's CPU µs per request: in all, and in user space.
measure() {
  local user0 sys0 user1 sys1
  read -r user0 sys0 < <(cpu_ticks "$2")
  wrk -t2 -c64 -d"$duration" --latency -s "$work/echo.lua" "$1" | tee "$work/wrk.out" >&2
  read -r user1 sys1 < <(cpu_ticks "$2")
  sed -n 's/^result //p' "$work/wrk.out" |
    awk -v user=$((user1 - user0)) -v sys=$((sys1 - sys0)) -v hz="$(getconf CLK_TCK)" \
      '{ printf "%s %.1f %.1f\n", $0, (user + sys) * 1e6 / hz / $4, user * 1e6 / hz / $4 }'
}
# Three rounds, the two servers taking turns (a run's rate on this kind of
# VM moves by a fifth from one run to the next); each figure is the round
# with the median rate.
for round in 1 2 3; do
  measure "$access/api/v1/echo" "$serve_pid" >>"$work/w4-sessionbox"
  measure "http://127.0.0.1:$plain_port/api/v1/echo" "$plain_pid" >>"$work/w4-plain"
done
median_round() { sort -n "$1" | sed -n 2p; }
read -r s_rps s_p99 s_errors s_requests s_cpu s_user < <(median_round "$work/w4-sessionbox")
read -r p_rps p_p99 p_errors p_requests p_cpu p_user < <(median_round "$work/w4-plain")
s_errors=$(awk '{ n += $3 } END { print n }' "$work/w4-sessionbox")
p_errors=$(awk '{ n += $3 } END { print n }' "$work/w4-plain")
s_requests=$(awk '{ n += $4 } END { print n }' "$work/w4-sessionbox")
delivered=$(curl -s "http://127.0.0.1:$serve_port/metrics" | sed -n 's/^sessionbox_events_delivered_total{kind="HttpRequest"} //p')
printf '%-28s %12s %10s %8s %16s %8s\n' "W4 (wrk -c64)" "req/s" "p99 µs" "errors" "CPU µs/request" "in user"
printf '%-28s %12.0f %10.0f %8d %16s %8s\n' "sessionbox access URL" "$s_rps" "$s_p99" "$s_errors" "$s_cpu" "$s_user"
printf '%-28s %12.0f %10.0f %8d %16s %8s\n' "plain hyper echo" "$p_rps" "$p_p99" "$p_errors" "$p_cpu" "$p_user"
awk -v s="$s_rps" -v p="$p_rps" 'BEGIN { printf "ratio (sessionbox / plain): %.2fx\n", s / p }'
echo "HttpRequest events delivered to the session: ${delivered:-?} (wrk counted $s_requests)"
echo "server,requests_per_s,p99_us,errors,cpu_us_per_request,user_cpu_us_per_request" >"$out/w4-end-to-end.csv"
echo "sessionbox,$s_rps,$s_p99,$s_errors,$s_cpu,$s_user" >>"$out/w4-end-to-end.csv"
echo "plain-hyper,$p_rps,$p_p99,$p_errors,$p_cpu,$p_user" >>"$out/w4-end-to-end.csv"
[ "$s_errors" -eq 0 ] && [ "$p_errors" -eq 0 ] || { echo "wrk saw errors" >&2; exit 1; }
step "Fairness through the server"
bench fairness -- "${smoke[@]}"
{ echo "spinning_sessions,requests_per_s,p50_us,p99_us,max_us,p99_vs_alone,rate_vs_alone"; cat "$work/bench.csv"; } >"$out/fairness.csv"

step "Storage from inside a handler, beside bare SQLite"
bench storage -- "${smoke[@]}"
{ echo "operation,sessionbox_per_s,p50_us,p99_us,bare_per_s,bare_p50_us,bare_p99_us"; cat "$work/bench.csv"; } >"$out/storage.csv"

step "Past one node: PostgreSQL, nodes behind HAProxy, forwarding, a lost node"
bench cluster -- "${smoke[@]}"

step "The media relay beside a plain UDP forwarder"
bench relay -- "${smoke[@]}"
{ echo "side,cpu_us_per_call_second,x_forwarder"; cat "$work/bench.csv"; } >"$out/relay.csv"

# The summary: every workload beside its baseline.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }
{
  echo
  printf '%-38s %14s %26s %8s\n' "workload" "sessionbox" "baseline" "ratio"
  while IFS=, read -r s b label; do
    printf '%-38s %14s %26s %7.2fx\n' "$label" "$s" "$b (bare wasmtime)" "$(ratio "$s" "$b")"
  done <"$work/table.csv"
  w1=$(head -1 "$work/table.csv" | cut -d, -f1)
  if [ -f "$work/node.csv" ]; then
    while IFS=, read -r threads rate; do
      printf '%-38s %14s %26s %7.2fx\n' "W1 lifecycle vs Node, $threads thread(s)" "$w1" "$rate (node vm peer)" "$(ratio "$w1" "$rate")"
    done <"$work/node.csv"
  fi
  paste -d, <(sed -n '2,$p' "$out/w3-density.csv") <(sed -n '2,$p' "$out/w3-density-bare.csv") |
    while IFS=, read -r n kib _ _ _ _ bare_kib _; do
      printf '%-38s %14s %26s %7.2fx\n' "W3 RSS KiB per idle session, $n" "$kib" "$bare_kib (bare wasmtime)" "$(ratio "$kib" "$bare_kib")"
    done
  printf '%-38s %14.0f %26s %7.2fx\n' "W4 access URL, req/s" "$s_rps" "$p_rps (plain hyper)" "$(ratio "$s_rps" "$p_rps")"
}
if [ ${#smoke[@]} -eq 0 ] && command -v gnuplot >/dev/null; then
  gnuplot docs/perf/plot.gp && echo "plotted docs/perf/scaling.png"
fi
[ ${#smoke[@]} -eq 0 ] || echo "(smoke run: the figures are not measurements)"
