#!/usr/bin/env bash
# scripts/pytest_matrix.sh WHEEL - the Python suite on every CPython of this
# machine kind (pyenv's 3.9 to 3.13) against one built wheel: a virtual
# environment per version (.venv-3.X, with requirements-matrix.txt; the
# main .venv for 3.11, which has PyTorch and JAX), the wheel installed into
# it, the suite run from outside the source tree.  Prints the counts per
# version and fails if any version fails.
#   DLPX_MATRIX="3.11 3.12"  runs only those versions.
#   DLPX_PYTEST_MARK="not slow"  selects tests by marker.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
WHEEL=$(realpath "$1")
VERSIONS=${DLPX_MATRIX:-"3.9 3.10 3.11 3.12 3.13"}
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
EXTRA=()
[ -z "${DLPX_PYTEST_MARK:-}" ] || EXTRA=(-m "$DLPX_PYTEST_MARK")
declare -A RESULT
status=0

python_for() {  # the interpreter for version $1, or nothing
  local v=$1 p
  for p in "$PYENV_ROOT"/versions/"$v".*/bin/python"$v" "$(command -v python"$v" || true)"; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
}

for v in $VERSIONS; do
  echo; echo "== Python $v: the suite against $(basename "$WHEEL")"
  if [ "$v" = "3.11" ] && [ -x .venv/bin/python ]; then
    venv=.venv
  else
    py=$(python_for "$v")
    if [ -z "$py" ]; then
      echo "Python $v is not installed here: skipped"; RESULT[$v]="not installed"; continue
    fi
    venv=.venv-$v
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    stamp=$venv/.requirements.sha
    want=$(sha256sum requirements-matrix.txt | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
      "$venv/bin/python" -m pip install -q -r requirements-matrix.txt || {
        RESULT[$v]="install failed"; status=1; continue; }
      echo "$want" > "$stamp"
    fi
  fi
  vpy=$ROOT/$venv/bin/python
  "$vpy" -m pip install -q --no-deps --force-reinstall "$WHEEL" || {
    RESULT[$v]="wheel install failed"; status=1; continue; }
  log=$(mktemp)
  # from outside the tree: the installed wheel is what is tested
  (cd "$(mktemp -d)" && env -u PYTHONPATH -u DLPX_LIBRARY "$vpy" -m pytest -q \
     -p no:cacheprovider -c "$ROOT/pyproject.toml" --rootdir "$ROOT" "${EXTRA[@]}" \
     "$ROOT/tests/python") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  RESULT[$v]="$(grep -E '^(=+ )?[0-9]+ (passed|failed)' "$log" | tail -n 1 | tr -d '=' |
                sed 's/^ *//; s/ in [0-9.]*s.*//')"
  [ "$rc" -eq 0 ] || { RESULT[$v]="FAILED: ${RESULT[$v]}"; status=1; }
  rm -f "$log"
done

echo; echo "== Python suite per CPython version"
printf '%-8s %s\n' version result
for v in $VERSIONS; do printf '%-8s %s\n' "$v" "${RESULT[$v]:-?}"; done
exit $status
