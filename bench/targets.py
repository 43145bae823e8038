#!/usr/bin/env python3
"""Checks a load run (bench/run.sh's $OUT) against issue 15's targets for
the sidecar beside nginx, on each upstream, and prints a markdown section:
each round's ratio where a target is per round, the median, and whether
every round and the median meet it.

    bench/targets.py OUT

Targets: requests/s >= 0.8x nginx's; CPU per request <= 1.5x; p99 <=
1.5x; added latency at concurrency 1 (p50) within 50 us of nginx's; SSE
time to first byte (p50) within 0.5 ms of nginx's; RSS <= 20 MB idle and
<= 60 MB with the streams open (MB = 10^6 bytes). Latency and first byte
are measured in every round (latency-TARGET-ROUND.json,
ttfb-TARGET-ROUND.json) and judged like the ratios; a run from before
that (latency-TARGET.json) is judged on its one sample.
"""
import json
import os
import re
import statistics
import sys

out = sys.argv[1]
rows = {}  # (round, target) -> (rps, p99 ms, cpu us)
for line in open(os.path.join(out, "report.md")):
    if line.startswith("Latency at concurrency 1"):
        break  # the end of the throughput table (the rounds' rows after it are latency's)
    m = re.match(r"\| (\d+) \| ([\w-]+) \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \| \d+ \| ([\d.-]+) \|", line)
    if m:
        cpu = float(m.group(5)) if m.group(5) != "-" else None
        rows[(int(m.group(1)), m.group(2))] = (float(m.group(3)), float(m.group(4)), cpu)
rounds = sorted({r for r, _ in rows})


def load(kind, target):
    with open(os.path.join(out, "%s-%s.json" % (kind, target))) as f:
        return json.load(f)


def differences(kind, field, a, b):
    """a's field minus b's, per round (one value for a run from before
    rounds measured it)."""
    ds = [load(kind, "%s-%d" % (a, r))[field] - load(kind, "%s-%d" % (b, r))[field]
          for r in rounds if os.path.exists(os.path.join(out, "%s-%s-%d.json" % (kind, a, r)))]
    return ds or [load(kind, a)[field] - load(kind, b)[field]]


def verdict(ok_all, ok_median):
    if ok_all:
        return "met in every round"
    return "met on the median" if ok_median else "**missed**"


print("Targets (issue 15), the sidecar against nginx:")
print()
print("| upstream | target | per round | median | result |")
print("|---|---|---|---:|---|")
for up, side, ngx in (("plain", "sidecar", "nginx"), ("HTTPS", "sidecar-tls", "nginx-tls")):
    for name, idx, op, bound in (("requests/s ≥ 0.8×", 0, ">=", 0.8), ("CPU/request ≤ 1.5×", 2, "<=", 1.5), ("p99 ≤ 1.5×", 1, "<=", 1.5)):
        rs = []
        for r in rounds:
            a, b = rows.get((r, side)), rows.get((r, ngx))
            if a and b and a[idx] is not None and b[idx]:
                rs.append(a[idx] / b[idx])
        if not rs:
            continue
        ok = (lambda v: v >= bound) if op == ">=" else (lambda v: v <= bound)
        med = statistics.median(rs)
        print("| %s | %s | %s | %.2f | %s |" % (up, name, ", ".join("%.2f" % v for v in rs), med, verdict(all(ok(v) for v in rs), ok(med))))
    try:
        for name, kind, field, bound, unit, scale in (
                ("added p50 at concurrency 1 within 50 µs", "latency", "p50_us", 50, "µs", 1),
                ("SSE first byte p50 within 0.5 ms", "ttfb", "ttfb_p50_us", 500, "ms", 1000)):
            ds = differences(kind, field, side, ngx)
            med = statistics.median(ds)
            shown = ", ".join(("%+.0f" if scale == 1 else "%+.2f") % (d / scale) for d in ds)
            print("| %s | %s | %s %s | %s | %s |" % (up, name, shown, unit, ("%+.0f" if scale == 1 else "%+.2f") % (med / scale),
                                                    verdict(all(d <= bound for d in ds), med <= bound) if len(ds) > 1 else ("met" if med <= bound else "**missed**")))
        s = load("streams", side)
        idle = int(open(os.path.join(out, "idle-%s.kb" % side)).read()) * 1024 / 1e6
        print("| %s | RSS idle ≤ 20 MB | %.1f MB | | %s |" % (up, idle, "met" if idle <= 20 else "**missed**"))
        mb = s["rss_kb_all_open"] * 1024 / 1e6
        print("| %s | RSS with %d streams ≤ 60 MB | %.1f MB (%d failed) | | %s |" % (up, s["streams"], mb, s["failed"], "met" if mb <= 60 and s["failed"] == 0 else "**missed**"))
    except FileNotFoundError as e:
        print("| %s | (a part of the run is missing: %s) | | | |" % (up, os.path.basename(e.filename)))
