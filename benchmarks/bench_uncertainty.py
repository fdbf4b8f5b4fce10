"""Inference cost of the uncertainty-aware potential (shallow ensemble, K energy heads)
against a single-head model of the same size, per calculator call on ethanol.

    OMP_NUM_THREADS=1 python benchmarks/bench_uncertainty.py                # eager + compiled
    OMP_NUM_THREADS=1 python benchmarks/bench_uncertainty.py --heads 8 --no-compile
    OMP_NUM_THREADS=1 python benchmarks/bench_uncertainty.py --model runs/x/best.pt

Models: the shipped ``ethanol-gfn2`` architecture (channels 32, l_max 2, 2 layers, cutoff
5 A, float32) with 1 head and with K heads (random weights of the same shapes, or
``--model CKPT`` for the K-head one and its architecture with 1 head beside it). Each row
times ``calc.calculate`` on a structure that moves a little every call (MD-like: the
Verlet list is reused, every call recomputes), interleaving the models in rounds so that
load from other processes affects both alike; the median of the rounds is reported.

* energy+forces: what MD asks for; the K-head model also returns ``energy_spread``.
* +forces_spread: the same call asking for ``forces_spread`` as well (K backward passes,
  eager path: computed only when a caller asks for it).
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
from ase.build import molecule

from tfn_md import TFN, TFNCalculator, keys, load_potential


def _pair(heads: int, model_path: str | None):
    if model_path:
        many = load_potential(model_path)
        cfg = {k: v for k, v in many.config_dict().items() if k != "energy_heads"}
        cfg["llpr"] = False  # the baseline: no uncertainty at all
        one = TFN(**cfg)
        return one, many
    cfg = {"species": ["C", "H", "O"], "channels": 32, "l_max": 2, "layers": 2,
           "cutoff": 5.0, "radial_hidden": 64}
    torch.manual_seed(0)
    return TFN(**cfg), TFN(**cfg, energy_heads=heads)


def _time(calc, atoms, properties, calls, rng) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        calc.calculate(atoms, properties, ["positions"])
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--model", help="a K-head checkpoint (default: random weights)")
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="eager path only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    one, many = _pair(args.heads, args.model)
    k = many.config.energy_heads
    modes = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
    rows = []
    for mode, compile_ in modes:
        calcs = {"1 head": TFNCalculator(one, compile=compile_),
                 f"{k} heads": TFNCalculator(many, compile=compile_)}
        atoms = {name: molecule("CH3CH2OH") for name in calcs}
        rng = np.random.default_rng(0)
        for name, calc in calcs.items():  # warm up (and compile)
            _time(calc, atoms[name], [keys.ENERGY, keys.FORCES], 30, rng)
        cases = [(name, [keys.ENERGY, keys.FORCES]) for name in calcs]
        cases.append((f"{k} heads", [keys.ENERGY, keys.FORCES, keys.FORCES_SPREAD]))
        times = {i: [] for i in range(len(cases))}
        for _ in range(args.rounds):
            for i, (name, props) in enumerate(cases):
                calls = args.calls if keys.FORCES_SPREAD not in props else max(args.calls // 4, 10)
                times[i].append(_time(calcs[name], atoms[name], props, calls, rng))
        base = statistics.median(times[0])
        for i, (name, props) in enumerate(cases):
            t = statistics.median(times[i])
            what = "energy+forces" + ("+forces_spread" if keys.FORCES_SPREAD in props else "")
            rows.append({"path": mode, "model": name, "call": what, "ms_per_call": 1e3 * t,
                         "vs_1_head": t / base})
    print("| path | model | call | ms per call | vs 1 head |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['model']} | {r['call']} | {r['ms_per_call']:.3f} | "
              f"{r['vs_1_head']:.2f}x |")
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "rows": rows}))


if __name__ == "__main__":
    main()
