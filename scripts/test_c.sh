#!/usr/bin/env bash
# scripts/test_c.sh - the C suite: strict warnings as errors, under valgrind,
# with ASAN (+LSan) and UBSAN, and `make distcheck`.  Called by
# scripts/test.sh (after scripts/setup.sh installed the tools).
#   DLPX_TEST_FAST=1  skips the sanitizer builds and distcheck.
#   DLPX_TEST_NO_VALGRIND=1  skips the valgrind run too.
# A source tree configured in place (./configure at the top) cannot also be
# built in build/: the builds then use a clean copy of it (build/srctree).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PY=${VPY:-python3}
JOBS=$(nproc 2>/dev/null || echo 2)
[ -x configure ] || autoreconf -fi
SRC=$("$PY" packaging/srctree.py --if-configured "$ROOT/build/srctree")
[ "$SRC" = "$ROOT" ] || echo "== the source tree is configured in place: building a clean copy ($SRC)"

step() { echo; echo "== $*"; }
build() {  # build DIR [configure options...]
  local dir=$1; shift
  mkdir -p "$dir"
  # (re)configure when never done, when configure changed, or when the
  # tree was configured for other sources
  if [ ! -f "$dir/Makefile" ] || [ "$SRC/configure" -nt "$dir/Makefile" ] ||
     [ "$(cat "$dir/.dlpx-source" 2>/dev/null)" != "$SRC" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && "$SRC/configure" -q --enable-werror "$@")
    echo "$SRC" > "$dir/.dlpx-source"
  fi
  make -s -C "$dir" -j"$JOBS" all >/dev/null
}

step "C tests (gcc, -Werror)"
build build/default
make -s -C build/default -j"$JOBS" check

if [ -z "${DLPX_TEST_NO_VALGRIND:-}" ]; then
  step "C tests under valgrind"
  make -s -C build/default check-valgrind
fi

if [ -z "${DLPX_TEST_FAST:-}" ]; then
  step "C tests with AddressSanitizer (+ LeakSanitizer)"
  build build/asan --enable-asan
  make -s -C build/asan -j"$JOBS" check
  step "C tests with UndefinedBehaviorSanitizer"
  build build/ubsan --enable-ubsan
  make -s -C build/ubsan -j"$JOBS" check
  step "make distcheck"
  make -s -C build/default distcheck >/dev/null
  echo "distcheck passed"
fi
