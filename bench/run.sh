#!/usr/bin/env bash
# The sidecar load run: the same upstream measured directly, through nginx
# doing the same header injection, and through the keywarden sidecar (and
# the sidecar built with -tags keywarden_nousage, its usage accounting off),
# side by side in one run, on a plain HTTP upstream and on an HTTPS one.
# See docs/benchmarks.md for the method.
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
LAT_D=${LAT_D:-5s}
# SCRIPT: the wrk script of the throughput part: bench/post.lua (three
# headers) or bench/sdk.lua (the fifteen the Python SDK sends).
SCRIPT=${SCRIPT:-bench/post.lua}
PORT0=${PORT0:-18080} # uses PORT0 .. PORT0+19 (+23 with BASE_BIN)
# BASE_BIN: another keywarden binary (e.g. an earlier commit's) run side by
# side as sidecar-base and sidecar-base-tls, for a before/after in one run.
BASE_BIN=${BASE_BIN:-}
# SIDECAR_ENV: the sidecars' runtime settings, by default as the Kubernetes
# manifests deploy them (a 1-CPU limit, which Go turns into GOMAXPROCS=1,
# and GOMEMLIMIT=64MiB under a 96Mi limit). SIDECAR_ENV= runs Go's defaults
# on this machine (GOMAXPROCS = its cores, no memory limit).
SIDECAR_ENV=${SIDECAR_ENV-GOMAXPROCS=1 GOMEMLIMIT=64MiB}
# NGINX_WORKERS: nginx's worker_processes (auto: one per core). For a
# like-for-like run of the sidecar as deployed under a 1-CPU limit
# (GOMAXPROCS=1), give nginx one worker: NGINX_WORKERS=1.
NGINX_WORKERS=${NGINX_WORKERS:-auto}
OUT=${OUT:-$(mktemp -d /tmp/keywarden-bench.XXXXXX)}

bench/install.sh
mkdir -p "$OUT"
echo "building into $OUT" >&2
# The sidecars are built by `make build`, as the image builds them (static,
# stripped, the time zone database embedded), with extra tags for the variants.
make -s build BIN="$OUT/keywarden"
make -s build BIN="$OUT/keywarden-noacct" TAGS=keywarden_nousage
# Builds with one cloud's store driver (providers/all), for their memory at rest.
declare -A SLIM=([aws]=keywarden_no_gcp,keywarden_no_vault [gcp]=keywarden_no_aws,keywarden_no_vault [vault]=keywarden_no_aws,keywarden_no_gcp)
for c in aws gcp vault; do
  make -s build BIN="$OUT/keywarden-$c" TAGS="${SLIM[$c]}"
done
CGO_ENABLED=0 go build -trimpath -o "$OUT/benchtool" ./bench/benchtool

# shellcheck source=bench/lib.sh
. bench/lib.sh

UP_PORT=$PORT0
UP_TLS_PORT=$((PORT0 + 1))
NGINX_PORT=$((PORT0 + 2))
NGINX_TLS_PORT=$((PORT0 + 3))

# The upstreams: plain HTTP, and HTTPS (HTTP/1.1 only, as the Claude API)
# with a CA generated into $OUT/ca.pem.
"$OUT/benchtool" upstream -listen "127.0.0.1:$UP_PORT" &
pids+=($!)
UP_PID=$!
"$OUT/benchtool" upstream -listen "127.0.0.1:$UP_TLS_PORT" -tls-dir "$OUT" &
pids+=($!)
UP_TLS_PID=$!
wait_port "$UP_PORT"
wait_port "$UP_TLS_PORT"

declare -A URL PROXY_PIDS CA
URL[direct]="http://127.0.0.1:$UP_PORT"
URL[direct-tls]="https://127.0.0.1:$UP_TLS_PORT"
CA[direct-tls]="$OUT/ca.pem"
URL[nginx]="http://127.0.0.1:$NGINX_PORT"
URL[nginx-tls]="http://127.0.0.1:$NGINX_TLS_PORT"

# A fake key in a real file store, and the sidecars on it, limits off: the
# product's build and the one without usage accounting, each on each
# upstream, trusting the bench CA through SSL_CERT_FILE.
port=$((PORT0 + 4))
start_sidecar() { # target binary upstream-url
  run_sidecar "$1" "$2" "$port" "$3"
  PROXY_PIDS[$1]=$!
  URL[$1]="http://127.0.0.1:$port"
  port=$((port + 2))
}
start_sidecar sidecar "$OUT/keywarden" "${URL[direct]}"
start_sidecar sidecar-noacct "$OUT/keywarden-noacct" "${URL[direct]}"
start_sidecar sidecar-tls "$OUT/keywarden" "${URL[direct-tls]}"
start_sidecar sidecar-noacct-tls "$OUT/keywarden-noacct" "${URL[direct-tls]}"
if [ -n "$BASE_BIN" ]; then
  start_sidecar sidecar-base "$BASE_BIN" "${URL[direct]}"
  start_sidecar sidecar-base-tls "$BASE_BIN" "${URL[direct-tls]}"
fi
# The floor: the smallest proxy on fasthttp (benchtool minproxy: the same
# injection, none of the sidecar's work, answers buffered whole, so it is
# left out of the SSE and memory parts), under the sidecars' settings.
(umask 077 && printf '%s' "$KEY" >"$OUT/key")
start_minproxy() { # target upstream-url
  # shellcheck disable=SC2086 # SIDECAR_ENV is a list of NAME=value words
  env $SIDECAR_ENV SSL_CERT_FILE="$OUT/ca.pem" "$OUT/benchtool" minproxy -listen "127.0.0.1:$port" -upstream "$2" -key-file "$OUT/key" 2>"$OUT/$1.log" &
  pids+=($!)
  PROXY_PIDS[$1]=$!
  URL[$1]="http://127.0.0.1:$port"
  port=$((port + 1))
}
start_minproxy fasthttp-min "${URL[direct]}"
start_minproxy fasthttp-min-tls "${URL[direct-tls]}"

# nginx with the same injection, to both upstreams.
sed -e "s#@DIR@#$OUT#g" -e "s#@UPSTREAM@#127.0.0.1:$UP_PORT#g" -e "s#@TLS_UPSTREAM@#127.0.0.1:$UP_TLS_PORT#g" \
  -e "s#@LISTEN@#127.0.0.1:$NGINX_PORT#g" -e "s#@TLS_LISTEN@#127.0.0.1:$NGINX_TLS_PORT#g" \
  -e "s#@KEY@#$KEY#g" -e "s#@WORKERS@#$NGINX_WORKERS#g" bench/nginx.conf.tmpl >"$OUT/nginx.conf"
mkdir -p "$OUT/client_body" "$OUT/proxy"
nginx -c "$OUT/nginx.conf" -p "$OUT" -g 'daemon off;' 2>"$OUT/nginx.stderr" &
NGINX_PID=$!
pids+=($NGINX_PID)

for u in "${URL[@]}"; do wait_port "${u##*:}"; done
sleep 0.5
# A port taken by another program looks open: every process must be up.
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a process of the run exited (a port of PORT0=$PORT0 in use?)" >&2; exit 1; }
done
# Memory, in kB: RSS and its anonymous part (heap, stacks, the runtime's),
# the rest being the executable's pages, which the page cache shares
# between every process that runs the same file (see docs/benchmarks.md).
declare -A IDLE_RSS IDLE_ANON
NGINX_PIDS=("$NGINX_PID" $(pgrep -P "$NGINX_PID" || true))
PROXY_PIDS[nginx]="${NGINX_PIDS[*]}"
PROXY_PIDS[nginx-tls]="${NGINX_PIDS[*]}"
idle_mem() {
  read -r "IDLE_RSS[$1]" "IDLE_ANON[$1]" < <("$OUT/benchtool" rss -pid "${PROXY_PIDS[$1]}")
  echo "${IDLE_RSS[$1]}" >"$OUT/idle-$1.kb"
}
RSS_TARGETS=(nginx sidecar nginx-tls sidecar-tls)
[ -n "$BASE_BIN" ] && RSS_TARGETS+=(sidecar-base sidecar-base-tls)
for t in "${RSS_TARGETS[@]}"; do idle_mem "$t"; done
# The one-cloud builds, idle, one at a time (they serve no load).
for c in aws gcp vault; do
  start_sidecar "sidecar-$c" "$OUT/keywarden-$c" "${URL[direct]}"
  wait_port "${URL[sidecar-$c]##*:}"
  sleep 0.5
  idle_mem "sidecar-$c"
  kill "${PROXY_PIDS[sidecar-$c]}"
done

# The machine's stolen and total CPU ticks so far (/proc/stat's cpu line:
# steal is its 8th value; guest time is inside user): a virtual machine's
# host can take CPU time from it while a round runs.
steal_ticks() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t; exit}' /proc/stat; }
# steal_since TICKS: the share stolen since steal_ticks printed TICKS.
steal_since() { steal_ticks | awk -v a="$1" '{split(a, x); d = $2 - x[2]; printf "%.0f%%", (d > 0 ? 100 * ($1 - x[1]) / d : 0)}'; }
PROXY_PIDS[direct]=""
PROXY_PIDS[direct-tls]=""
TARGETS=(direct nginx sidecar sidecar-noacct fasthttp-min direct-tls nginx-tls sidecar-tls sidecar-noacct-tls fasthttp-min-tls)
[ -n "$BASE_BIN" ] && TARGETS=(direct nginx sidecar sidecar-noacct sidecar-base fasthttp-min direct-tls nginx-tls sidecar-tls sidecar-noacct-tls sidecar-base-tls fasthttp-min-tls)
# The direct call a target's added latency is measured against.
base_of() { case $1 in *-tls) echo direct-tls ;; *) echo direct ;; esac; }
# The upstream process a target's requests reach.
upstream_of() { case $1 in *-tls) echo "$UP_TLS_PID" ;; *) echo "$UP_PID" ;; esac; }
ca_flag() { if [ -n "${CA[$1]:-}" ]; then echo "-ca ${CA[$1]}"; fi; }

# wrk latency in ms, whatever unit wrk printed.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}'; }

report="$OUT/report.md"
{
  echo "## Load run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "$(nproc) cores, $(uname -r), $(go version | cut -d' ' -f3), $(nginx -v 2>&1 | cut -d' ' -f3), wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)."
  echo "wrk -t$THREADS -c$CONNS -d$DURATION, POST /v1/messages ($SCRIPT; ~250-byte JSON answer), $ROUNDS rounds interleaved."
  echo "\`*-tls\`: the upstream is HTTPS (HTTP/1.1, a generated CA); the proxies listen on plain HTTP."
  echo "\`sidecar-noacct\`: the sidecar built with \`-tags keywarden_nousage\` (usage accounting off)."
  echo "\`fasthttp-min\`: the floor, \`benchtool minproxy\` (the smallest fasthttp proxy: the same injection, none of the sidecar's work)."
  [ -z "$BASE_BIN" ] || echo "\`sidecar-base\`: $BASE_BIN, side by side."
  echo "Sidecars run with: ${SIDECAR_ENV:-the Go runtime defaults} (see SIDECAR_ENV in bench/run.sh); nginx with worker_processes $NGINX_WORKERS."
  echo
  echo "steal: the share of the machine's CPU time the hypervisor gave to other guests during the measurement (/proc/stat); above a few percent, its requests/s and latencies are the host's, not the proxies'."
  echo
  echo "upstream CPU: the upstream's own CPU per request behind each target. It shares this machine's cores with the proxy and wrk, so a proxy that makes it work harder loses requests/s here that it would not lose to a remote upstream."
  echo
  echo "| round | target | requests/s | p50 ms | p99 ms | errors | proxy CPU µs/request | steal | upstream CPU µs/request |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$report"

# Warm every path once.
for t in "${TARGETS[@]}"; do wrk -t1 -c8 -d2s -s "$SCRIPT" "${URL[$t]}/v1/messages" >/dev/null; done

for r in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    f="$OUT/wrk-$t-$r.txt"
    c0=0; [ -n "${PROXY_PIDS[$t]}" ] && c0=$(cpu_ticks ${PROXY_PIDS[$t]})
    s0=$(steal_ticks)
    u0=$(cpu_ticks "$(upstream_of "$t")")
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$SCRIPT" "${URL[$t]}/v1/messages" >"$f"
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
    steal=$(steal_since "$s0")
    up=$(awk -v d=$(($(cpu_ticks "$(upstream_of "$t")") - u0)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
    echo "| $r | $t | $rps | $p50 | $p99 | $errs | $cpu | $steal | $up |" >>"$report"
  done
done

# Latency at concurrency 1 and SSE time to first byte, per round as well:
# their targets are differences of a few hundred µs, which one noisy sample
# can move past the bound (bench/targets.py judges each round and the
# median).
{
  echo
  echo "Latency at concurrency 1 (one request at a time for $LAT_D, keep-alive; µs; added = over the direct call to the same upstream, in the same round):"
  echo
  echo "| round | target | p50 | p99 | added p50 | added p99 | requests | failed | steal |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
} >>"$report"
declare -A STEAL
for r in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    s0=$(steal_ticks)
    "$OUT/benchtool" latency -url "${URL[$t]}" -d "$LAT_D" $(ca_flag "$t") >"$OUT/latency-$t-$r.json"
    STEAL[$t]=$(steal_since "$s0")
  done
  for t in "${TARGETS[@]}"; do
    python3 -c 'import json,sys; d=json.load(open(sys.argv[3])); b=json.load(open(sys.argv[4])); print("| %s | %s | %.0f | %.0f | %.0f | %.0f | %d | %d | %s |" % (sys.argv[1], sys.argv[2], d["p50_us"], d["p99_us"], d["p50_us"]-b["p50_us"], d["p99_us"]-b["p99_us"], d["requests"], d["failed"], sys.argv[5]))' \
      "$r" "$t" "$OUT/latency-$t-$r.json" "$OUT/latency-$(base_of "$t")-$r.json" "${STEAL[$t]}" >>"$report"
  done
done

{
  echo
  echo "SSE time to first byte ($TTFB_N streams, 16 at a time; µs):"
  echo
  echo "| round | target | TTFB p50 | TTFB p99 | whole stream p50 | whole stream p99 | failed | steal |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
} >>"$report"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    case $t in fasthttp-min*) continue ;; esac # buffers answers whole
    s0=$(steal_ticks)
    "$OUT/benchtool" ttfb -url "${URL[$t]}" -n "$TTFB_N" -c 16 $(ca_flag "$t") >"$OUT/ttfb-$t-$r.json"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[3])); print("| %s | %s | %d | %d | %d | %d | %d | %s |" % (sys.argv[1], sys.argv[2], d["ttfb_p50_us"], d["ttfb_p99_us"], d["total_p50_us"], d["total_p99_us"], d["failed"], sys.argv[4]))' \
      "$r" "$t" "$OUT/ttfb-$t-$r.json" "$(steal_since "$s0")" >>"$report"
  done
done

mib() { echo $(($1 / 1024)); }
{
  echo
  echo "Idle RSS by build (anonymous part in brackets): every driver (the default) $(mib "${IDLE_RSS[sidecar]}") MiB [$(mib "${IDLE_ANON[sidecar]}")];" \
    "AWS only $(mib "${IDLE_RSS[sidecar-aws]}") MiB [$(mib "${IDLE_ANON[sidecar-aws]}")];" \
    "GCP only $(mib "${IDLE_RSS[sidecar-gcp]}") MiB [$(mib "${IDLE_ANON[sidecar-gcp]}")];" \
    "Vault only $(mib "${IDLE_RSS[sidecar-vault]}") MiB [$(mib "${IDLE_ANON[sidecar-vault]}")]" \
    "(env, file and wif are in every build; see providers/all)."
  echo
  echo "Memory with $STREAMS streams open at once (nginx: master and workers summed; MiB; anon = anonymous part, the rest is the executable's pages):"
  echo
  echo "(all open: the largest of five samples in the first half of the hold, right after the burst that opened them; settled: one sample at 8/10 of the hold, all still open.)"
  echo
  echo "| target | idle RSS | idle anon | RSS, all open | anon, all open | RSS, settled | anon, settled | RSS after | completed | failed |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} >>"$report"
for t in "${RSS_TARGETS[@]}"; do
  j=$("$OUT/benchtool" streams -url "${URL[$t]}" -n "$STREAMS" -hold "$HOLD" -pid "${PROXY_PIDS[$t]}")
  echo "$j" >"$OUT/streams-$t.json"
  read -r after _ < <("$OUT/benchtool" rss -pid "${PROXY_PIDS[$t]}")
  echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); a=sys.argv; print("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d |" % (a[1], int(a[2])//1024, int(a[3])//1024, d["rss_kb_all_open"]//1024, d["anon_kb_all_open"]//1024, d["rss_kb_settled"]//1024, d["anon_kb_settled"]//1024, int(a[4])//1024, d["completed"], d["failed"]))' \
    "$t" "${IDLE_RSS[$t]}" "${IDLE_ANON[$t]}" "$after" >>"$report"
done
echo >>"$report"
bench/targets.py "$OUT" >>"$report"
cat "$report"
echo >&2 "raw outputs in $OUT"
