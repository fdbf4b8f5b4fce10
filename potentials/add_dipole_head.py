"""Give a trained potential a dipole head fitted to its training data's dipoles and charges
(tfn_md.train.dipole: least squares; energies, forces and uncertainty unchanged):

    python potentials/add_dipole_head.py POTENTIAL --data TRAIN.h5 [MORE.h5 ...]
        -o OUT.pt [--charges-weight 1.0]

Prints the fit's statistics; evaluate with ``tfn-md eval OUT.pt TEST.h5``.
"""

import argparse
import json

from tfn_md.checkpoint import load_potential, read_checkpoint, save_potential
from tfn_md.data.loader import GraphDataset
from tfn_md.train.dipole import fit_dipole_head


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("potential")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--charges-weight", type=float, default=1.0)
    args = p.parse_args()
    model = load_potential(args.potential)
    data = [GraphDataset(path, model.cutoff, vector_keys=["dipole"], charges=True)
            for path in args.data]
    fitted, stats = fit_dipole_head(model, data, args.charges_weight)
    save_potential(fitted, args.output, read_checkpoint(args.potential)["extra"])
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
