#!/usr/bin/env bash
# Makes the Prometheus Pushgateway available and prints its path (used by
# the `keywarden rotate --push-gateway` tests):
#   1. $PUSHGATEWAY, if executable, or pushgateway or prometheus-pushgateway
#      (Debian's name) on PATH;
#   2. else Debian's prometheus-pushgateway package, as root with apt-get.
# Exits 1 when neither works: the tests then skip outside CI and fail under
# CI=true.
set -euo pipefail
if [ -n "${PUSHGATEWAY:-}" ] && [ -x "$PUSHGATEWAY" ]; then echo "$PUSHGATEWAY"; exit 0; fi
found() {
	for n in pushgateway prometheus-pushgateway; do
		if command -v "$n" >/dev/null 2>&1; then command -v "$n"; return 0; fi
	done
	return 1
}
if found; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "install-pushgateway: apt-get install prometheus-pushgateway" >&2
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends prometheus-pushgateway >&2; then
		apt-get update >&2 && apt-get install -y --no-install-recommends prometheus-pushgateway >&2 || true
	fi
	# The package's service is not wanted: the tests start their own gateway.
	if found; then exit 0; fi
fi
echo "install-pushgateway: no pushgateway binary and cannot install it (not root, or no apt-get)" >&2
exit 1
