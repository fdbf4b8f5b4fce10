#!/usr/bin/env bash
# The prepared GPU check, offline: install tfn_md and what the image lacks from a wheel
# folder (benchmarks/gpu_wheels.sh) over the image's own torch, then run
# benchmarks/gpu_check.py (its docstring lists the sections). Everything it prints is also
# written under $OUT (default ./gpu_check_out).
#
#   bash benchmarks/gpu.sh [WHEEL_DIR] [gpu_check.py options]    # default wheels/py<X.Y>
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(python -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
wheels=${1:-wheels/py$py}
shift || true
out=${OUT:-gpu_check_out}
mkdir -p "$out"
python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.cuda.is_available())'
# --no-index: the GPU machine reaches no package index; --no-build-isolation: nothing to
# build (wheels only) and the image's torch is kept
python -m pip install --quiet --no-index --no-build-isolation --find-links "$wheels" \
  "tfn_md[test]" 2>&1 | tee "$out/install.txt"
python -m pip list 2>/dev/null | grep -i -E "^(torch|tfn.md|ase|vesin|e3nn|numpy) " \
  | tee -a "$out/install.txt"
cd "$out" && python "$OLDPWD/benchmarks/gpu_check.py" --out . "$@"
