#!/usr/bin/env bash
# scripts/demo.sh - the main job: one buffer through NumPy -> dlpx ->
# PyTorch -> JAX and back with no copy, per-call costs beside the
# frameworks' own paths, and a PyTorch model through a tensor file (saved,
# loaded in every mode, read by the reference safetensors package, loaded
# into a fresh model, a flipped bit caught).  Installs what it needs first
# (scripts/setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
echo
exec "$VPY" examples/demo.py
