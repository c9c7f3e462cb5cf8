#!/usr/bin/env bash
# Sets up .venv on first use, then runs the heedful CLI: ./heedful.sh generate "..." 
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$ROOT/scripts/setup.sh"
exec "${HEEDFUL_VENV:-$ROOT/.venv}/bin/heedful" "$@"
