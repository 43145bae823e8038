#!/usr/bin/env bash
# The sidecar load run: the same upstream measured directly, through nginx
# doing the same header injection, and through the keywarden sidecar, side
# by side in one run. See docs/benchmarks.md for the method.
#
#   bench/run.sh                      # defaults below
#   ROUNDS=3 DURATION=15s CONNS=64 bench/run.sh
#
# Prints a markdown report and leaves it, with the raw outputs, in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
STREAMS=${STREAMS:-1000}
HOLD=${HOLD:-10s}
TTFB_N=${TTFB_N:-2000}
UP_PORT=${UP_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
SIDECAR_PORT=${SIDECAR_PORT:-18082}
METRICS_PORT=${METRICS_PORT:-18083}
OUT=${OUT:-$(mktemp -d /tmp/keywarden-bench.XXXXXX)}

bench/install.sh
mkdir -p "$OUT"
echo "building into $OUT" >&2
go build -trimpath -o "$OUT/keywarden" ./cmd/keywarden
go build -trimpath -o "$OUT/benchtool" ./bench/benchtool

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 did not open" >&2
  exit 1
}

# The upstream.
"$OUT/benchtool" upstream -listen "127.0.0.1:$UP_PORT" &
UP_PID=$!
pids+=($UP_PID)

# A fake key in a real file store, and the sidecar on it, limits off.
KEY="sk-ant-api03-bench-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$OUT/keywarden.yaml" <<EOF
keys:
  bench: {store: "file://$OUT/keys.json?name=bench"}
sidecar:
  listen: 127.0.0.1:$SIDECAR_PORT
  metrics_listen: 127.0.0.1:$METRICS_PORT
  routes: [{prefix: /, key: bench, upstream: "http://127.0.0.1:$UP_PORT"}]
  rate_limit: {rps: 0, concurrency: 0}
EOF
printf '%s' "$KEY" | "$OUT/keywarden" put bench --config "$OUT/keywarden.yaml" >/dev/null
"$OUT/keywarden" sidecar --config "$OUT/keywarden.yaml" --log-level warn 2>"$OUT/sidecar.log" &
SIDECAR_PID=$!
pids+=($SIDECAR_PID)

# nginx with the same injection.
sed -e "s#@DIR@#$OUT#g" -e "s#@UPSTREAM@#127.0.0.1:$UP_PORT#g" -e "s#@LISTEN@#127.0.0.1:$NGINX_PORT#g" \
  -e "s#@KEY@#$KEY#g" bench/nginx.conf.tmpl >"$OUT/nginx.conf"
mkdir -p "$OUT/client_body" "$OUT/proxy"
nginx -c "$OUT/nginx.conf" -p "$OUT" -g 'daemon off;' 2>"$OUT/nginx.stderr" &
NGINX_PID=$!
pids+=($NGINX_PID)

wait_port "$UP_PORT"; wait_port "$SIDECAR_PORT"; wait_port "$NGINX_PORT"
sleep 0.5
IDLE_RSS=$("$OUT/benchtool" rss -pid "$SIDECAR_PID")

# CPU time (clock ticks) used so far by the given processes; the proxies'
# CPU per request is robust to other load on the machine, unlike requests/s.
cpu_ticks() { for p in "$@"; do awk '{print $14+$15}' "/proc/$p/stat"; done | awk '{s+=$1} END {print s+0}'; }
NGINX_PIDS=("$NGINX_PID" $(pgrep -P "$NGINX_PID" || true))
HZ=$(getconf CLK_TCK)
declare -A PROXY_PIDS=([direct]="" [nginx]="${NGINX_PIDS[*]}" [sidecar]="$SIDECAR_PID")

declare -A URL=([direct]="http://127.0.0.1:$UP_PORT" [nginx]="http://127.0.0.1:$NGINX_PORT" [sidecar]="http://127.0.0.1:$SIDECAR_PORT")
TARGETS=(direct nginx sidecar)

# wrk latency in ms, whatever unit wrk printed.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}'; }

report="$OUT/report.md"
{
  echo "## Load run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "$(nproc) cores, $(uname -r), $(go version | cut -d' ' -f3), $(nginx -v 2>&1 | cut -d' ' -f3), wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)."
  echo "wrk -t$THREADS -c$CONNS -d$DURATION, POST /v1/messages (~250-byte JSON answer), $ROUNDS rounds interleaved."
  echo
  echo "| round | target | requests/s | p50 ms | p99 ms | errors | proxy CPU µs/request |"
  echo "|---|---|---:|---:|---:|---:|---:|"
} >"$report"

# Warm every path once.
for t in "${TARGETS[@]}"; do wrk -t1 -c8 -d2s -s bench/post.lua "${URL[$t]}/v1/messages" >/dev/null; done

for r in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    f="$OUT/wrk-$t-$r.txt"
    c0=0; [ -n "${PROXY_PIDS[$t]}" ] && c0=$(cpu_ticks ${PROXY_PIDS[$t]})
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/post.lua "${URL[$t]}/v1/messages" >"$f"
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
    p50=$(awk '$1=="50%" {print $2}' "$f" | to_ms)
    p99=$(awk '$1=="99%" {print $2}' "$f" | to_ms)
    errs=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {n+=1} END {print n+0}' "$f")
    reqs=$(awk '/requests in/ {print $1}' "$f")
    cpu="-"
    if [ -n "${PROXY_PIDS[$t]}" ]; then
      c1=$(cpu_ticks ${PROXY_PIDS[$t]})
      cpu=$(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
    fi
    echo "| $r | $t | $rps | $p50 | $p99 | $errs | $cpu |" >>"$report"
  done
done

{
  echo
  echo "SSE time to first byte ($TTFB_N streams, 16 at a time; microseconds):"
  echo
  echo "| target | TTFB p50 | TTFB p99 | whole stream p50 | whole stream p99 | failed |"
  echo "|---|---:|---:|---:|---:|---:|"
} >>"$report"
for t in "${TARGETS[@]}"; do
  j=$("$OUT/benchtool" ttfb -url "${URL[$t]}" -n "$TTFB_N" -c 16)
  echo "$j" >"$OUT/ttfb-$t.json"
  echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("| %s | %d | %d | %d | %d | %d |" % (sys.argv[1], d["ttfb_p50_us"], d["ttfb_p99_us"], d["total_p50_us"], d["total_p99_us"], d["failed"]))' "$t" >>"$report"
done

j=$("$OUT/benchtool" streams -url "${URL[sidecar]}" -n "$STREAMS" -hold "$HOLD" -pid "$SIDECAR_PID")
echo "$j" >"$OUT/streams.json"
AFTER_RSS=$("$OUT/benchtool" rss -pid "$SIDECAR_PID")
{
  echo
  echo "Sidecar RSS: idle $((IDLE_RSS / 1024)) MiB ($IDLE_RSS kB);" \
    "with $STREAMS concurrent streams open $(echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%d MiB (%d kB), %d completed, %d failed" % (d["rss_kb_all_open"]//1024, d["rss_kb_all_open"], d["completed"], d["failed"]))');" \
    "after they closed $((AFTER_RSS / 1024)) MiB."
} >>"$report"
cat "$report"
echo >&2 "raw outputs in $OUT"
