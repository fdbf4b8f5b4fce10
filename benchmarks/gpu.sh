#!/usr/bin/env bash
# Prepared GPU check (run on a machine with CUDA): the test suite with its CUDA test, then
# the calculator benchmark on the GPU. Usage: bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q ".[test]"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python -m pytest -q tests/test_checkpoint_and_calculator.py -k cuda -rs
python - <<'PY'
import time, torch
from ase.build import bulk
from tfn_md import TFN, TFNCalculator
for n, dtype in [(6, torch.float32), (12, torch.float32), (20, torch.float32), (12, torch.float64)]:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n,) * 3)
    atoms.rattle(0.05, seed=0)
    model = TFN(species=["Cu"], channels=32, l_max=2, layers=2, cutoff=5.0)
    atoms.calc = TFNCalculator(model, device="cuda", dtype=dtype)
    atoms.get_forces()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        atoms.rattle(1e-4)
        t = time.perf_counter(); atoms.get_forces(); torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    best = min(times)
    print(f"{len(atoms):>6} atoms {str(dtype)[6:]}: {best:.4f} s/call, {len(atoms)/best:.0f} atom-steps/s, "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
PY
