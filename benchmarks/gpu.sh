#!/usr/bin/env bash
# Prepared GPU check (run on a machine with CUDA): the CUDA tests (every fast path against
# the CPU), then the calculator on the GPU on each path: exact MLP, radial tables, compiled
# whole program (small systems) and compiled chunk kernels (large). Usage: bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q ".[test]"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
export TFN_MD_CACHE=$(mktemp -d)
python -m pytest -q tests/ase/test_checkpoint_and_calculator.py -k cuda -rs
python - <<'PY'
import time, numpy as np, torch
from ase.build import bulk, molecule
from tfn_md import TFN, TFNCalculator

def bench(atoms, model, dtype, **kw):
    calc = TFNCalculator(model, device="cuda", dtype=dtype, skin=0.0, **kw)
    cpu = TFNCalculator(model, dtype=torch.float64, skin=0.0, compile=False)
    atoms.calc = calc
    f = atoms.get_forces()  # compiles where asked
    dev = np.abs(f - cpu.get_forces(atoms.copy())).max()
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        atoms.rattle(1e-4)
        t = time.perf_counter(); atoms.get_forces(); torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    best = min(times)
    print(f"{len(atoms):>6} atoms {str(dtype)[6:]} {kw}: {best * 1e3:.2f} ms/call, "
          f"{len(atoms) / best:.0f} atom-steps/s, |F - F_cpu64| {dev:.1e}, "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)

eth = molecule("CH3CH2OH")
model = TFN(species=["H", "C", "O"], channels=32, l_max=2, layers=2, cutoff=5.0)
for kw in ({"exact": True, "compile": False}, {"compile": False}, {"compile": True}):
    bench(eth.copy(), model, torch.float32, **kw)
cu = TFN(species=["Cu"], channels=32, l_max=2, layers=2, cutoff=5.0)
for n, dtype in [(6, torch.float32), (12, torch.float32), (20, torch.float32), (12, torch.float64)]:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n,) * 3)
    atoms.rattle(0.05, seed=0)
    for kw in ({"exact": True, "compile": False}, {"compile": False}, {"compile": True}):
        bench(atoms.copy(), cu, dtype, **kw)
PY
