#!/usr/bin/env bash
# scripts/setup.sh - everything the demo and the tests need, on a fresh
# Debian 12 machine: build tools from apt (when missing), a virtual
# environment in .venv with requirements-dev.txt, and dlpx itself installed
# into it from this checkout (pip builds libdlpx.so with autotools).
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

APT_PACKAGES=(build-essential autoconf automake libtool pkg-config valgrind clang
              libclang-rt-14-dev libdlpack-dev libjansson-dev libxxhash-dev python3-venv
              openmpi-bin libopenmpi-dev libcurl4-openssl-dev nginx-light openssl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing with apt-get: ${missing[*]}"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PYTHON --version)"
  $PYTHON -m venv .venv
fi
VPY=$ROOT/.venv/bin/python
stamp=.venv/.requirements.sha
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing requirements-dev.txt into .venv"
  $VPY -m pip install -q --upgrade pip
  $VPY -m pip install -q -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

echo "== installing dlpx (pip builds libdlpx.so with autotools)"
$VPY -m pip install -q --no-deps --no-build-isolation --force-reinstall "$ROOT"
export VPY ROOT
