#!/usr/bin/env bash
# The ONE command of a GPU session: on the GPU machine lent by the `device`
# tool, builds libdlpx from the `make dist` tarball in .device/, runs the C
# CUDA test, the real-GPU Python tests and the GPU benchmark, and writes
# everything to $OUT/gpu.log (plus $OUT/bench_cuda.json and $OUT/pytest.xml).
# Each step has a time limit inside an overall budget of ~9 minutes; a
# failing step is recorded and the next one runs; the summary at the end
# gives each step's exit status.
#
# First, HERE (the CPU machine), from the repository root:
#   bash scripts/device_prepare.sh
# then ONE call of the device tool's `run`:
#   carry:     [".device"]
#   command:   source .device/setup.sh && bash scripts/device_gpu.sh
#   timeout_s: 560
# then give_back.  The script also runs on a machine without a GPU (the GPU
# tests skip, the benchmark says there is no GPU): try it there first with
#   OUT=/tmp/gpu-out bash scripts/device_gpu.sh
#
# Environment: OUT (default .device/out), DEVICE_BUDGET_S (default 540),
# DEVICE_FORCE_SYSROOT=1 (use the carried .deb build dependencies even
# when the machine has its own: tests that path), BENCH_ARGS (extra
# arguments for bench/bench_cuda.py, e.g. --quick).
set -u -o pipefail
ROOT=$(pwd)
[ -d "$ROOT/py/dlpx" ] && [ -d "$ROOT/.device" ] || {
  echo "device_gpu: run from the repository root, with .device/ prepared" >&2; exit 2; }
OUT=${OUT:-$ROOT/.device/out}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: >"$LOG"
WORK=$(mktemp -d /tmp/dlpx-gpu.XXXXXX)
BUDGET=${DEVICE_BUDGET_S:-540}
START=$SECONDS
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false # JAX must not take 75% of the GPU

say() { echo "$*" | tee -a "$LOG"; }

STEPS=() RCS=() TIMES=()
# step NAME LIMIT_S COMMAND: runs COMMAND (a bash string) with the smaller of
# LIMIT_S and what is left of the budget, its output into the log.
step() {
  local name=$1 limit=$2 cmd=$3 left rc t0
  left=$((BUDGET - (SECONDS - START)))
  [ "$left" -lt "$limit" ] && limit=$left
  t0=$SECONDS
  say ""
  say "=== [$name] limit ${limit}s, $(date -u +%H:%M:%S) UTC: $cmd"
  if [ "$limit" -le 5 ]; then
    say "=== [$name] skipped: the time budget is spent"
    rc=125
  else
    timeout -k 5 "$limit" bash -c "$cmd" 2>&1 | tee -a "$LOG" "$WORK/$name.out"
    rc=$?
    [ "$rc" -eq 124 ] && say "=== [$name] TIMED OUT after ${limit}s"
  fi
  say "=== [$name] rc=$rc in $((SECONDS - t0))s"
  STEPS+=("$name") RCS+=("$rc") TIMES+=("$((SECONDS - t0))")
  return 0
}

# ---- the machine --------------------------------------------------------------------------
step info 30 '
  nvidia-smi || echo "nvidia-smi failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  uname -a; nproc; free -g | head -2; df -h /tmp | tail -1
  python3 --version
  python3 -c "import cffi; print(\"cffi\", cffi.__version__)" || echo "no cffi: was .device/setup.sh sourced?"
  python3 -m pip list 2>/dev/null | grep -i -E "^(torch|cupy[-a-z0-9]*|jax[-a-z0-9]*|numpy|safetensors|ml.dtypes|pytest|hypothesis|typer|humanize) " || true
  for h in jansson.h xxhash.h curl/curl.h; do
    echo "#include <$h>" | cc -E - >/dev/null 2>&1 && echo "have $h" || echo "no $h"
  done'

# ---- the benchmark peers carried as wheels ---------------------------------------------------
if ls "$ROOT"/.device/wheels/*.whl >/dev/null 2>&1; then
  step wheels 60 "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target /tmp/site-gpu $ROOT/.device/wheels/*.whl"
  export PYTHONPATH=/tmp/site-gpu${PYTHONPATH:+:$PYTHONPATH}
else
  say "no wheels in .device/wheels: fastsafetensors and runai-model-streamer rows will say not installed"
fi

# ---- build dependencies the machine lacks: the carried Debian packages -------------------------
have_build_deps() {
  pkg-config --exists 'jansson >= 2.10' 2>/dev/null || return 1
  for h in xxhash.h curl/curl.h; do
    echo "#include <$h>" | cc -E - >/dev/null 2>&1 || return 1
  done
}
if [ "${DEVICE_FORCE_SYSROOT:-0}" = 1 ] || ! have_build_deps; then
  SYSROOT="$WORK/sysroot"
  mkdir -p "$SYSROOT"
  for deb in "$ROOT"/.device/debs/*.deb; do
    [ -e "$deb" ] && dpkg -x "$deb" "$SYSROOT"
  done
  libdir="$SYSROOT/usr/lib/x86_64-linux-gnu"
  [ -f "$libdir/pkgconfig/jansson.pc" ] &&
    sed -i "s|^prefix=.*|prefix=$SYSROOT/usr|" "$libdir/pkgconfig/jansson.pc"
  export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export CPPFLAGS="-I$SYSROOT/usr/include ${CPPFLAGS:-}"
  export LDFLAGS="-L$libdir -Wl,-rpath,$libdir ${LDFLAGS:-}"
  export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "build dependencies from .device/debs, unpacked in $SYSROOT"
fi

# ---- libdlpx from the dist tarball -----------------------------------------------------------
TARBALL=$(ls -t "$ROOT"/.device/dlpx-*.tar.gz 2>/dev/null | head -1)
step build 180 "
  test -n '$TARBALL' || { echo 'no .device/dlpx-*.tar.gz: run scripts/device_prepare.sh'; exit 1; }
  tar xf '$TARBALL' -C '$WORK' && cd '$WORK'/dlpx-*/ && ./configure -q && make -s -j16 >/dev/null" # warnings and errors still show
BUILD=$(ls -d "$WORK"/dlpx-*/ 2>/dev/null | head -1)
BUILD=${BUILD%/}
export DLPX_LIBRARY="$BUILD/src/.libs/libdlpx.so"
export DLPX_INCLUDE="$BUILD/include"
export PYTHONPATH="$ROOT/py${PYTHONPATH:+:$PYTHONPATH}"
export DLPX_TEST_CUDA=real
say "DLPX_LIBRARY=$DLPX_LIBRARY"
say "PYTHONPATH=$PYTHONPATH"

# ---- the C CUDA test (against the driver's test double) --------------------------------------
step c_test_cuda 90 "cd '$BUILD' && make -s -j16 check TESTS=tests/test_cuda; rc=\$?;
  tail -n 25 tests/test_cuda.log; cp tests/test_cuda.log '$OUT/test_cuda.log' 2>/dev/null; exit \$rc"

# ---- the Python tests on the real GPU (test_cuda.py skips under DLPX_TEST_CUDA=real) -----------
step pytest 240 "python3 -m pytest -q tests/python/test_cuda_gpu.py tests/python/test_cuda.py \
  -p no:cacheprovider -rfEs --junitxml='$OUT/pytest.xml'"

# ---- the benchmark ----------------------------------------------------------------------------
step bench 240 "python3 bench/bench_cuda.py --json '$OUT/bench_cuda.json' ${BENCH_ARGS:-}"

# ---- summary ------------------------------------------------------------------------------------
say ""
say "=== summary ($((SECONDS - START))s of ${BUDGET}s)"
fails=0
for i in "${!STEPS[@]}"; do
  verdict=ok
  [ "${RCS[$i]}" -ne 0 ] && verdict=FAILED && fails=$((fails + 1))
  say "$(printf '  %-12s rc=%-4s %4ss  %s' "${STEPS[$i]}" "${RCS[$i]}" "${TIMES[$i]}" "$verdict")"
done
[ -f "$WORK/pytest.out" ] && say "  pytest: $(grep -E '(passed|failed|skipped|error)' "$WORK/pytest.out" | tail -1)"
[ -f "$WORK/c_test_cuda.out" ] && say "  C test_cuda: $(grep -E '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR)' "$WORK/c_test_cuda.out" | tr -s ' \n' ' ')"
[ -f "$WORK/bench.out" ] && say "  bench: $(grep -c '^## ' "$WORK/bench.out") tables ($(head -1 "$WORK/bench.out" | cut -c1-100))"
say "  log: $LOG"
rm -rf "$WORK"
exit "$fails"
