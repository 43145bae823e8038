#!/usr/bin/env bash
# Makes the prometheus server available and prints its path (used by the
# revoke-gate tests and deploy checks):
#   1. $PROMETHEUS, if executable, or prometheus on PATH;
#   2. else Debian's prometheus package, as root with apt-get (~15 s; it
#      brings promtool too).
# Exits 1 when neither works: the tests then skip outside CI and fail under
# CI=true.
set -euo pipefail
if [ -n "${PROMETHEUS:-}" ] && [ -x "$PROMETHEUS" ]; then echo "$PROMETHEUS"; exit 0; fi
if command -v prometheus >/dev/null 2>&1; then command -v prometheus; exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "install-prometheus: apt-get install prometheus" >&2
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends prometheus >&2; then
		apt-get update >&2 && apt-get install -y --no-install-recommends prometheus >&2 || true
	fi
	# The package's service is not wanted: the tests start their own server.
	if command -v prometheus >/dev/null 2>&1; then command -v prometheus; exit 0; fi
fi
echo "install-prometheus: no prometheus binary and cannot install it (not root, or no apt-get)" >&2
exit 1
