# Shared by bench/run.sh and bench/pair.sh (sourced, not run): the
# processes of a run and their cleanup, ports, the fake key, the sidecar's
# configuration and start, and CPU time. The caller sets OUT (its
# directory) and SIDECAR_ENV, and has set -euo pipefail.

# pids are the run's background processes, stopped on exit.
pids=()
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap bench_cleanup EXIT

# wait_port PORT: waits up to 10 s for 127.0.0.1:PORT to accept, or exits.
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 did not open" >&2
  exit 1
}

# KEY: a fake Claude API key, new for each run.
KEY="sk-ant-api03-bench-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# run_sidecar NAME BINARY PORT UPSTREAM-URL: writes $OUT/NAME.yaml (the key
# in a real file store, $OUT/keys.json, written with `put` on first use;
# the proxy on PORT, its metrics on PORT+1, limits off) and starts BINARY's
# sidecar on it under $SIDECAR_ENV, trusting $OUT/ca.pem when there is one,
# logging to $OUT/NAME.log; its pid is $! and joins pids.
run_sidecar() {
  local cfg="$OUT/$1.yaml"
  cat >"$cfg" <<EOC
keys:
  bench: {store: "file://$OUT/keys.json?name=bench"}
sidecar:
  listen: 127.0.0.1:$3
  metrics_listen: 127.0.0.1:$(($3 + 1))
  routes: [{prefix: /, key: bench, upstream: "$4"}]
  rate_limit: {rps: 0, concurrency: 0}
EOC
  [ -f "$OUT/keys.json" ] || printf '%s' "$KEY" | "$2" put bench --config "$cfg" >/dev/null
  local ca=()
  [ ! -f "$OUT/ca.pem" ] || ca=(SSL_CERT_FILE="$OUT/ca.pem")
  # shellcheck disable=SC2086 # SIDECAR_ENV is a list of NAME=value words
  env $SIDECAR_ENV "${ca[@]}" "$2" sidecar --config "$cfg" --log-level warn 2>"$OUT/$1.log" &
  pids+=($!)
}

# cpu_ticks PID...: the CPU time (clock ticks, user and system) the
# processes used so far.
cpu_ticks() { for p in "$@"; do awk '{print $14+$15}' "/proc/$p/stat"; done | awk '{s+=$1} END {print s+0}'; }
HZ=$(getconf CLK_TCK)
