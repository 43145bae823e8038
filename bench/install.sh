#!/usr/bin/env bash
# Installs the load-run tools from Debian: wrk (load generator) and
# nginx-light (the reference proxy). Idempotent; needs root or sudo.
set -euo pipefail
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# A second try covers a concurrent apt run holding the archive cache.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" ||
  { sleep 5; $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; }
