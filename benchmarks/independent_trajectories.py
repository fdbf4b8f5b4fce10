"""A potential's errors on independent reference trajectories, one row per file, the worst
stated: what a model card reports as its accuracy on data it did not choose.

    python benchmarks/independent_trajectories.py POTENTIAL FILE.h5 [FILE.h5 ...]

Each file: a trajectory from ``tfn-md data sample`` with a seed the potential was not
trained or selected with. Per file: the thermostat temperature, the mean kinetic
temperature of its frames (from the stored momenta, 3N degrees of freedom), the force MAE
(meV/A, per component) and the energy MAE (meV/atom).
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from ase import units

from tfn_md.checkpoint import load_potential
from tfn_md.data.loader import GraphDataset, collate_batch
from tfn_md.data.reader import H5Dataset
from tfn_md.train.trainer import evaluate_model


def kinetic_temperature(path) -> float:
    with H5Dataset(path) as ds:
        temps = []
        for atoms in ds:
            temps.append(atoms.get_kinetic_energy() / (1.5 * units.kB * len(atoms)))
    return float(np.mean(temps))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("potential")
    p.add_argument("files", nargs="+")
    args = p.parse_args()
    model = load_potential(args.potential)
    model.tabulate()
    print("| file | thermostat (K) | mean kinetic T (K) | frames | force MAE (meV/A) | "
          "energy MAE (meV/atom) |")
    print("|---|---|---|---|---|---|")
    worst = {}
    for path in args.files:
        data = GraphDataset(path, model.cutoff)
        loader = torch.utils.data.DataLoader(data, batch_size=16, collate_fn=collate_batch)
        m = evaluate_model(model, loader)
        setpoint = float(np.unique(data.h5.column("md_temperature"))[0])
        force = 1000 * m["forces_mae"]
        print(f"| {Path(path).name} | {setpoint:g} | {kinetic_temperature(path):.0f} | "
              f"{len(data)} | {force:.2f} | {1000 * m['energy_per_atom_mae']:.3f} |")
        if force > worst.get(setpoint, ("", 0.0))[1]:
            worst[setpoint] = (Path(path).name, force)
        data.h5.close()
    for setpoint, (name, force) in sorted(worst.items()):
        print(f"worst at {setpoint:g} K: {name}, force MAE {force:.2f} meV/A")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
