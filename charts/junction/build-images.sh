#!/bin/sh
# Builds Junction's two container images FROM scratch, without pulling any
# base image:
#
#   junction:$TAG        the junction binary (cmd/junction) and a CA bundle
#   junction-natsd:$TAG  natsd (cmd/natsd): the stock nats-server built from
#                        the version pinned in go.mod
#
# The binaries are built here, static (CGO_ENABLED=0), with the host's Go
# toolchain; each Dockerfile only copies files into an empty image.
#
# Usage: charts/junction/build-images.sh [TAG]      (default TAG: dev)
#
# Environment:
#   VERSION    junction's version string (default: git describe, else TAG)
#   CA_BUNDLE  CA certificates for outbound TLS
#              (default: /etc/ssl/certs/ca-certificates.crt)
#   PREFIX     image name prefix, e.g. registry.example.nhs.uk/integration/
#   GOARCH     target architecture (default: the host's)
set -eu

TAG=${1:-dev}
CHART_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$CHART_DIR/../.." && pwd)
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
PREFIX=${PREFIX:-}
if [ -z "${VERSION:-}" ]; then
	VERSION=$(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null || echo "$TAG")
fi

if [ ! -f "$CA_BUNDLE" ]; then
	echo "build-images.sh: CA bundle $CA_BUNDLE not found (set CA_BUNDLE)" >&2
	exit 1
fi

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT INT TERM

# rootfs holds the empty directories the images need writable by the
# runtime user (65532); scratch has no shell to create them.
mkdir -p "$CTX/junction/rootfs/tmp" "$CTX/junction/rootfs/var/lib/junction" \
	"$CTX/natsd/rootfs/tmp" "$CTX/natsd/rootfs/data" "$CTX/natsd/rootfs/var/run/nats"
chmod 1777 "$CTX/junction/rootfs/tmp" "$CTX/natsd/rootfs/tmp"
chmod 0750 "$CTX/junction/rootfs/var/lib/junction" "$CTX/natsd/rootfs/data" "$CTX/natsd/rootfs/var/run/nats"

cd "$ROOT"
echo "building junction $VERSION and natsd (CGO_ENABLED=0)"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
	-o "$CTX/junction/junction" ./cmd/junction
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
	-o "$CTX/natsd/natsd" ./cmd/natsd
cp "$CA_BUNDLE" "$CTX/junction/ca-certificates.crt"

docker build -f "$CHART_DIR/Dockerfile.junction" -t "${PREFIX}junction:$TAG" "$CTX/junction"
docker build -f "$CHART_DIR/Dockerfile.natsd" -t "${PREFIX}junction-natsd:$TAG" "$CTX/natsd"

docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^${PREFIX}junction(-natsd)?:$TAG " || true
