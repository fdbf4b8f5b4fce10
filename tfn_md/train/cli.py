"""``tfn-md train CONFIG`` and ``tfn-md eval CHECKPOINT DATA.h5``."""

import argparse
import json
import os
from pathlib import Path

__all__ = ["add_train_parsers"]


def add_train_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a potential from a TOML config",
        description="Train a TFN potential on HDF5 dataset files. Writes best.pt, last.pt "
        "(with optimizer state), metrics.csv and plots into [run] out. Run under "
        "`torchrun --nproc_per_node N` for data-parallel training.")
    p.add_argument("config", type=Path, help="TOML file (see tfn_md.train.config)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.set_defaults(func=_train)

    e = subparsers.add_parser(
        "eval", help="errors of a potential on a dataset",
        description="Energy (per atom and per structure), force and stress MAE/RMSE of a "
        "checkpoint on a dataset file, evaluated as TFNCalculator runs it (tabulated radial "
        "functions; --exact for the MLPs); per temperature when the file records several "
        "(md_temperature); for models with energy heads, how well the per-frame force spread "
        "ranks the per-frame force error (Spearman) and, with --threshold, the frames it flags.")
    e.add_argument("checkpoint", help="checkpoint path or shipped potential name")
    e.add_argument("data", type=Path, help="dataset HDF5 file")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--exact", action="store_true",
                   help="evaluate the radial MLPs, not the tabulated radial functions that "
                   "TFNCalculator uses by default")
    e.add_argument("--per-temperature", action="store_true",
                   help="also report per temperature when the file holds only one (it is "
                   "reported whenever the file's md_temperature takes several values)")
    e.add_argument("--threshold", type=float, default=None, metavar="EV_PER_A",
                   help="models with energy heads: count the frames whose force spread "
                   "(RMS over atoms, eV/A) exceeds this and compare their mean force error "
                   "with the rest's")
    e.add_argument("--energy-threshold", type=float, default=None, metavar="EV",
                   help="the same for the energy uncertainty (eV) and the energy error")
    e.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from .config import load_config
    from .trainer import Trainer

    cfg = load_config(args.config)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if cfg.run.device.startswith("cuda") else "gloo")
    try:
        result = Trainer(cfg, resume=args.resume).fit()
    finally:
        if distributed:
            dist.destroy_process_group()
    print(json.dumps(result, indent=1, default=float))
    return 0


def data_fields(path) -> set:
    """The property names of a dataset file."""
    from ..data import H5Dataset

    with H5Dataset(path) as h5:
        return set(h5.fields)


def _eval(args: argparse.Namespace) -> int:
    import torch

    from .. import keys
    from ..checkpoint import load_potential
    from ..data.loader import GraphDataset, check_labels, collate_batch
    from .trainer import check_species, evaluate_model

    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} is not allowed: an integer >= 1")
    model = load_potential(args.checkpoint, device=args.device)
    if not args.exact:
        model.tabulate()  # as TFNCalculator runs it
    # a dipole head is evaluated against the file's dipole and charges, where it has them
    dipole = [keys.DIPOLE] if model.config.dipole and keys.DIPOLE in data_fields(args.data) else []
    charges = model.config.dipole and keys.CHARGES in data_fields(args.data)
    data = GraphDataset(args.data, model.cutoff, vector_keys=dipole, charges=charges)
    if len(data) == 0:
        raise ValueError(f"{args.data} holds no structures to evaluate on")
    check_species(model.species, data.h5, key=f"the species of {args.checkpoint}")
    labels = [n for n in (keys.ENERGY, keys.FORCES, keys.STRESS) if n in data.h5.fields]
    if not labels:
        raise ValueError(f"{args.data} has no energy, forces or stress labels to evaluate against")
    check_labels(data.h5, data.indices, labels)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size,
                                         collate_fn=collate_batch)
    metrics = evaluate_model(model, loader, args.device, vectors=dipole)
    metrics["n_structures"] = len(data)
    groups = temperature_groups(data.h5, data.indices)
    if len(groups) > 1 or (groups and args.per_temperature):
        metrics["per_temperature"] = {}
        for temperature, rows in groups.items():
            part = GraphDataset(args.data, model.cutoff, indices=rows, vector_keys=dipole,
                                charges=charges)
            part_loader = torch.utils.data.DataLoader(part, batch_size=args.batch_size,
                                                      collate_fn=collate_batch)
            m = evaluate_model(model, part_loader, args.device, vectors=dipole)
            m["n_structures"] = len(rows)
            metrics["per_temperature"][f"{temperature:g}"] = m
    if model.config.energy_heads > 1 and keys.FORCES in data.h5.fields:
        from .uncertainty import calibration_summary, frame_spreads_and_errors

        frames = frame_spreads_and_errors(model, data, args.batch_size)
        position = {int(k): p for p, k in enumerate(data.indices)}
        thresholds = {"threshold": args.threshold, "energy_threshold": args.energy_threshold}
        metrics["uncertainty"] = {"all": calibration_summary(frames, **thresholds)}
        for temperature, rows in groups.items() if len(groups) > 1 else ():
            sub = {k: v[[position[int(r)] for r in rows]] for k, v in frames.items()}
            metrics["uncertainty"][f"{temperature:g}"] = calibration_summary(sub, **thresholds)
    if args.json:
        print(json.dumps(metrics, indent=1))
        return 0
    units = {"energy_per_atom": "meV/atom", "energy": "meV", "forces": "meV/A",
             "stress": "meV/A^3", "dipole": "me*A", "charges": "me"}
    print(f"{args.checkpoint} on {args.data} ({len(data)} structures)")
    print("| quantity | MAE | RMSE | unit |\n|---|---|---|---|")
    for name, unit in units.items():
        if f"{name}_mae" in metrics:
            print(f"| {name} | {1000 * metrics[f'{name}_mae']:.3f} | "
                  f"{1000 * metrics[f'{name}_rmse']:.3f} | {unit} |")
    if "dipole_mae" in metrics:  # per component; 1 e*A = 4.803 D
        from ase import units as ase_units

        debye = 1.0 / ase_units.Debye
        print(f"| dipole (Debye) | {metrics['dipole_mae'] * debye:.4f} | "
              f"{metrics['dipole_rmse'] * debye:.4f} | D |")
    if "per_temperature" in metrics:
        print("\nper temperature (md_temperature), MAE (RMSE):")
        shown = [(n, u) for n, u in units.items() if f"{n}_mae" in metrics]
        print("| T (K) | structures | " + " | ".join(f"{n} ({u})" for n, u in shown) + " |")
        print("|---|---|" + "---|" * len(shown))
        for temperature, m in metrics["per_temperature"].items():
            cells = [f"{1000 * m[f'{n}_mae']:.3f} ({1000 * m[f'{n}_rmse']:.3f})"
                     if f"{n}_mae" in m else "-" for n, _ in shown]
            print(f"| {temperature} | {m['n_structures']} | " + " | ".join(cells) + " |")
    if "uncertainty" in metrics:
        print(f"\nuncertainty ({model.config.energy_heads} energy heads): per-frame force "
              "spread (RMS over atoms) against per-frame force error (RMS over atoms)")
        _ranking_table(metrics["uncertainty"], None, args.threshold, "meV/A")
        print("\nenergy uncertainty (energy_spread) against the absolute energy error")
        _ranking_table(metrics["uncertainty"], "energy", args.energy_threshold, "meV")
    return 0


def _ranking_table(rows: dict, part: str | None, threshold: float | None, unit: str) -> None:
    """A Markdown table of :func:`calibration_summary` results (``part``: None for the
    force spread, "energy" for the energy uncertainty)."""
    flag = threshold is not None
    print("| frames | Spearman | mean uncertainty (" + unit + ") | mean error (" + unit + ") |"
          + (f" flagged (> {1000 * threshold:g} {unit}) | their mean error / the rest's |"
             if flag else ""))
    print("|---|---|---|---|" + ("---|---|" if flag else ""))
    for name, u in rows.items():
        u = u[part] if part else u
        row = (f"| {name} ({u['n_frames']}) | {u['spearman']:.3f} | "
               f"{1000 * u['mean_spread']:.2f} | {1000 * u['mean_error']:.2f} |")
        if flag:
            row += f" {u['flagged']} | {u.get('error_ratio', float('nan')):.2f} |"
        print(row)


def temperature_groups(h5, indices) -> dict:
    """{temperature (K): the rows of ``indices`` sampled at it}, from the ``md_temperature``
    info of the file (``tfn-md data sample``, ``tfn-md learn``); empty if it has none."""
    import numpy as np

    if "md_temperature" not in h5.fields:
        return {}
    indices = np.asarray(indices)
    temps, has = h5.column("md_temperature")[indices], h5.mask("md_temperature")[indices]
    return {float(t): indices[has & (temps == t)] for t in np.unique(temps[has])}
