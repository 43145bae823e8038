#!/usr/bin/env bash
# Makes promtool available and prints its path:
#   1. promtool on PATH (or $PROMTOOL), if present;
#   2. else Debian's prometheus package (as root, with apt-get): ~15 s;
#   3. else built from the Go module proxy with deploy/test/tools (its go.mod
#      pins github.com/prometheus/prometheus as a tool) into .run/tools/bin:
#      ~10 minutes cold on 2 cores. `go install promtool@version` is refused
#      because Prometheus' go.mod has replace directives; a module of our own
#      that requires it builds it fine.
# PROMTOOL_FROM=go skips 1 and 2.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${TOOLS_BIN:-$root/.run/tools/bin}
from=${PROMTOOL_FROM:-any}
if [ "$from" != go ]; then
	if [ -n "${PROMTOOL:-}" ] && [ -x "$PROMTOOL" ]; then echo "$PROMTOOL"; exit 0; fi
	if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
	# Debian's prometheus package brings promtool with the server.
	if "$root/scripts/install-prometheus.sh" >/dev/null && command -v promtool >/dev/null 2>&1; then
		command -v promtool; exit 0
	fi
fi
if [ -x "$bin/promtool" ]; then echo "$bin/promtool"; exit 0; fi
mkdir -p "$bin"
echo "install-promtool: building promtool from the Go module proxy (deploy/test/tools)" >&2
(cd "$root/deploy/test/tools" && GOFLAGS=-buildvcs=false go build -o "$bin/promtool" github.com/prometheus/prometheus/cmd/promtool) >&2
echo "$bin/promtool"
