#!/usr/bin/env bash
# Measures, in one run on this machine: (a) a bare fasthttp handler, (b) the
# purchase endpoint on a sold-out item, (c) the purchase endpoint on the
# winning path (distinct users, stock large enough never to run out), and
# prints b/a and c/a. (c') repeats (c) with one user and a static body.
# (a') is the bare handler driven by (c)'s client, purchase.lua: wrk runs Lua
# per request there, and on a shared machine that client's CPU is the
# server's loss, so c/a' is the same-client ratio of the winning path (c/a
# charges the script to the server). wrk shares the 2 cores with the server:
# ratios are the figure to quote, not the absolute numbers. ROUNDS rounds of
# (a) (a') (b) (c) (c') alternate, so that a machine whose speed drifts (a
# shared VM) moves all five alike; each round's ratios are printed, then
# their medians.
#   bench/wrk/compare.sh        (after make build and go build -o bin/bare ./tools/bare)
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-2} CONNS=${CONNS:-64} DURATION=${DURATION:-5s} ROUNDS=${ROUNDS:-3}
PUB=127.0.0.1:18080 ADM=127.0.0.1:16060 BARE=127.0.0.1:18090
data=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"; }
pids=()
trap cleanup EXIT

bin/bare -listen $BARE 2>/dev/null & pids+=($!)
bin/flashsale -data-dir "$data" -listen $PUB -admin-listen $ADM 2>"$data/log" & pids+=($!)
for _ in $(seq 50); do curl -fs "http://$PUB/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
json='Content-Type: application/json'
curl -fs -X PUT "http://$ADM/api/v1/items/gone" -H "$json" -d '{"name":"Gone","price_cents":100,"stock":0}' >/dev/null
curl -fs -X PUT "http://$ADM/api/v1/items/plenty" -H "$json" -d '{"name":"Plenty","price_cents":100,"stock":100000000,"per_user_limit":100000000}' >/dev/null

run() { # name url [wrk args...]
  local name=$1 url=$2; shift 2
  local out; out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "$url")
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local p50 p99; p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  printf '%-38s %10s req/s  p50 %-9s p99 %-9s non-2xx/3xx %s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}" >&2
  echo "$rps"
}
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)" >&2
ratios=()
for r in $(seq "$ROUNDS"); do
  echo "round $r" >&2
  a=$(run "(a) bare fasthttp handler" "http://$BARE/")
  export WRK_USER_PREFIX="w$r-$$" # new users and request ids every round: a repeat would be a replay
  a2=$(run "(a') bare handler, purchase.lua" "http://$BARE/" -s bench/wrk/purchase.lua)
  b=$(run "(b) purchase, sold out" "http://$PUB/api/v1/items/gone/purchase" -s bench/wrk/sold_out.lua)
  c=$(run "(c) purchase, winning, distinct users" "http://$PUB/api/v1/items/plenty/purchase" -s bench/wrk/purchase.lua)
  # (c') is the winning path with a static body, as (a) and (b) have: wrk's Lua
  # request() per call costs CPU that the server shares on a 2-core machine.
  d=$(run "(c') purchase, winning, static body" "http://$PUB/api/v1/items/plenty/purchase" -s bench/wrk/same_user.lua)
  ratios+=("$(awk -v a="$a" -v a2="$a2" -v b="$b" -v c="$c" -v d="$d" 'BEGIN { printf "%.2f %.2f %.2f %.2f", b/a, c/a, d/a, c/a2 }')")
  read -r rb rc rd rc2 <<<"${ratios[-1]}"
  echo "  b/a = $rb   c/a = $rc   c'/a = $rd   c/a' = $rc2" >&2
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { printf '%s\n' "${ratios[@]}" | awk -v i="$1" '{ print $i }' | median; }
echo "median of $ROUNDS rounds: b/a = $(col 1)   c/a = $(col 2)   c'/a = $(col 3)   c/a' = $(col 4)" >&2
