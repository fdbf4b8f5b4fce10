"""Small labelled datasets for training tests (ASE's EMT: fast, with energies, forces, stress)."""

import numpy as np
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from tfn_md.data import write_atoms
from tfn_md.train import TrainConfig


def emt_dataset(path, n_cu=12, n_mol=12, seed=0):
    """Rattled Cu cells (periodic: stress) and rattled ethanol (EMT knows H, C, O)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_cu):
        a = bulk("Cu", "fcc", a=3.6 + rng.uniform(-0.05, 0.05), cubic=True)
        a.rattle(0.08, seed=int(rng.integers(1 << 30)))
        frames.append(a)
    for k in range(n_mol):
        a = molecule("CH3CH2OH")
        a.rattle(0.05, seed=int(rng.integers(1 << 30)))
        frames.append(a)
    for a in frames:
        a.calc = EMT()
        a.get_potential_energy()
        if a.pbc.all():
            a.get_stress()
    write_atoms(path, frames, append=False)
    return path


def small_config(data, out, epochs=3, **optim) -> TrainConfig:
    optim = {"lr": 1e-2, "ema_decay": 0.8, **optim}
    return TrainConfig.from_dict({
        "data": {"train": str(data), "batch_size": 4, "valid_fraction": 0.2},
        "model": {"channels": 8, "l_max": 1, "layers": 2, "cutoff": 4.0, "radial_hidden": 16},
        "loss": {"energy": 1.0, "forces": 10.0, "stress": 10.0},
        "optim": {"epochs": epochs, **optim},
        "run": {"out": str(out), "seed": 3, "dtype": "float64", "plots": False},
    })
