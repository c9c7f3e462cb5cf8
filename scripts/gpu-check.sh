#!/usr/bin/env bash
# The GPU check of issue #25: the one thing to run on a machine with a CUDA GPU, in two calls
# of at most 8 minutes each (docs/perf.md, "GPU check"):
#
#   scripts/gpu-check.sh 1     # checks, CUDA kernel tests, kernel table, bench stream 1k / 32k (~5 min)
#   scripts/gpu-check.sh 2     # gated `gpu` model + ungated twin trained, evaluated, weights (~6.5 min)
#   scripts/gpu-check.sh tiny  # the whole thing with tiny sizes, on CPU too (what the test runs)
#
# Figures go to $OUT/figures-part{1,2}.json (every key; what was not measured says why), the
# weights to $OUT/{gated,ungated}.tar.NN (cat the parts, then tar -x). Nothing is installed
# from the network: heedful runs from this checkout (PYTHONPATH and the links its package
# layout needs), wheels carried in .whl/ are installed offline first when present.
# Part 2 needs the corpus: runs/carry/corpus-gpu.tar.xz (docs/model.md builds it), carried
# with the call, or CORPUS=folder-or-archive.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PART="${1:-}"
case "$PART" in 1|2|tiny) ;; *) echo "usage: scripts/gpu-check.sh 1|2|tiny" >&2; exit 2 ;; esac
OUT="${OUT:-$ROOT/runs/gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
if ! "$PY" -c "import sys, heedful.selector as s; sys.exit(not s.__file__.startswith('$ROOT/'))" 2>/dev/null; then
  # not installed: heedful from the checkout (pyproject maps these folders into heedful.*)
  for d in selector store tui; do [[ -e "heedful/$d" ]] || ln -sfn "../$d" "heedful/$d"; done
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/heedful-site .whl/*.whl \
    && export PYTHONPATH="/tmp/heedful-site:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
export HEEDFUL_GPU_WORK="${HEEDFUL_GPU_WORK:-/tmp/heedful-gpu-work}"
LOG="$OUT/gpu-check-$PART.log"
if [[ "$PART" == tiny ]]; then
  "$PY" -m heedful bench gpu --part all --tiny --out "$OUT" 2>&1 | tee "$LOG"
  exit "${PIPESTATUS[0]}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$LOG"
# each part ends well inside a call of 8 minutes; the figures are written as they come
timeout 470 "$PY" -m heedful bench gpu --part "$PART" --out "$OUT" --corpus "${CORPUS:-runs/carry/corpus-gpu.tar.xz}" \
  ${GPU_CHECK_ARGS:-} 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
echo "gpu-check part $PART: exit $rc; figures: $OUT/figures-part$PART.json" | tee -a "$LOG"
exit "$rc"
