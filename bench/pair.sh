#!/usr/bin/env bash
# A paired A/B of two keywarden builds: both sidecars run at once against
# one plain-HTTP upstream and are loaded at the same time (one wrk each,
# -t1 -c32), so every round's host noise (steal, frequency, other guests)
# falls on both alike; each round prints both CPU costs per request and
# their ratio, and the last line the median ratio. Load runs with one
# build per round (run.sh) move 20-40% round to round on this kind of
# machine; the paired ratio moves a few percent.
#
#   bench/pair.sh OLD_BINARY NEW_BINARY          # 10 rounds of 4s
#   ROUNDS=15 DURATION=6s bench/pair.sh a b
#   SCRIPT=bench/sdk.lua bench/pair.sh a b    # an SDK-shaped request
#
# Build the binaries as the image does (make build BIN=...; a worktree at
# the older commit for OLD). SIDECAR_ENV as in run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/pair.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${ROUNDS:-10}
DURATION=${DURATION:-4s}
PORT0=${PORT0:-18180} # uses PORT0 .. PORT0+4
SCRIPT=${SCRIPT:-bench/post.lua}
SIDECAR_ENV=${SIDECAR_ENV-GOMAXPROCS=1 GOMEMLIMIT=64MiB}
OUT=$(mktemp -d /tmp/keywarden-pair.XXXXXX)
bench/install.sh
CGO_ENABLED=0 go build -trimpath -o "$OUT/benchtool" ./bench/benchtool

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$OUT/benchtool" upstream -listen "127.0.0.1:$PORT0" &
pids+=($!)
KEY="sk-ant-api03-bench-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
start() { # name binary port
  cat >"$OUT/$1.yaml" <<EOF
keys:
  bench: {store: "file://$OUT/keys.json?name=bench"}
sidecar:
  listen: 127.0.0.1:$3
  metrics_listen: 127.0.0.1:$(($3 + 1))
  routes: [{prefix: /, key: bench, upstream: "http://127.0.0.1:$PORT0"}]
  rate_limit: {rps: 0, concurrency: 0}
EOF
  [ -f "$OUT/keys.json" ] || printf '%s' "$KEY" | "$2" put bench --config "$OUT/$1.yaml" >/dev/null
  # shellcheck disable=SC2086 # SIDECAR_ENV is a list of NAME=value words
  env $SIDECAR_ENV "$2" sidecar --config "$OUT/$1.yaml" --log-level warn 2>"$OUT/$1.log" &
  pids+=($!)
}
start old "$A" $((PORT0 + 1))
PA=${pids[-1]}
start new "$B" $((PORT0 + 3))
PB=${pids[-1]}
for port in $((PORT0 + 1)) $((PORT0 + 3)); do
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  wrk -t1 -c8 -d2s -s "$SCRIPT" "http://127.0.0.1:$port/v1/messages" >/dev/null
done

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "| round | old requests | old CPU µs/request | new requests | new CPU µs/request | new/old |"
echo "|---:|---:|---:|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  a0=$(ticks "$PA"); b0=$(ticks "$PB")
  wrk -t1 -c32 -d"$DURATION" -s "$SCRIPT" "http://127.0.0.1:$((PORT0 + 1))/v1/messages" >"$OUT/a.txt" &
  w=$!
  wrk -t1 -c32 -d"$DURATION" -s "$SCRIPT" "http://127.0.0.1:$((PORT0 + 3))/v1/messages" >"$OUT/b.txt"
  wait "$w"
  a1=$(ticks "$PA"); b1=$(ticks "$PB")
  na=$(awk '/requests in/ {print $1}' "$OUT/a.txt"); nb=$(awk '/requests in/ {print $1}' "$OUT/b.txt")
  awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v na="$na" -v nb="$nb" -v hz="$HZ" -v r="$r" \
    'BEGIN {ca = a / hz * 1e6 / na; cb = b / hz * 1e6 / nb; printf "| %d | %d | %.1f | %d | %.1f | %.3f |\n", r, na, ca, nb, cb, cb / ca}'
done | tee "$OUT/rounds.md"
sort -t'|' -k7 -n "$OUT/rounds.md" | awk -F'|' '{v[NR] = $7} END {printf "\nmedian new/old CPU per request: %.3f (%d rounds)\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), NR}'
