#!/usr/bin/env bash
# Builds the keywarden container image with podman, without a Docker engine
# and without pulling anything: a static binary built here (CGO_ENABLED=0,
# -trimpath, version stamped), the host's CA certificates, and
# deploy/container/Dockerfile.prebuilt (FROM scratch). Installs podman with
# apt-get when it is missing (as root).
#
#   scripts/image.sh [IMAGE]        # default localhost/keywarden:$VERSION
#
# Environment: VERSION, COMMIT, DATE (stamped into the binary),
# PODMAN_ROOT (image storage; default .run/podman, vfs driver).
# Prints the image name on the last line of stdout. Exit 3: podman is
# missing and cannot be installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
DATE=${DATE:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}
image=${1:-localhost/keywarden:$VERSION}
PODMAN_ROOT=${PODMAN_ROOT:-$root/.run/podman}

if ! command -v podman >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "image: installing podman (apt-get)" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y --no-install-recommends podman >&2 ||
			{ apt-get update >&2 && apt-get install -y --no-install-recommends podman >&2; } || true
	fi
	command -v podman >/dev/null 2>&1 || { echo "image: podman is not installed and could not be installed (apt-get install podman, as root)" >&2; exit 3; }
fi

ca=""
for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
	if [ -s "$f" ]; then ca=$f; break; fi
done
[ -n "$ca" ] || { echo "image: no CA certificate bundle on this machine (install ca-certificates)" >&2; exit 1; }

ctx="$root/.run/image-context"
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/etc/ssl/certs"
cp "$ca" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"

pkg=github.com/keywarden/keywarden/internal/version
echo "image: building the static binary ($VERSION)" >&2
CGO_ENABLED=0 go build -trimpath -tags "timetzdata${TAGS:+,$TAGS}" \
	-ldflags "-s -w -X $pkg.Version=$VERSION -X $pkg.Commit=$COMMIT -X $pkg.Date=$DATE" \
	-o "$ctx/keywarden" ./cmd/keywarden

podman=(podman --storage-driver vfs --root "$PODMAN_ROOT/storage" --runroot "$PODMAN_ROOT/run")
echo "image: podman build $image" >&2
"${podman[@]}" build --quiet --pull=never \
	-f deploy/container/Dockerfile.prebuilt \
	--label org.opencontainers.image.title=keywarden \
	--label "org.opencontainers.image.version=$VERSION" \
	--label "org.opencontainers.image.revision=$COMMIT" \
	--label "org.opencontainers.image.created=$DATE" \
	--label org.opencontainers.image.source=https://github.com/keywarden/keywarden \
	-t "$image" "$ctx" >&2
# Drop the images this tag replaced (vfs keeps full copies).
"${podman[@]}" image prune -f >/dev/null 2>&1 || true
echo "$image"
