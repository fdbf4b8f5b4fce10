"""Throughput of N small molecules in one torch-sim call against N sequential ASE calls.

    python benchmarks/bench_torchsim.py                       # 16 ethanol, float32 and float64
    python benchmarks/bench_torchsim.py --no-compiled         # eager rows only (no compiling)
    python benchmarks/bench_torchsim.py --n-systems 64 --steps 10 --threads 2

The same ``--n-systems`` rattled ethanol molecules (shipped ``ethanol-gfn2``), the same
dtype and the same torch thread count (``--threads``, set once for the whole run), in one
process:

* torch-sim: :class:`tfn_md.engines.torchsim.TFNModel`, all molecules in one call
  (one graph, one forward and one backward), eager (``compile=False``) and compiled
  (``compile=True``: the whole-response program over the disconnected batch);
* ASE: one :class:`tfn_md.TFNCalculator`, called for one molecule after the other
  (as N calculators would be, without N copies of the compiled programs), eager (``compile=False``) and the calculator's default (``compile="auto"``,
  which compiles each shape after ``COMPILE_AFTER`` calls; the rows are measured after
  that warm-up, as in MD).

Two measurements per row (the rows interleaved, ``--rounds`` rounds, the median kept, so
that a load change on a shared machine hits every row alike):

* ``evals``: energy + forces of every molecule once (positions moved by ~1e-3 A before
  each round, no result cached): structure-evaluations/s and atom-evaluations/s;
* ``md``: ``--steps`` steps of NVT Langevin MD (300 K, 0.5 fs) of every molecule:
  torch-sim's ``nvt_langevin`` on the batch, ASE's ``Langevin`` on each molecule in
  turn (integrator bookkeeping included): atom-steps/s and structure-steps/s.

Compile times (first calls, untimed in the rows) are printed separately. The batched and
the sequential energies and forces of the first round are compared (max differences).
"""

import argparse
import importlib.metadata
import statistics
import time

import numpy as np
import torch
import torch_sim as ts
from ase import units
from ase.build import molecule
from ase.md.langevin import Langevin

from tfn_md import TFNCalculator
from tfn_md.engines.torchsim import TFNModel
from tfn_md.inference.compiled import COMPILE_AFTER

POTENTIAL = "ethanol-gfn2"
TEMPERATURE = 300.0  # K
TIMESTEP = 0.5  # fs


def molecules(n: int, seed: int = 0):
    frames = []
    for k in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=seed + k)
        frames.append(atoms)
    return frames


class Batched:
    """torch-sim: every molecule in one call."""

    def __init__(self, frames, dtype, compile):
        self.model = TFNModel(POTENTIAL, dtype=dtype, compile=compile)
        self.state = ts.io.atoms_to_state(frames, self.model.device, self.model.dtype)
        self.md_state = None

    def warm_up(self):
        t0 = time.perf_counter()
        self.model(self.state)
        self.model(self.state)
        return time.perf_counter() - t0

    def evaluate(self, positions):
        self.state.positions = torch.as_tensor(positions, dtype=self.model.dtype)
        out = self.model(self.state)
        return out["energy"].double().numpy(), out["forces"].double().numpy()

    def md(self, steps):
        dt = torch.tensor(TIMESTEP * 1e-3, dtype=self.model.dtype)  # ps (metal units)
        kT = torch.tensor(TEMPERATURE * float(ts.units.MetalUnits.temperature),
                          dtype=self.model.dtype)
        if hasattr(ts, "nvt_langevin_step"):  # torch-sim >= 0.4 (Python >= 3.12)
            def init(state):
                return ts.nvt_langevin_init(state, self.model, kT=kT)

            def update(state):
                return ts.nvt_langevin_step(state, self.model, dt=dt, kT=kT)
        else:  # torch-sim 0.3
            init, step = ts.nvt_langevin(self.model, dt=dt, kT=kT, seed=0)

            def update(state):
                return step(state, kT=kT)
        if self.md_state is None:
            self.md_state = init(self.state)
        for _ in range(steps):
            self.md_state = update(self.md_state)


class Sequential:
    """ASE: a calculator called for each molecule in turn."""

    def __init__(self, frames, dtype, compile):
        self.frames = [a.copy() for a in frames]
        self.md_frames = [a.copy() for a in frames]
        # one calculator for every molecule (each compiled calculator holds its own loaded
        # programs, ~150 MB): its Verlet list is searched anew when the molecule changes
        self.calc = TFNCalculator(POTENTIAL, dtype=dtype, compile=compile)
        for a in self.frames + self.md_frames:
            a.calc = self.calc
        rng = np.random.default_rng(0)
        for b in self.md_frames:  # Maxwell-Boltzmann momenta (as torch-sim's init)
            m = b.get_masses()[:, None]
            b.set_momenta(rng.normal(size=(len(b), 3)) * np.sqrt(m * units.kB * TEMPERATURE))
        # the friction torch-sim's nvt_langevin uses by default: 1 / (100 dt)
        self.dyns = [Langevin(b, TIMESTEP * units.fs, temperature_K=TEMPERATURE,
                              friction=1 / (100 * TIMESTEP * units.fs), fixcm=False,
                              rng=np.random.default_rng(k))
                     for k, b in enumerate(self.md_frames)]
        self.compile = compile

    def warm_up(self):
        """Untimed first calls; with compile="auto", enough calls to compile each shape."""
        t0 = time.perf_counter()
        calls = COMPILE_AFTER + 2 if self.compile == "auto" else 2
        rng = np.random.default_rng(1)
        a = self.frames[0]
        start = a.positions.copy()
        for _ in range(calls):
            a.positions = start + rng.normal(0, 1e-3, start.shape)
            a.get_forces()
        a.positions = start
        return time.perf_counter() - t0

    def evaluate(self, positions):
        energies, forces, start = [], [], 0
        for a in self.frames:
            a.positions = positions[start:start + len(a)]
            start += len(a)
            energies.append(a.get_potential_energy())
            forces.append(a.get_forces())
        return np.array(energies), np.concatenate(forces)

    def md(self, steps):
        for dyn in self.dyns:
            dyn.run(steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-systems", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="MD steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (all rows)")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--no-compiled", action="store_true",
                        help="eager rows only (compiling takes tens of seconds per program)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    frames = molecules(args.n_systems)
    n_atoms = sum(len(a) for a in frames)
    reference = np.concatenate([a.positions for a in frames])
    version = importlib.metadata.version("torch-sim-atomistic")
    print(f"{args.n_systems} x ethanol ({n_atoms} atoms), {POTENTIAL}, torch "
          f"{torch.__version__}, torch-sim {version}, {torch.get_num_threads()} "
          f"thread(s), {args.rounds} rounds (median), MD {args.steps} steps/round\n")
    rows = []
    for dtype in args.dtypes.split(","):
        engines = {"torch-sim batch, eager": Batched(frames, dtype, False),
                   "ASE sequential, eager": Sequential(frames, dtype, False)}
        if not args.no_compiled:
            engines["torch-sim batch, compiled"] = Batched(frames, dtype, True)
            engines["ASE sequential, default (auto: compiled)"] = Sequential(frames, dtype,
                                                                             "auto")
        for name, engine in engines.items():
            print(f"{dtype} {name}: warm-up (compiling where asked) {engine.warm_up():.1f} s",
                  flush=True)
        evals = {name: [] for name in engines}
        md = {name: [] for name in engines}
        rng = np.random.default_rng(2)
        results = {}
        for r in range(args.rounds):
            positions = reference + rng.normal(0, 1e-3, reference.shape)
            for name, engine in engines.items():
                t0 = time.perf_counter()
                out = engine.evaluate(positions)
                evals[name].append(time.perf_counter() - t0)
                if r == 0:
                    results[name] = out
                t0 = time.perf_counter()
                engine.md(args.steps)
                md[name].append(time.perf_counter() - t0)
        base_e, base_f = results["ASE sequential, eager"]
        for name in engines:
            e, f = results[name]
            t_eval, t_md = statistics.median(evals[name]), statistics.median(md[name])
            rows.append((dtype, name, args.n_systems / t_eval, n_atoms / t_eval,
                         n_atoms * args.steps / t_md, args.n_systems * args.steps / t_md,
                         np.abs(e - base_e).max(), np.abs(f - base_f).max()))

    header = (f"{'dtype':8} {'engine':42} {'struct-evals/s':>14} {'atom-evals/s':>13} "
              f"{'atom-steps/s':>13} {'struct-steps/s':>14} {'|dE| eV':>9} {'|dF| eV/A':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for dtype, name, se, ae, ast, sst, de, df in rows:
        print(f"{dtype:8} {name:42} {se:14,.1f} {ae:13,.0f} {ast:13,.0f} {sst:14,.1f} "
              f"{de:9.1e} {df:9.1e}")
    print("\n|dE|, |dF|: largest difference from 'ASE sequential, eager' in the first round")
    for dtype in args.dtypes.split(","):
        by = {name: row for row in rows if row[0] == dtype for name in [row[1]]}
        for kind in ("eager", "compiled"):
            ts_row = by.get(f"torch-sim batch, {kind}")
            ase_row = by.get("ASE sequential, eager" if kind == "eager"
                             else "ASE sequential, default (auto: compiled)")
            if ts_row and ase_row:
                print(f"{dtype} {kind}: torch-sim batch / ASE sequential = "
                      f"{ts_row[2] / ase_row[2]:.2f}x (evals), {ts_row[4] / ase_row[4]:.2f}x (MD)")


if __name__ == "__main__":
    main()
