#!/usr/bin/env bash
# Creates .venv (once) and installs heedful into it, editable.
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
echo "heedful: setting up $VENV (first run only; log in $LOG)" >&2
{
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q ${HEEDFUL_TORCH:-torch==2.13.0}
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
} >"$LOG" 2>&1 || { echo "heedful: set-up failed; the end of $LOG:" >&2; tail -n 30 "$LOG" >&2; exit 1; }
touch "$STAMP"
echo "heedful: set-up done" >&2
