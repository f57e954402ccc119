#!/usr/bin/env bash
# Build the MER-CLIP Live image with podman (or docker) where no image registry can be reached:
# the Debian bookworm base is made with debootstrap from deb.debian.org and imported, and a
# local wheelhouse (/opt/wheels, /opt/pypi*, if present) is mounted into the build for pip.
#   sudo bash scripts/build_image.sh [TAG]        # default tag: localhost/merclip-live:latest
# Needs root (debootstrap, rootful podman). See docs/DEPLOY.md for the figures of one build.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/merclip-live:latest}
base=localhost/merclip-base:bookworm
engine=$(command -v podman || command -v docker || true)
[ -n "$engine" ] || { echo "build_image.sh: install podman (apt-get install -y podman)" >&2; exit 2; }

if ! "$engine" image exists "$base" 2>/dev/null && ! "$engine" image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
  root=$(mktemp -d /tmp/merclip-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian
  tar -C "$root" -c . | "$engine" import - "$base"
fi

mounts=()
for dir in /opt/wheels /opt/pypi /opt/pypi-more; do
  if [ -d "$dir" ]; then mounts+=(-v "$dir:$dir:ro"); fi
done
# A PyPI reached through a TLS-inspecting proxy needs the host's CA bundle inside the build too.
cert=${PIP_CERT:-}
if [ -n "$cert" ] && [ -f "$cert" ]; then mounts+=(-v "$cert:/etc/merclip-build-ca.pem:ro"); cert=/etc/merclip-build-ca.pem; fi
"$engine" build --network host "${mounts[@]}" \
  --build-arg BASE="$base" \
  --build-arg PIP_FIND_LINKS="${PIP_FIND_LINKS:-}" \
  --build-arg PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL:-}" \
  --build-arg PIP_CERT="$cert" \
  -t "$tag" .
"$engine" image ls "$tag"
