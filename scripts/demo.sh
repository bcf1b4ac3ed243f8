#!/usr/bin/env bash
# scripts/demo.sh - the main job: one buffer through NumPy -> dlpx ->
# PyTorch -> JAX and back with no copy, and per-call costs beside the
# frameworks' own paths.  Installs what it needs first (scripts/setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
echo
exec "$VPY" examples/demo.py
