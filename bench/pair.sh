#!/usr/bin/env bash
# A paired A/B of two keywarden builds: both sidecars run at once against
# one plain-HTTP upstream and are loaded at the same time (one wrk each,
# -t1 -c32), so every round's host noise (steal, frequency, other guests)
# falls on both alike; each round prints both CPU costs per request and
# their ratio, and the last line the median ratio. Load runs with one
# build per round (run.sh) move 20-40% round to round on this kind of
# machine; the paired ratio moves a few percent. One slot can read a few
# percent lower than the other (one binary in both slots: 0.972 over 20
# rounds, single rounds 0.95-1.09): for a difference under about 5%, run
# both orders (a b, then b a) and the A/A (a a), as docs/benchmarks.md does.
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

# shellcheck source=bench/lib.sh
. bench/lib.sh

"$OUT/benchtool" upstream -listen "127.0.0.1:$PORT0" &
pids+=($!)
start() { run_sidecar "$1" "$2" "$3" "http://127.0.0.1:$PORT0"; }
start old "$A" $((PORT0 + 1))
PA=${pids[-1]}
start new "$B" $((PORT0 + 3))
PB=${pids[-1]}
for port in $((PORT0 + 1)) $((PORT0 + 3)); do
  wait_port "$port"
  wrk -t1 -c8 -d2s -s "$SCRIPT" "http://127.0.0.1:$port/v1/messages" >/dev/null
done

echo "| round | old requests | old CPU µs/request | new requests | new CPU µs/request | new/old |"
echo "|---:|---:|---:|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  a0=$(cpu_ticks "$PA"); b0=$(cpu_ticks "$PB")
  wrk -t1 -c32 -d"$DURATION" -s "$SCRIPT" "http://127.0.0.1:$((PORT0 + 1))/v1/messages" >"$OUT/a.txt" &
  w=$!
  wrk -t1 -c32 -d"$DURATION" -s "$SCRIPT" "http://127.0.0.1:$((PORT0 + 3))/v1/messages" >"$OUT/b.txt"
  wait "$w"
  a1=$(cpu_ticks "$PA"); b1=$(cpu_ticks "$PB")
  na=$(awk '/requests in/ {print $1}' "$OUT/a.txt"); nb=$(awk '/requests in/ {print $1}' "$OUT/b.txt")
  awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v na="$na" -v nb="$nb" -v hz="$HZ" -v r="$r" \
    'BEGIN {ca = a / hz * 1e6 / na; cb = b / hz * 1e6 / nb; printf "| %d | %d | %.1f | %d | %.1f | %.3f |\n", r, na, ca, nb, cb, cb / ca}'
done | tee "$OUT/rounds.md"
sort -t'|' -k7 -n "$OUT/rounds.md" | awk -F'|' '{v[NR] = $7} END {printf "\nmedian new/old CPU per request: %.3f (%d rounds)\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), NR}'
