"""Active learning of a potential for methane with GFN2-xTB (tblite), then MD that
reports where the potential is unsure.

    python examples/active_learning.py [--out learn_methane] [--quick]

1. ``tfn-md learn`` as a library call (:class:`tfn_md.learn.Learner`) on the
   configuration below: reference MD at 300 and 800 K, then rounds of training,
   exploration with the potential at 300-1200 K, selection of frames whose force spread
   (8 energy heads) exceeds the threshold, GFN2-xTB labels, retraining. The same run
   from the command line: ``tfn-md --threads 1 learn learn_methane/learn.toml``
   (re-run it to resume after an interruption). The report is in
   ``<out>/report.md`` and ``<out>/report.png``.
2. Langevin MD at 1000 K with the final potential; every 50 steps it prints the energy
   spread and the largest per-atom force spread, and counts the frames whose force
   spread (RMS over atoms) exceeds the threshold.
"""

import argparse
from pathlib import Path

import numpy as np
from ase import units
from ase.build import molecule
from ase.md import velocitydistribution
from ase.md.langevin import Langevin

from tfn_md import TFNCalculator
from tfn_md.learn import Learner, load_learn_config

CONFIG = """
[system]
molecule = "CH4"
[reference]
method = "GFN2-xTB"
[initial]
temperatures = [300.0, 800.0]
n = {n_initial}
interval = 20
[explore]
temperatures = [300.0, 800.0, 1200.0]
steps = {explore_steps}
interval = 20
threshold = {threshold}
stop = 2.0
max_select = {max_select}
min_separation = 100
[budget]
max_labels = {max_labels}
max_iterations = {max_iterations}
[model]
channels = {channels}
l_max = {l_max}
layers = 2
cutoff = 4.0
energy_heads = 8
[loss]
energy = 1.0
forces = 30.0
[optim]
lr = 5e-3
epochs = {epochs}
retrain_epochs = {retrain_epochs}
[run]
out = "{out}"
dtype = "float32"
"""

FULL = {"n_initial": 100, "explore_steps": 2000, "threshold": 0.05, "max_select": 30,
        "max_labels": 150, "max_iterations": 5, "channels": 16, "l_max": 2, "epochs": 40,
        "retrain_epochs": 15}
QUICK = {"n_initial": 6, "explore_steps": 40, "threshold": 0.001, "max_select": 2,
         "max_labels": 4, "max_iterations": 2, "channels": 4, "l_max": 1, "epochs": 2,
         "retrain_epochs": 1}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="learn_methane")
parser.add_argument("--quick", action="store_true", help="a tiny budget (tests)")
args = parser.parse_args()

out = Path(args.out).resolve()
out.mkdir(parents=True, exist_ok=True)
settings = QUICK if args.quick else FULL
(out / "learn.toml").write_text(CONFIG.format(out=out / "run", **settings))
cfg = load_learn_config(out / "learn.toml")
state = Learner(cfg, progress=not args.quick).run()
print((out / "run" / "report.md").read_text())

atoms = molecule("CH4")
calc = TFNCalculator(str(out / "run" / "final.pt"))
atoms.calc = calc
thermalize = getattr(velocitydistribution, "thermalize_momenta",  # ASE >= 3.29
                     velocitydistribution.MaxwellBoltzmannDistribution)
thermalize(atoms, temperature_K=1000, rng=np.random.default_rng(1))
dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=1000, friction=0.01 / units.fs,
               fixcm=False, rng=np.random.default_rng(2))
flagged, checks = 0, 0
for block in range(4 if args.quick else 40):
    dyn.run(50)
    spread = calc.get_property("forces_spread", atoms)  # eV/A per atom (8 backward passes)
    energy_spread = calc.get_property("energy_spread", atoms)  # eV, free with every call
    checks += 1
    flagged += bool(np.sqrt(np.mean(spread**2)) > cfg.explore.threshold)
    print(f"step {dyn.nsteps:5d}  energy spread {1000 * energy_spread:7.2f} meV  "
          f"largest force spread {1000 * spread.max():7.1f} meV/A")
print(f"frames above the threshold ({cfg.explore.threshold} eV/A): {flagged} of {checks}")
