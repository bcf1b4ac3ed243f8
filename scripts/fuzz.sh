#!/usr/bin/env bash
# scripts/fuzz.sh - libFuzzer runs of the parsers of outside data, one
# target each, built with clang, -fsanitize=fuzzer,address,undefined
# (LeakSanitizer on), into build/fuzz/fuzz_TARGET:
#   header  fuzz/fuzz_header.c: the safetensors header, dlpx checksums,
#           files opened for loading (seeds: fuzz/corpus/header)
#   shm     fuzz/fuzz_shm.c: shared-memory segment images and the messages
#           of the descriptor server (seeds: fuzz/corpus/shm)
#   net     fuzz/fuzz_net.c: what HTTP/S3 servers and credentials files send
#           (Content-Range, S3 XML, INI; seeds: fuzz/corpus/net)
#
#   scripts/fuzz.sh            build, then fuzz each target for DLPX_FUZZ_SECONDS
#                              (60) on a copy of its corpus (the committed
#                              corpus never grows); exits nonzero on any crash,
#                              leak, timeout or out-of-memory, naming the
#                              reproducer
#   scripts/fuzz.sh FILE...    build, then run the given inputs once each
#                              through each target (replay a reproducer; exits
#                              nonzero if one fails)
#
#   DLPX_FUZZ_TARGETS="shm"    the targets (default: "header shm")
#   DLPX_FUZZ_SECONDS=300      how long to fuzz each target
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
# A finding is written to build/fuzz/artifacts/TARGET/ (crash-*, leak-*,
# timeout-*, oom-*).  Minimize one with
#   build/fuzz/fuzz_header -minimize_crash=1 -max_total_time=60 \
#       -exact_artifact_path=fuzz/corpus/header/regress-NAME FILE
# and keep it in fuzz/corpus/TARGET/ as a regression seed.  The generated
# seeds come from fuzz/make_corpus.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUTDIR=$ROOT/build/fuzz
read -r -a TARGETS <<< "${DLPX_FUZZ_TARGETS:-header shm net}"
for t in "${TARGETS[@]}"; do
  [ -f "fuzz/fuzz_$t.c" ] || { echo "fuzz.sh: no target $t (fuzz/fuzz_$t.c)" >&2; exit 2; }
done

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
LIB_SOURCES=(src/*.c src/python/*.c src/io/*.c src/shm/*.c src/net/*.c src/cuda/*.c)
SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -g -O1 -fno-omit-frame-pointer -pthread -DDLPX_BUILDING"
CPPFLAGS="-I$ROOT/include -I$CONFIG_DIR/include -I$CONFIG_DIR"
JANSSON_CFLAGS=$(pkg-config --cflags jansson)
JANSSON_LIBS=$(pkg-config --libs jansson)
mkdir -p "$OUTDIR"
STAMP="$CC $SAN $CFLAGS $CPPFLAGS $JANSSON_CFLAGS $JANSSON_LIBS"
for t in "${TARGETS[@]}"; do
  BIN=$OUTDIR/fuzz_$t
  stale=no
  if [ ! -x "$BIN" ] || [ "$(cat "$OUTDIR/.flags-$t" 2>/dev/null)" != "$STAMP" ]; then
    stale=yes
  else
    for f in "${LIB_SOURCES[@]}" "fuzz/fuzz_$t.c" src/*.h src/io/*.h src/shm/*.h src/net/*.h src/python/*.h src/cuda/*.h \
             include/dlpx/*.h "$CONFIG_DIR/config.h" "$CONFIG_DIR/include/dlpx/version.h"; do
      if [ "$f" -nt "$BIN" ]; then stale=yes; break; fi
    done
  fi
  if [ $stale = yes ]; then
    echo "== building $BIN ($CC)"
    # shellcheck disable=SC2086 # the flag variables are word lists
    "$CC" $SAN $CFLAGS $CPPFLAGS $JANSSON_CFLAGS "${LIB_SOURCES[@]}" "fuzz/fuzz_$t.c" \
      -o "$BIN.tmp" $JANSSON_LIBS
    mv "$BIN.tmp" "$BIN"
    echo "$STAMP" > "$OUTDIR/.flags-$t"
  fi
done

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
OPTS=(-dict="$ROOT/fuzz/safetensors.dict" -max_len=65536 -timeout=10 -rss_limit_mb=2048)

# ---- replay --------------------------------------------------------------------------
if [ $# -gt 0 ]; then
  rc=0
  for t in "${TARGETS[@]}"; do
    echo "== replaying $# input(s) through fuzz_$t"
    "$OUTDIR/fuzz_$t" "${OPTS[@]}" "$@" || rc=$?
  done
  exit $rc
fi

# ---- fuzz ------------------------------------------------------------------------------
SECONDS_=${DLPX_FUZZ_SECONDS:-60}
for t in "${TARGETS[@]}"; do
  WORK=$OUTDIR/run-$t
  ART=$OUTDIR/artifacts/$t
  LOG=$OUTDIR/fuzz-$t.log
  rm -rf "$WORK" && mkdir -p "$WORK/corpus" "$ART"
  cp fuzz/corpus/"$t"/* "$WORK/corpus/"
  echo "== fuzzing fuzz_$t for ${SECONDS_}s on a copy of fuzz/corpus/$t ($WORK/corpus)"
  before=$(ls "$ART" | wc -l)
  rc=0
  # shellcheck disable=SC2086 # DLPX_FUZZ_ARGS is a word list
  "$OUTDIR/fuzz_$t" "${OPTS[@]}" -max_total_time="$SECONDS_" -print_final_stats=1 \
    -artifact_prefix="$ART/" ${DLPX_FUZZ_ARGS:-} "$WORK/corpus" 2>&1 | tee "$LOG" || rc=$?
  after=$(ls "$ART" | wc -l)
  if [ $rc -ne 0 ] || [ "$after" -ne "$before" ]; then
    echo
    echo "== fuzz.sh: fuzz_$t found a problem (exit $rc); reproducer(s):"
    grep -ho "Test unit written to .*" "$LOG" | sed 's/^Test unit written to /  /' || true
    echo "replay with: DLPX_FUZZ_TARGETS=$t scripts/fuzz.sh FILE    (full log: $LOG)"
    [ $rc -ne 0 ] || rc=1
    exit $rc
  fi
  echo "== fuzz.sh: fuzz_$t: no crash or leak in ${SECONDS_}s ($(ls "$WORK/corpus" | wc -l) corpus inputs)"
done

# ---- coverage (optional) -----------------------------------------------------------------
if [ -n "${DLPX_FUZZ_COVERAGE:-}" ]; then
  major=$("$CC" -dumpversion | cut -d. -f1)
  PROFDATA=$(command -v "llvm-profdata-$major" || command -v llvm-profdata || true)
  COV=$(command -v "llvm-cov-$major" || command -v llvm-cov || true)
  if [ -z "$PROFDATA" ] || [ -z "$COV" ]; then
    echo "fuzz.sh: llvm-profdata and llvm-cov are needed for DLPX_FUZZ_COVERAGE" >&2
    exit 2
  fi
  for t in "${TARGETS[@]}"; do
    case $t in
      header) FILES=(src/io/header.c src/io/checksum.c src/io/file.c src/io/st_dtype.c) ;;
      shm) FILES=(src/shm/segment.c src/shm/server.c src/io/header.c) ;;
    esac
    WORK=$OUTDIR/run-$t
    echo "== coverage of ${FILES[*]} by $WORK/corpus"
    # shellcheck disable=SC2086
    "$CC" -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping $CFLAGS -O0 $CPPFLAGS \
      $JANSSON_CFLAGS "${LIB_SOURCES[@]}" "fuzz/fuzz_$t.c" -o "$OUTDIR/fuzz_${t}_cov" $JANSSON_LIBS
    LLVM_PROFILE_FILE="$OUTDIR/cov-$t.profraw" "$OUTDIR/fuzz_${t}_cov" -runs=0 "$WORK/corpus" \
      >/dev/null 2>&1
    "$PROFDATA" merge -sparse "$OUTDIR/cov-$t.profraw" -o "$OUTDIR/cov-$t.profdata"
    "$COV" report "$OUTDIR/fuzz_${t}_cov" -instr-profile="$OUTDIR/cov-$t.profdata" "${FILES[@]}"
    echo "(the lines: $COV show $OUTDIR/fuzz_${t}_cov -instr-profile=$OUTDIR/cov-$t.profdata FILE)"
  done
fi
