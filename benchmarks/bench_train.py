"""Seconds per training epoch of tfn_md, MACE and NequIP on the same data, side by side.

    python benchmarks/bench_train.py                      # 400 ethanol frames, 2 timed epochs
    python benchmarks/bench_train.py --data my.h5 --frames 1000 --threads 1
    python benchmarks/bench_train.py --mace-python ../peers/mace/bin/python \\
        --nequip-python ../peers/nequip/bin/python

The same frames (the first ``--frames`` of a tfn_md HDF5 file with energies and forces,
default ``datasets/ethanol-gfn2_train.h5``: GFN2-xTB ethanol) go to each code; each trains
in a fresh process (MACE and NequIP in their own virtual environments, see
``../shared/peers/README.md``) with the same width (32 channels), l_max 2, 2 interaction
layers, cutoff 5 A, float32, batch 8, AdamW at 5e-3 and the loss
``mean((E - E*)/N)^2 + 10 mean |F - F*|^2 / 3``; forces are -dE/dx with the graph kept
(create_graph), so every step is a double backward, as in real training. One epoch of
warm-up (first-call work, TorchScript re-optimisation), then ``--epochs`` timed epochs:
printed is the median epoch time (batching, forward, forces, backward and optimizer step;
no validation).

* tfn_md: :class:`tfn_md.train.trainer.Trainer.train_epoch` with the model and loss of
  ``tfn-md learn``'s template (``energy_heads = 8``, the ``energy_nll`` term) and
  ``batch_size = 8``: what the one-command loop runs, with its compiled training step
  (``run.compile = true``; the warm-up epoch includes compiling it), and again eagerly
  ("tfn_md-eager", ``run.compile = false``).
* MACE 0.3.16: ``ScaleShiftMACE`` as in ``../shared/peers/mace_calc.py`` (correlation 3,
  hidden 32x0e+32x1o+32x2e), its ``AtomicData`` and ``torch_geometric`` loader,
  ``model(batch, training=True)``.
* NequIP 0.19.1: ``NequIPGNNModel`` as in ``../shared/peers/nequip_calc.py``, its
  ``from_ase`` data, neighbour-list transform and ``batched_from_list``.

Thread setting: ``--threads default`` (torch's own: one per core) or a number, the same for
all three. Run-to-run noise is 10-15 % here: compare numbers of one run only.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "peers"
WIDTH, LMAX, LAYERS, CUTOFF, BATCH, LR, W_FORCES = 32, 2, 2, 5.0, 8, 5e-3, 10.0


def _timed_epochs(run_epoch, epochs: int) -> list[float]:
    times = []
    for _ in range(1 + epochs):
        t0 = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - t0)
    return times


def _batches(items: list, size: int) -> list[list]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def work_tfn_md(frames_h5: str, epochs: int, compile: bool = True) -> dict:
    import tomllib

    from tfn_md.learn.defaults import TEMPLATE
    from tfn_md.train.config import TrainConfig
    from tfn_md.train.trainer import Trainer

    template = tomllib.loads(TEMPLATE.read_text())
    cfg = TrainConfig.from_dict({
        "data": {"train": frames_h5, "valid": frames_h5, "batch_size": BATCH},
        "model": {**template["model"], "channels": WIDTH, "l_max": LMAX, "layers": LAYERS,
                  "cutoff": CUTOFF},
        "loss": {**template["loss"], "forces": W_FORCES},
        "optim": {"lr": LR, "epochs": 1 + epochs},
        "run": {"out": tempfile.mkdtemp(), "plots": False, "dtype": "float32",
                "compile": compile}})
    trainer = Trainer(cfg, progress=False)
    n_params = sum(p.numel() for p in trainer.model.parameters())

    def epoch():
        trainer.train_epoch()
        trainer.epoch += 1

    return {"params": n_params, "epoch_seconds": _timed_epochs(epoch, epochs)}


def _loss(e, e_ref, n, f, f_ref):
    import torch

    return torch.mean(((e - e_ref) / n) ** 2) + W_FORCES * torch.mean((f - f_ref) ** 2)


def work_mace(xyz: str, epochs: int) -> dict:
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # as mace_calc.py
    import ase.io
    import numpy as np
    import torch
    from e3nn import o3
    from mace import data, modules, tools
    from mace.tools import torch_geometric

    frames = ase.io.read(xyz, ":")
    zs = sorted({int(z) for a in frames for z in a.numbers})
    torch.manual_seed(0)
    keyspec = data.KeySpecification(info_keys={"energy": "ref_energy"},
                                    arrays_keys={"forces": "ref_forces"})
    table = tools.AtomicNumberTable(zs)
    items = [data.AtomicData.from_config(data.config_from_atoms(a, keyspec), z_table=table,
                                         cutoff=CUTOFF) for a in frames]
    loader = torch_geometric.dataloader.DataLoader(items, batch_size=BATCH, shuffle=True)
    neighbours = float(np.mean([it.edge_index.shape[1] / it.positions.shape[0] for it in items]))
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    hidden = f"{WIDTH}x0e+{WIDTH}x1o+{WIDTH}x2e"
    model = modules.ScaleShiftMACE(
        r_max=CUTOFF, num_bessel=8, num_polynomial_cutoff=5, max_ell=LMAX,
        interaction_cls=block, interaction_cls_first=block, num_interactions=LAYERS,
        num_elements=len(zs), atomic_numbers=zs, atomic_energies=np.zeros(len(zs)),
        hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("16x0e"),
        avg_num_neighbors=neighbours, correlation=3, gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0, atomic_inter_shift=float(np.mean(
            [a.info["ref_energy"] / len(a) for a in frames])))
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()

    def epoch():
        for batch in loader:
            opt.zero_grad()
            out = model(batch.to_dict(), training=True, compute_force=True)
            n = torch.bincount(batch.batch).to(out["energy"].dtype)
            _loss(out["energy"], batch.energy, n, out["forces"], batch.forces).backward()
            opt.step()

    return {"params": sum(p.numel() for p in model.parameters()),
            "epoch_seconds": _timed_epochs(epoch, epochs)}


def work_nequip(xyz: str, epochs: int) -> dict:
    import warnings

    import ase.io
    import numpy as np
    import torch
    from nequip.data import AtomicDataDict, from_ase
    from nequip.integrations.utils import basic_transforms
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    frames = ase.io.read(xyz, ":")
    types = sorted({s for a in frames for s in a.get_chemical_symbols()})
    set_global_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NequIPGNNModel(seed=0, model_dtype="float32", type_names=types, r_max=CUTOFF,
                               num_layers=LAYERS, l_max=LMAX, parity=False,
                               num_features=WIDTH, avg_num_neighbors=float(len(frames[0]) - 1))
    transforms = basic_transforms(model.metadata, CUTOFF, types, {t: t for t in types})
    items = []
    for a in frames:
        d = from_ase(a)
        for t in transforms:
            d = t(d)
        items.append(d)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    rng = np.random.default_rng(0)

    def epoch():
        for idx in _batches(list(rng.permutation(len(items))), BATCH):
            batch = AtomicDataDict.batched_from_list([items[i] for i in idx])
            e_ref = batch[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1)
            f_ref = batch[AtomicDataDict.FORCE_KEY]
            opt.zero_grad()
            out = model(batch)
            n = batch[AtomicDataDict.NUM_NODES_KEY].to(f_ref.dtype)
            _loss(out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1), e_ref, n,
                  out[AtomicDataDict.FORCE_KEY], f_ref).backward()
            opt.step()

    return {"params": sum(p.numel() for p in model.parameters()),
            "epoch_seconds": _timed_epochs(epoch, epochs)}


WORKERS = {"tfn_md": work_tfn_md, "tfn_md-eager": lambda h5, epochs: work_tfn_md(h5, epochs, False),
           "mace": work_mace, "nequip": work_nequip}


def write_frames(h5_path: str, n: int, folder: Path) -> tuple[str, str, int, int]:
    """The first n frames as a tfn_md HDF5 file and as extended XYZ (energy and forces in
    ``ref_energy`` / ``ref_forces`` and in a single-point calculator) -> (h5, xyz, frames,
    atoms per frame of the first)."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from tfn_md.data.reader import H5Dataset
    from tfn_md.data.writer import write_atoms

    with H5Dataset(h5_path) as h5:
        frames = [h5[i] for i in range(min(n, len(h5)))]
    for a in frames:
        e, f = a.get_potential_energy(), a.get_forces()
        a.info["ref_energy"] = e
        a.arrays["ref_forces"] = f
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
    h5_out, xyz = str(folder / "frames.h5"), str(folder / "frames.xyz")
    write_atoms(h5_out, frames)
    ase.io.write(xyz, frames)
    return h5_out, xyz, len(frames), len(frames[0])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT / "datasets" / "ethanol-gfn2_train.h5"))
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up)")
    p.add_argument("--threads", default="default", help="'default' (torch's own) or a number")
    p.add_argument("--mace-python", default=str(PEERS / "mace" / "bin" / "python"))
    p.add_argument("--nequip-python", default=str(PEERS / "nequip" / "bin" / "python"))
    p.add_argument("--only", nargs="*", choices=list(WORKERS), default=list(WORKERS))
    p.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads != "default":
        import torch

        torch.set_num_threads(int(args.threads))
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.input, args.epochs)), flush=True)
        return
    folder = Path(tempfile.mkdtemp(prefix="bench_train_"))
    h5, xyz, n_frames, n_atoms = write_frames(args.data, args.frames, folder)
    print(f"data: {n_frames} frames of {n_atoms} atoms from {args.data}; width {WIDTH}, "
          f"l_max {LMAX}, {LAYERS} layers, cutoff {CUTOFF} A, float32, batch {BATCH}, "
          f"threads {args.threads}, {args.epochs} timed epochs after 1 warm-up", flush=True)
    pythons = {"tfn_md": sys.executable, "tfn_md-eager": sys.executable, "mace": args.mace_python,
               "nequip": args.nequip_python}
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if args.threads != "default":
        env["OMP_NUM_THREADS"] = args.threads
    results = {}
    for name in args.only:
        if not Path(pythons[name]).exists():
            print(f"{name}: skipped, no Python at {pythons[name]} (see --{name}-python)")
            continue
        cmd = [pythons[name], __file__, "--worker", name, "--epochs", str(args.epochs),
               "--threads", args.threads, "--input", h5 if name.startswith("tfn_md") else xyz]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if run.returncode != 0:
            print(f"{name}: failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        timed = sorted(r["epoch_seconds"][1:])
        r["median"] = timed[len(timed) // 2]
        results[name] = r
        print(f"{name:12s} params {r['params']:7d}  warm-up epoch {r['epoch_seconds'][0]:7.2f} s"
              f"  epoch {r['median']:7.2f} s  ({1000 * r['median'] / n_frames:.2f} ms/frame)",
              flush=True)
    if "tfn_md" in results:
        base = results["tfn_md"]["median"]
        print("epoch time relative to tfn_md: " + ", ".join(
            f"{k} {v['median'] / base:.2f}x" for k, v in results.items()))


if __name__ == "__main__":
    main()
