#!/usr/bin/env bash
# scripts/fuzz.sh - libFuzzer run of the parsers of outside data (the
# safetensors header, dlpx checksums, files opened for loading):
# fuzz/fuzz_header.c built with clang, -fsanitize=fuzzer,address,undefined
# (LeakSanitizer on), into build/fuzz/fuzz_header.
#
#   scripts/fuzz.sh            build, then fuzz for DLPX_FUZZ_SECONDS (60) on a
#                              copy of fuzz/corpus/header (the committed corpus
#                              never grows); exits nonzero on any crash, leak,
#                              timeout or out-of-memory, naming the reproducer
#   scripts/fuzz.sh FILE...    build, then run the given inputs once each
#                              (replay a reproducer; exits nonzero if one fails)
#
#   DLPX_FUZZ_SECONDS=300      how long to fuzz
#   DLPX_FUZZ_CONFIG_DIR=DIR   a configured build tree whose config.h and
#                              include/dlpx/version.h to use (default
#                              build/default, as scripts/test_c.sh makes it;
#                              when absent, ./configure runs into
#                              build/fuzz-config)
#   DLPX_FUZZ_CC=clang-14      the compiler (default: clang, else clang-NN)
#   DLPX_FUZZ_ARGS="-jobs=4"   more libFuzzer options for the fuzzing run
#   DLPX_FUZZ_COVERAGE=1       after a clean run, report the line coverage of
#                              src/io/ by the corpus reached (llvm-cov)
#
# A finding is written to build/fuzz/artifacts/ (crash-*, leak-*, timeout-*,
# oom-*).  Minimize one with
#   build/fuzz/fuzz_header -minimize_crash=1 -max_total_time=60 \
#       -exact_artifact_path=fuzz/corpus/header/regress-NAME FILE
# and keep it in fuzz/corpus/header/ as a regression seed.  The generated
# seeds come from fuzz/make_corpus.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUTDIR=$ROOT/build/fuzz
BIN=$OUTDIR/fuzz_header

# ---- the compiler --------------------------------------------------------------
CC=${DLPX_FUZZ_CC:-}
if [ -z "$CC" ]; then
  for c in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
    if command -v "$c" >/dev/null 2>&1; then CC=$c; break; fi
  done
fi
[ -n "$CC" ] || { echo "fuzz.sh: clang is required (libFuzzer)" >&2; exit 2; }

# ---- config.h and include/dlpx/version.h -----------------------------------------
CONFIG_DIR=${DLPX_FUZZ_CONFIG_DIR:-build/default}
case $CONFIG_DIR in /*) ;; *) CONFIG_DIR=$ROOT/$CONFIG_DIR ;; esac
if [ ! -f "$CONFIG_DIR/config.h" ] || [ ! -f "$CONFIG_DIR/include/dlpx/version.h" ]; then
  if [ -f "$ROOT/config.h" ] && [ -f "$ROOT/include/dlpx/version.h" ]; then
    CONFIG_DIR=$ROOT # the source tree is configured in place
  else
    CONFIG_DIR=$ROOT/build/fuzz-config
    if [ ! -f "$CONFIG_DIR/config.h" ] || [ ! -f "$CONFIG_DIR/include/dlpx/version.h" ] ||
       [ "$ROOT/configure.ac" -nt "$CONFIG_DIR/config.h" ]; then
      echo "== configuring into $CONFIG_DIR (for config.h)"
      [ -x configure ] || autoreconf -fi
      rm -rf "$CONFIG_DIR" && mkdir -p "$CONFIG_DIR"
      (cd "$CONFIG_DIR" && "$ROOT/configure" -q)
    fi
  fi
fi

# ---- build ---------------------------------------------------------------------------
SOURCES=(src/*.c src/python/*.c src/io/*.c fuzz/fuzz_header.c)
SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -g -O1 -fno-omit-frame-pointer -pthread -DDLPX_BUILDING"
CPPFLAGS="-I$ROOT/include -I$CONFIG_DIR/include -I$CONFIG_DIR"
JANSSON_CFLAGS=$(pkg-config --cflags jansson)
JANSSON_LIBS=$(pkg-config --libs jansson)
mkdir -p "$OUTDIR"
STAMP="$CC $SAN $CFLAGS $CPPFLAGS $JANSSON_CFLAGS $JANSSON_LIBS"
stale=no
if [ ! -x "$BIN" ] || [ "$(cat "$OUTDIR/.flags" 2>/dev/null)" != "$STAMP" ]; then
  stale=yes
else
  for f in "${SOURCES[@]}" src/*.h src/io/*.h src/python/*.h include/dlpx/*.h \
           "$CONFIG_DIR/config.h" "$CONFIG_DIR/include/dlpx/version.h"; do
    if [ "$f" -nt "$BIN" ]; then stale=yes; break; fi
  done
fi
if [ $stale = yes ]; then
  echo "== building $BIN ($CC)"
  # shellcheck disable=SC2086 # the flag variables are word lists
  "$CC" $SAN $CFLAGS $CPPFLAGS $JANSSON_CFLAGS "${SOURCES[@]}" -o "$BIN.tmp" $JANSSON_LIBS
  mv "$BIN.tmp" "$BIN"
  echo "$STAMP" > "$OUTDIR/.flags"
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
OPTS=(-dict="$ROOT/fuzz/safetensors.dict" -max_len=65536 -timeout=10 -rss_limit_mb=2048)

# ---- replay --------------------------------------------------------------------------
if [ $# -gt 0 ]; then
  echo "== replaying $# input(s)"
  "$BIN" "${OPTS[@]}" "$@"
  exit
fi

# ---- fuzz ------------------------------------------------------------------------------
WORK=$OUTDIR/run
ART=$OUTDIR/artifacts
rm -rf "$WORK" && mkdir -p "$WORK/corpus" "$ART"
cp fuzz/corpus/header/* "$WORK/corpus/"
SECONDS_=${DLPX_FUZZ_SECONDS:-60}
echo "== fuzzing for ${SECONDS_}s on a copy of fuzz/corpus/header ($WORK/corpus)"
before=$(ls "$ART" | wc -l)
rc=0
# shellcheck disable=SC2086 # DLPX_FUZZ_ARGS is a word list
"$BIN" "${OPTS[@]}" -max_total_time="$SECONDS_" -print_final_stats=1 \
  -artifact_prefix="$ART/" ${DLPX_FUZZ_ARGS:-} "$WORK/corpus" 2>&1 | tee "$OUTDIR/fuzz.log" ||
  rc=$?
after=$(ls "$ART" | wc -l)
if [ $rc -ne 0 ] || [ "$after" -ne "$before" ]; then
  echo
  echo "== fuzz.sh: the fuzzer found a problem (exit $rc); reproducer(s):"
  grep -ho "Test unit written to .*" "$OUTDIR/fuzz.log" | sed 's/^Test unit written to /  /' || true
  echo "replay with: scripts/fuzz.sh FILE    (full log: $OUTDIR/fuzz.log)"
  [ $rc -ne 0 ] || rc=1
  exit $rc
fi
echo "== fuzz.sh: no crash or leak in ${SECONDS_}s ($(ls "$WORK/corpus" | wc -l) corpus inputs)"

# ---- coverage (optional) -----------------------------------------------------------------
if [ -n "${DLPX_FUZZ_COVERAGE:-}" ]; then
  major=$("$CC" -dumpversion | cut -d. -f1)
  PROFDATA=$(command -v "llvm-profdata-$major" || command -v llvm-profdata || true)
  COV=$(command -v "llvm-cov-$major" || command -v llvm-cov || true)
  if [ -z "$PROFDATA" ] || [ -z "$COV" ]; then
    echo "fuzz.sh: llvm-profdata and llvm-cov are needed for DLPX_FUZZ_COVERAGE" >&2
    exit 2
  fi
  echo "== coverage of src/io/ by $WORK/corpus"
  # shellcheck disable=SC2086
  "$CC" -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping $CFLAGS -O0 $CPPFLAGS \
    $JANSSON_CFLAGS "${SOURCES[@]}" -o "$OUTDIR/fuzz_header_cov" $JANSSON_LIBS
  LLVM_PROFILE_FILE="$OUTDIR/cov.profraw" "$OUTDIR/fuzz_header_cov" -runs=0 "$WORK/corpus" \
    >/dev/null 2>&1
  "$PROFDATA" merge -sparse "$OUTDIR/cov.profraw" -o "$OUTDIR/cov.profdata"
  "$COV" report "$OUTDIR/fuzz_header_cov" -instr-profile="$OUTDIR/cov.profdata" \
    src/io/header.c src/io/checksum.c src/io/file.c src/io/st_dtype.c
  echo "(the lines: $COV show $OUTDIR/fuzz_header_cov -instr-profile=$OUTDIR/cov.profdata FILE)"
fi
