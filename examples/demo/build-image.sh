#!/usr/bin/env bash
# Builds the demo backend image FROM scratch with Debian's static busybox (no registry needed).
# Usage: build-image.sh TAG [DOCKER_HOST]
set -euo pipefail
tag=$1
here=$(cd "$(dirname "$0")" && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin"
cp "$here/image/Dockerfile" "$ctx/"
cp "$here/image/entrypoint.sh" "$ctx/rootfs/entrypoint.sh"
cp /bin/busybox "$ctx/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$applet"
done
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null 2>&1 \
  || DOCKER_BUILDKIT=0 docker build -t "$tag" "$ctx"
