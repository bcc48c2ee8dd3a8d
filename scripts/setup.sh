#!/usr/bin/env bash
# Install what llamarig and its test rigs need on a Debian 12 machine (as root), idempotently:
# Debian packages for the container rigs, then a virtual environment with llamarig and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(debootstrap systemd-container ccache git python3-venv python3-pip iproute2 curl ca-certificates)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
