#!/usr/bin/env bash
# Sets up .venv on first use, then runs the whole test suite on CPU (Triton kernels under
# TRITON_INTERPRET=1, as CI runs them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export TRITON_INTERPRET="${TRITON_INTERPRET:-1}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${HEEDFUL_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
