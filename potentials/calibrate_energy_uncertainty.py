"""Give a trained potential its energy uncertainty (last-layer prediction rigidity),
predictions unchanged:

    python potentials/calibrate_energy_uncertainty.py POTENTIAL --train TRAIN.h5
        --calibration HELD_OUT.h5 -o OUT.pt [--heads]

``--heads``: first calibrate the force spread of its energy heads on (up to 800 of) the
training structures, as ``tfn-md learn`` does after each training
(:func:`tfn_md.train.uncertainty.calibrate_heads`).

The rigidity comes from the training structures, its scale from the energy errors of the
held-out ones (:func:`tfn_md.train.uncertainty.calibrate_llpr`, computed in float64; the
weights keep their dtype). Prints the calibration, with ``sigma_p99``: the 99th
percentile of the uncertainty on the held-out structures (the threshold ``tfn-md learn``
would use).
"""

import argparse
import json

import torch

from tfn_md.checkpoint import load_potential, read_checkpoint, save_potential
from tfn_md.data.loader import GraphDataset
from tfn_md.train.uncertainty import calibrate_heads, calibrate_llpr


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("potential")
    p.add_argument("--train", required=True)
    p.add_argument("--calibration", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--heads", action="store_true", help="calibrate the heads' force spread too")
    args = p.parse_args()
    model = load_potential(args.potential)
    if args.heads:
        train = GraphDataset(args.train, model.cutoff)
        stride = max(1, len(train) // 800)
        subset = torch.utils.data.Subset(train, list(range(0, len(train), stride)))
        print(json.dumps({"heads": calibrate_heads(model, subset, max_frames=800)}))
    exact = model.double()
    model = load_potential(args.potential)
    model.load_state_dict({k: v.to(model.e0.dtype) for k, v in exact.state_dict().items()})
    result = calibrate_llpr(exact, GraphDataset(args.train, model.cutoff),
                            GraphDataset(args.calibration, model.cutoff))
    model.set_readout_covariance(exact.readout_covariance)
    save_potential(model, args.output, read_checkpoint(args.potential)["extra"])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
