#!/usr/bin/env bash
# scripts/test.sh - every test: the C suite (strict warnings as errors) and
# under valgrind, ASAN and UBSAN builds, `make distcheck`, the Python suite
# against the installed package (real NumPy, PyTorch, JAX, ml_dtypes), and
# smoke runs of the benchmarks.  Installs what it needs first.
#   DLPX_TEST_FAST=1 skips the sanitizer builds, distcheck and slow tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
JOBS=$(nproc 2>/dev/null || echo 2)
[ -x configure ] || autoreconf -fi

step() { echo; echo "== $*"; }
build() {  # build DIR [configure options...]
  local dir=$1; shift
  mkdir -p "$dir"
  if [ ! -f "$dir/Makefile" ] || [ configure -nt "$dir/Makefile" ]; then
    (cd "$dir" && "$ROOT/configure" -q --enable-werror "$@")
  fi
  make -s -C "$dir" -j"$JOBS" all >/dev/null
}

step "C tests (gcc, -Werror)"
build build/default
make -s -C build/default -j"$JOBS" check

step "C tests under valgrind"
make -s -C build/default check-valgrind

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

step "benchmark smoke runs (timings are not checked)"
./build/default/bench/bench_core --quick | tail -n 4
(cd "$(mktemp -d)" && "$VPY" "$ROOT/bench/bench_python.py" --quick --json bench.json | tail -n 3)

step "Python tests (installed package)"
marker=()
[ -z "${DLPX_TEST_FAST:-}" ] || marker=(-m "not slow")
export DLPX_BUILD_DIR=$ROOT/build/default
unset DLPX_LIBRARY PYTHONPATH
"$VPY" -m pytest -q -p no:cacheprovider "${marker[@]}" tests/python
