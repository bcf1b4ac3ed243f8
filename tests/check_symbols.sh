#!/bin/sh
# check_symbols.sh - libdlpx.so exports exactly the functions its public
# headers declare: every dynamic symbol starts with dlpx_ (not dlpx__), and
# every DLPX_API function of include/dlpx/*.h is exported.
set -eu
lib="${top_builddir:-.}/src/.libs/libdlpx.so"
hdrs="${top_srcdir:-.}/include/dlpx"
NM="${NM:-nm}"
[ -f "$lib" ] || { echo "not ok 1 - $lib not built"; exit 1; }
exported=$($NM -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort)
declared=$(cat "$hdrs"/*.h | sed -n 's/^DLPX_API .*[ *]\(dlpx_[a-z0-9_]*\)(.*/\1/p' | sort -u)
fail=0
echo "1..3"
bad=$(printf '%s\n' "$exported" | grep -v '^dlpx_[a-z]' || true)
if [ -n "$bad" ]; then echo "not ok 1 - symbols outside dlpx_*:"; echo "$bad" | sed 's/^/#   /'; fail=1
else echo "ok 1 - every exported symbol starts with dlpx_"; fi
missing=$(printf '%s\n' "$declared" | while read -r s; do printf '%s\n' "$exported" | grep -qx "$s" || echo "$s"; done)
if [ -n "$missing" ]; then echo "not ok 2 - declared but not exported:"; echo "$missing" | sed 's/^/#   /'; fail=1
else echo "ok 2 - every DLPX_API function is exported ($(printf '%s\n' "$declared" | wc -l) functions)"; fi
extra=$(printf '%s\n' "$exported" | while read -r s; do printf '%s\n' "$declared" | grep -qx "$s" || echo "$s"; done)
if [ -n "$extra" ]; then echo "not ok 3 - exported but not declared:"; echo "$extra" | sed 's/^/#   /'; fail=1
else echo "ok 3 - nothing exported beyond the header"; fi
exit $fail
