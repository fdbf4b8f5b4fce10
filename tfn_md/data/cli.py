"""``tfn-md data``: import, qm9, sample, info, validate, split.

The main CLI calls ``add_data_parser(subparsers)``; each command sets
``func`` to a handler taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols
from tqdm import tqdm

from tfn_md.atomic import atomic_path, write_text_atomic
from tfn_md.data.format import DatasetError
from tfn_md.data.reader import H5Dataset, validate
from tfn_md.data.writer import DatasetWriter
from tfn_md.keys import ENERGY, NUMBERS, PBC

_FORMATTER = argparse.RawDescriptionHelpFormatter


def _progress(total: int | None, unit: str = "structure") -> tqdm:
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)


def _fail(message: str) -> int:
    print(f"tfn-md data: error: {message}", file=sys.stderr)
    return 1


def _clean_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Report bad input (missing files, invalid datasets, ...) in one line, exit code 1."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (ValueError, OSError, RuntimeError, ImportError) as err:
            if getattr(args, "debug", False):
                raise
            return _fail(" ".join(str(err).split()))

    return wrapped


# ---------------------------------------------------------------- import


@_clean_errors
def _cmd_import(args: argparse.Namespace) -> int:
    from tfn_md.data.sources import read_ase

    out = Path(args.output)
    if out.exists() and not (args.append or args.overwrite):
        return _fail(f"{out} exists; pass --append to add to it or --overwrite to replace it")
    total = 0
    with (
        DatasetWriter(
            out,
            append=not args.overwrite,
            info_keys=args.info_keys,
            array_keys=args.array_keys,
        ) as writer,
        _progress(None) as bar,
    ):
        before = len(writer)
        for path in args.files:
            bar.set_description(Path(path).name)
            frames = read_ase(
                path,
                index=args.index,
                format=args.format,
                energy_key=args.energy_key,
                forces_key=args.forces_key,
                stress_key=args.stress_key,
            )
            total += writer.extend(frames, progress=bar)
        after = len(writer)
    print(f"{out}: {total} structures imported ({before} before, {after} now)")
    return 0


# ---------------------------------------------------------------- qm9


@_clean_errors
def _cmd_qm9(args: argparse.Namespace) -> int:
    from tfn_md.data.sources import QM9_UNITS, iter_qm9

    out = Path(args.output)
    done: set[int] = set()
    if out.exists():
        with H5Dataset(out) as ds:
            if "qm9_index" in ds.fields:
                done = set(ds.column("qm9_index")[ds.mask("qm9_index")].tolist())
    limit = None if args.limit is None else max(0, args.limit - len(done))
    molecules = iter_qm9(
        n_atoms=args.n_atoms,
        max_atoms=args.max_atoms,
        indices=args.indices,
        skip_indices=done,
        limit=limit,
    )
    with DatasetWriter(out, units=QM9_UNITS) as writer, _progress(limit) as bar:
        written = writer.extend(molecules, progress=bar)
        now = len(writer)
    skipped = f", {len(done)} already there" if done else ""
    print(f"{out}: {written} QM9 molecules written{skipped}; {now} structures in the file")
    return 0


# ---------------------------------------------------------------- sample


@_clean_errors
def _cmd_sample(args: argparse.Namespace) -> int:
    from tfn_md.data.sources import molecule_or_file, sample_xtb

    try:
        atoms, name = molecule_or_file(args.molecule, args.structure)
    except KeyError:
        return _fail(f"unknown molecule {args.molecule!r}; names: ase.collections.g2.names")
    total = args.n * len(args.temperature)
    with _progress(total) as bar:
        written = sample_xtb(
            args.output,
            atoms,
            name=name,
            temperatures=args.temperature,
            n=args.n,
            method=args.method,
            interval=args.interval,
            timestep=args.timestep,
            friction=args.friction,
            equilibration=args.equilibration,
            seed=args.seed,
            progress=bar.update,
        )
    print(f"{args.output}: {written} new structures of {name} ({total - written} already there)")
    return 0


# ---------------------------------------------------------------- info


def _stats(values: np.ndarray) -> str:
    return (
        f"min {values.min():.6g}  max {values.max():.6g}  "
        f"mean {values.mean():.6g}  std {values.std():.6g}"
    )


def summary(path: str | os.PathLike) -> str:
    """A human-readable report of a dataset file: sizes, elements, properties, energies."""
    ds = H5Dataset(path)
    with ds:
        n, counts = len(ds), ds.n_atoms
        attrs = ds.attrs
        lines = [
            f"file         {ds.path} ({os.path.getsize(ds.path) / 1e6:.3g} MB)",
            (
                f"format       {attrs['format']} version {attrs['format_version']}, "
                f"units {attrs['energy_unit']}, {attrs['length_unit']}"
            ),
            f"structures   {n}",
        ]
        if n == 0:
            return "\n".join(lines)
        lines.append(
            f"atoms        {ds.n_atoms_total} (per structure min {counts.min()}, "
            f"mean {counts.mean():.3g}, max {counts.max()})"
        )
        lines.append(f"periodic     {int(ds.column(PBC).any(axis=1).sum())} of {n}")
        numbers = ds.column(NUMBERS)
        if numbers.size and (numbers.min() < 0 or numbers.max() >= len(chemical_symbols)):
            raise DatasetError(f"{ds.path}: atomic numbers outside 0..118 in '/atoms/numbers'")
        z_counts = np.bincount(numbers)
        elements = [f"{chemical_symbols[z]} {c}" for z, c in enumerate(z_counts) if c]
        lines.append(f"elements     {', '.join(elements)}")
        lines.append("properties")
        lines.append(
            f"  {'name':<22}{'per':<10}{'origin':<8}{'shape':<10}{'dtype':<9}{'unit':<16}present"
        )
        for name, field in ds.fields.items():
            if not field.optional:
                continue
            present = int(ds.mask(name).sum())
            dtype = "str" if field.dtype.kind == "S" else str(field.dtype)
            per = "atom" if field.per_atom else "structure"
            lines.append(
                f"  {name:<22}{per:<10}{field.origin:<8}{field.shape!s:<10}{dtype:<9}"
                f"{field.unit or '-':<16}{present}/{n}"
            )
        if ENERGY in ds.fields:
            has = ds.mask(ENERGY)
            energy = ds.column(ENERGY)
            finite = has & np.isfinite(energy)
            if finite.any():
                lines.append(f"energy (eV)  {_stats(energy[finite])}")
                lines.append(f"  per atom   {_stats(energy[finite] / counts[finite])}")
            if (has & ~finite).any():
                lines.append(
                    f"WARNING      {int((has & ~finite).sum())} non-finite energies (left out"
                    " above); `tfn-md data validate` names the structures"
                )
    return "\n".join(lines)


@_clean_errors
def _cmd_info(args: argparse.Namespace) -> int:
    print(summary(args.file))
    return 0


# ---------------------------------------------------------------- validate


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        layout = validate(args.file)
    except (DatasetError, FileNotFoundError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"INVALID {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    checked = "checksums verified" if layout.checksums else "no checksums in this file"
    print(
        f"OK {args.file}: {layout.n_structures} structures, {layout.n_atoms_total} atoms,"
        f" format version {layout.attrs['format_version']}, {checked}"
    )
    return 0


# ---------------------------------------------------------------- split


def _amount(text: str) -> float | int:
    """'0.8' (a fraction, has a point) or '800' (a count)."""
    try:
        value: float | int = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise argparse.ArgumentTypeError(f"fraction {text} not in [0, 1]") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"count {text} is negative")
    return value


def split_sizes(n: int, train: float, val: float, test: float) -> list[int]:
    """Counts for the three parts (an int is a count, a float a fraction).

    Fractions summing to 1 use every structure.
    """
    amounts = [train, val, test]
    sizes = [a if isinstance(a, int) else round(a * n) for a in amounts]
    if all(isinstance(a, float) for a in amounts) and abs(sum(amounts) - 1.0) < 1e-9:
        sizes[2] = n - sizes[0] - sizes[1]
    if sum(sizes) > n or min(sizes) < 0:
        raise ValueError(f"split {sizes} needs {sum(sizes)} structures, the file has {n}")
    return sizes


@_clean_errors
def _cmd_split(args: argparse.Namespace) -> int:
    source = Path(args.file)
    prefix = args.output if args.output is not None else str(source.with_suffix(""))
    try:
        ds = H5Dataset(source)
    except (DatasetError, FileNotFoundError) as err:
        return _fail(str(err))
    with ds:
        try:
            sizes = split_sizes(len(ds), args.train, args.val, args.test)
        except ValueError as err:
            return _fail(str(err))
        from tfn_md.data.splits import split_indices

        parts = split_indices(ds, sizes, args.seed, by=args.by, block=args.block)
        extra = [f for f in ds.fields.values() if f.optional]
        for name, indices in parts.items():
            out = Path(f"{prefix}_{name}.h5")
            if indices.size == 0:
                stale = out.exists()
                out.unlink(missing_ok=True)  # an earlier split's part would contradict the JSON
                removed = f"; removed the earlier {out}" if stale else ""
                print(f"{name:<6}0 structures (no file written{removed})")
                continue
            with atomic_path(out) as tmp:
                with (
                    DatasetWriter(tmp, append=False, fields=extra) as writer,
                    _progress(len(indices)) as bar,
                ):
                    bar.set_description(name)
                    writer.extend_arrays((ds.get_arrays(int(i)) for i in indices), progress=bar)
            print(f"{name:<6}{len(indices)} structures -> {out}")
        record = {
            "source": str(source),
            "seed": args.seed,
            "by": args.by,
            **({"block": args.block} if args.block is not None else {}),
            **{name: idx.tolist() for name, idx in parts.items()},
        }
        write_text_atomic(Path(f"{prefix}_split.json"), json.dumps(record, indent=1) + "\n")
    print(f"indices    -> {prefix}_split.json")
    return 0


# ---------------------------------------------------------------- parser


def add_data_parser(subparsers: Any) -> None:
    """Add ``data`` and its commands to the main CLI's subparsers."""
    data = subparsers.add_parser(
        "data",
        help="build, inspect, check and split HDF5 dataset files",
        description="Build, inspect, check and split tfn_md HDF5 dataset files "
        "(layout: docs/dataset-format.md). Energies in eV, lengths in Angstrom.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "import",
        help="import any file ase.io reads (extxyz, traj, ASE db, xyz)",
        description=(
            "Import structures from files ase.io reads. Labels come from the calculator\n"
            "results ASE attaches (energy, forces, stress of extxyz, traj, db) or from the\n"
            "named info/arrays keys. Other info and arrays values are kept as extras."
        ),
        epilog="example:\n  tfn-md data import train.extxyz -o train.h5 "
        "--energy-key REF_energy --forces-key REF_forces",
        formatter_class=_FORMATTER,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="input files")
    p.add_argument("-o", "--output", required=True, help="output dataset file (.h5)")
    p.add_argument("--format", help="ase.io format name, if not guessed from the file name")
    p.add_argument("--index", default=":", help="frames to read, ase.io syntax (default ':')")
    p.add_argument("--energy-key", help="atoms.info key of the energy (eV)")
    p.add_argument("--forces-key", help="atoms.arrays key of the forces (eV/A)")
    p.add_argument("--stress-key", help="atoms.info key of the stress (eV/A^3, [6] or [3,3])")
    p.add_argument("--info-keys", nargs="*", help="info keys to keep (default: all numeric/str)")
    p.add_argument("--array-keys", nargs="*", help="per-atom arrays to keep (default: all)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to an existing output")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_import)

    p = commands.add_parser(
        "qm9",
        help="import QM9 from the qm9pack package",
        description=(
            "Import QM9 molecules (qm9pack's CSVs) in QM9 index order.\n"
            "energy = U0 in eV; info holds U, H, G, zpve, homo, lumo, gap (eV),\n"
            "dipole_moment (e*A), polarizability and polarizability_tensor (A^3), r2 (A^2),\n"
            "heat_capacity, rotational_constants (GHz), smiles, qm9_index; arrays hold\n"
            "mulliken_charges (e). Re-running on the same output skips the molecules\n"
            "already there."
        ),
        epilog="example:\n  tfn-md data qm9 -o qm9-small.h5 --max-atoms 12 --limit 1000",
        formatter_class=_FORMATTER,
    )
    p.add_argument("-o", "--output", required=True, help="output dataset file (.h5)")
    p.add_argument("--max-atoms", type=int, help="only molecules with at most this many atoms")
    p.add_argument("--n-atoms", type=int, nargs="+", help="only molecules with these atom counts")
    p.add_argument("--indices", type=int, nargs="+", help="only these QM9 indices (1-based)")
    p.add_argument("--limit", type=int, help="stop once the file holds this many molecules")
    p.set_defaults(func=_cmd_qm9)

    p = commands.add_parser(
        "sample",
        help="sample structures by Langevin MD with GFN2-xTB (tblite)",
        description=(
            "Run Langevin MD with tblite and record every INTERVAL-th step: energy, forces,\n"
            "dipole, Mulliken charges (stress if periodic) from a fresh calculation, and\n"
            "momenta. N structures are written PER TEMPERATURE, each committed as it is\n"
            "written, so a killed run keeps them. Re-running with the same output and\n"
            "settings resumes every temperature after its last stored frame. The same\n"
            "seed and settings give the same data (bitwise with OMP_NUM_THREADS=1)."
        ),
        epilog="example:\n  tfn-md data sample --molecule CH3CH2OH --temperature 300 600 "
        "--n 500 -o ethanol.h5",
        formatter_class=_FORMATTER,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--molecule", help="ase.build.molecule name, e.g. H2O, CH3CH2OH")
    source.add_argument("--structure", help="structure file (its last frame)")
    p.add_argument("--method", default="GFN2-xTB", help="tblite method (default GFN2-xTB)")
    p.add_argument(
        "--temperature", type=float, nargs="+", required=True, metavar="K", help="temperatures, K"
    )
    p.add_argument("--n", type=int, required=True, help="structures per temperature")
    p.add_argument("-o", "--output", required=True, help="output dataset file (.h5)")
    p.add_argument("--interval", type=int, default=10, help="MD steps between records (10)")
    p.add_argument("--timestep", type=float, default=0.5, help="time step in fs (0.5)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (0.01)")
    p.add_argument(
        "--equilibration", type=int, default=100, help="MD steps before the first record (100)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.set_defaults(func=_cmd_sample)

    p = commands.add_parser(
        "info",
        help="summarise a dataset file",
        description=(
            "Print counts, elements, properties (with units and how many structures\n"
            "have each) and energy statistics."
        ),
        epilog="example:\n  tfn-md data info qm9.h5",
        formatter_class=_FORMATTER,
    )
    p.add_argument("file", help="dataset file")
    p.set_defaults(func=_cmd_info)

    p = commands.add_parser(
        "validate",
        help="check a dataset file completely (exit code 0 or 1)",
        description=(
            "Check the layout and read every array: offsets, atomic numbers, finite\n"
            "positions and cells, missing-value masks. Exit code 0 if valid, 1 with the\n"
            "reason otherwise."
        ),
        epilog="example:\n  tfn-md data validate qm9.h5 && echo fine",
        formatter_class=_FORMATTER,
    )
    p.add_argument("file", help="dataset file")
    p.set_defaults(func=_cmd_validate)

    p = commands.add_parser(
        "split",
        help="random train/val/test split into new files",
        description=(
            "Split a dataset file at random (seeded) into PREFIX_train.h5, PREFIX_val.h5\n"
            "and PREFIX_test.h5 (each written to a temporary file, then renamed) and\n"
            "PREFIX_split.json with the source indices. Amounts with a decimal point are\n"
            "fractions, integers are counts; fractions summing to 1 use every structure.\n"
            "A part of size 0 writes no file.\n\n"
            "--by random draws frames at random: on MD data, frames a few fs apart are\n"
            "near-duplicates and such a test set flatters the model. --by trajectory puts\n"
            "whole trajectories (md_trajectory, or md_run + md_temperature, as written by\n"
            "`tfn-md data sample`) into one part; --by block cuts each trajectory in time\n"
            "order into blocks of --block frames and puts whole blocks into one part. Both\n"
            "meet the asked sizes up to one trajectory or block."
        ),
        epilog="example:\n  tfn-md data split qm9.h5 --train 0.8 --val 0.1 --test 0.1 "
        "--seed 1 -o qm9\n  tfn-md data split ethanol.h5 --by block --block 50 -o ethanol",
        formatter_class=_FORMATTER,
    )
    p.add_argument("file", help="dataset file to split")
    p.add_argument("--train", type=_amount, default=0.8, help="fraction or count (0.8)")
    p.add_argument("--val", type=_amount, default=0.1, help="fraction or count (0.1)")
    p.add_argument("--test", type=_amount, default=0.1, help="fraction or count (0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("-o", "--output", help="output prefix (default: FILE without .h5)")
    p.add_argument("--by", choices=("random", "trajectory", "block"), default="random",
                   help="unit of the split: frames at random (default), whole trajectories, "
                   "or contiguous time blocks of each trajectory")
    p.add_argument("--block", type=int, default=None,
                   help="frames per block for --by block (default: a tenth of the shortest "
                   "trajectory)")
    p.set_defaults(func=_cmd_split)
