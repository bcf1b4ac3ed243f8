#!/usr/bin/env bash
# scripts/test.sh - every test: the C suite (strict warnings as errors, under
# valgrind, ASAN and UBSAN builds, `make distcheck`), bounded libFuzzer runs
# over the parsers of outside data (tensor-file headers and readers,
# shared-memory segments and the descriptor server's messages, what HTTP
# and S3 servers and credentials files send;
# DLPX_FUZZ_SECONDS each, default 60), mypy on the package,
# smoke runs of the benchmarks, then one wheel built and the Python suite
# run against it on every CPython this machine kind has (3.9 to 3.13; real
# NumPy and ml_dtypes everywhere, PyTorch and JAX where they install), with
# the counts per version.  Installs what it needs first.
#   DLPX_TEST_FAST=1 skips the sanitizer builds, distcheck, the slow tests
#   and the other Python versions (3.11 only).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

step() { echo; echo "== $*"; }

bash scripts/test_c.sh

step "fuzzing the parsers of outside data (libFuzzer, ${DLPX_FUZZ_SECONDS:=60} s a target)"
DLPX_FUZZ_SECONDS=$DLPX_FUZZ_SECONDS bash scripts/fuzz.sh

step "mypy on py/dlpx"
"$VPY" -m mypy

step "benchmark smoke runs (timings are not checked)"
./build/default/bench/bench_core --quick | tail -n 4
(cd "$(mktemp -d)" && "$VPY" "$ROOT/bench/bench_python.py" --quick --json bench.json | tail -n 3)
(cd "$(mktemp -d)" && "$VPY" "$ROOT/bench/bench_files.py" --quick --json bench-files.json | tail -n 12)
(cd "$(mktemp -d)" && "$VPY" "$ROOT/bench/bench_share.py" --quick --json bench-share.json | tail -n 12)
(cd "$(mktemp -d)" && "$VPY" "$ROOT/bench/bench_remote.py" --quick --json bench-remote.json | tail -n 16)
"$VPY" bench/bench_cuda.py --quick | tail -n 3   # without a GPU: says so
# the CUDA tables' code, against the driver's test double (dlpx rows only)
(cd "$(mktemp -d)" && DLPX_LIBCUDA=$ROOT/build/default/tests/.libs/libfakecuda.so \
  FAKECUDA_MEMORY=$((4 << 30)) "$VPY" "$ROOT/bench/bench_cuda.py" --quick --fake-ok | tail -n 12)

step "one wheel for every Python version"
rm -rf build/wheel
"$VPY" -m pip wheel -q --no-deps --no-build-isolation -w build/wheel "$ROOT"
WHEEL=$(ls build/wheel/dlpx_cffi-*.whl)
echo "$WHEEL"
"$VPY" -m auditwheel show "$WHEEL" | tr '\n' ' ' | sed 's/  */ /g'; echo

step "Python tests on each CPython, against the wheel"
export DLPX_BUILD_DIR=$ROOT/build/default
if [ -n "${DLPX_TEST_FAST:-}" ]; then
  DLPX_MATRIX=3.11 DLPX_PYTEST_MARK="not slow" bash scripts/pytest_matrix.sh "$WHEEL"
else
  bash scripts/pytest_matrix.sh "$WHEEL"
fi
