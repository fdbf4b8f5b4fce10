"""Importers: any file ASE reads, QM9 from ``qm9pack``, and GFN2-xTB Langevin sampling.

Each importer yields ``ase.Atoms`` with energies, forces, ... attached as a
``SinglePointCalculator`` (eV, Angstrom) so ``write_atoms`` stores them; the
sampler writes through a ``DatasetWriter`` itself, one commit per structure.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import all_properties
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from tfn_md.data.format import PathLike
from tfn_md.data.reader import H5Dataset
from tfn_md.data.writer import DatasetWriter
from tfn_md.keys import CHARGES, DIPOLE, ENERGY, FORCES, STRESS

# ---------------------------------------------------------------- ASE files


def _stress_voigt(value: Any) -> np.ndarray:
    """[6] Voigt (xx, yy, zz, yz, xz, xy) from [6], [9] or [3, 3]."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (6,):
        return arr
    if arr.size == 9:
        return full_3x3_to_voigt_6_stress(arr.reshape(3, 3))
    raise ValueError(f"stress of shape {arr.shape} is neither [6] nor [3, 3]")


def attach_results(
    atoms: Atoms,
    *,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> Atoms:
    """Move labels stored under other names into a ``SinglePointCalculator``.

    ``energy_key`` / ``stress_key`` are looked up in ``atoms.info``, then in
    the calculator results; ``forces_key`` in ``atoms.arrays``, then the
    results. Found values are removed from info/arrays and stored as
    ``energy`` (eV), ``forces`` [n, 3] (eV/A), ``stress`` [6] (eV/A^3). A
    structure lacking a key simply has no such value (a missing value in the
    dataset file). Results that are not ASE properties are dropped.
    """
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    for key, target, where in (
        (energy_key, ENERGY, atoms.info),
        (forces_key, FORCES, atoms.arrays),
        (stress_key, STRESS, atoms.info),
    ):
        if key is None:
            continue
        if key in where and key not in ("numbers", "positions"):
            value = where.pop(key)
        elif key in results:
            value = results.pop(key)
        else:
            results.pop(target, None)  # the named label is missing: no value
            continue
        if target == ENERGY:
            value = float(value)
        elif target == STRESS:
            value = _stress_voigt(value)
        else:
            value = np.asarray(value, dtype=np.float64).reshape(len(atoms), 3)
        results[target] = value
    if STRESS in results:
        results[STRESS] = _stress_voigt(results[STRESS])
    results = {k: v for k, v in results.items() if k in all_properties and v is not None}
    atoms.calc = SinglePointCalculator(atoms, **results) if results else None
    return atoms


def read_ase(
    path: PathLike,
    *,
    index: str = ":",
    format: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> Iterator[Atoms]:
    """Yield the structures of any file ``ase.io`` reads (extxyz, traj, db, ...).

    Labels come from the calculator results ASE attaches, or from the named
    info/arrays keys (see ``attach_results``); e.g. MACE-style files use
    ``energy_key="REF_energy", forces_key="REF_forces"``.
    """
    for atoms in ase.io.iread(path, index=index, format=format):
        yield attach_results(
            atoms, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key
        )


# ---------------------------------------------------------------- QM9

QM9_PARTS: Final[tuple[str, ...]] = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9_POLARIZABILITY: Final[str] = "qm9_polarizability.csv"

#: Units of the QM9 properties as stored (converted from Hartree, Bohr, Debye).
QM9_UNITS: Final[dict[str, str]] = {
    "qm9_index": "",
    "smiles": "",
    "U": "eV",
    "H": "eV",
    "G": "eV",
    "zpve": "eV",
    "homo": "eV",
    "lumo": "eV",
    "gap": "eV",
    "dipole_moment": "e*Angstrom",
    "polarizability": "Angstrom^3",
    "polarizability_tensor": "Angstrom^3",
    "r2": "Angstrom^2",
    "heat_capacity": "cal/(mol*K)",
    "rotational_constants": "GHz",
    "mulliken_charges": "e",
}

# CSV column -> (name in atoms.info, factor to the stored unit)
_QM9_SCALARS: Final[dict[str, tuple[str, float]]] = {
    "InternalEnergy_298K_au": ("U", units.Hartree),
    "Enthalphy_298K_au": ("H", units.Hartree),
    "GibbsFreeEnergy_298K_au": ("G", units.Hartree),
    "ZPVE_au": ("zpve", units.Hartree),
    "HOMO_au": ("homo", units.Hartree),
    "LUMO_au": ("lumo", units.Hartree),
    "HOMO_LUMO_gap_au": ("gap", units.Hartree),
    "Dipole_debye": ("dipole_moment", units.Debye),
    "Polarizability_bohr3": ("polarizability", units.Bohr**3),
    "R2_bohr2": ("r2", units.Bohr**2),
    "Heatcapacity_Cv_cal_mol_K": ("heat_capacity", 1.0),
}


def qm9_files() -> tuple[list[Path], Path]:
    """Paths of qm9pack's three CSV parts and its polarizability CSV.

    Found through the installed distribution's file list (``import qm9pack``
    needs the removed ``pkg_resources``).
    """
    try:
        dist = importlib.metadata.distribution("qm9pack")
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError("QM9 needs the qm9pack package: pip install qm9pack") from None
    found = {Path(str(f)).name: Path(str(dist.locate_file(f))) for f in dist.files or ()}
    missing = [name for name in (*QM9_PARTS, QM9_POLARIZABILITY) if name not in found]
    if missing:
        raise FileNotFoundError(f"qm9pack is installed without its data files {missing}")
    return [found[name] for name in QM9_PARTS], found[QM9_POLARIZABILITY]


def _floats(text: str) -> np.ndarray:
    """Numbers of a bracketed list like '[[1.0,2.0],[3,4]]' (Mathematica '*^' too)."""
    cleaned = text.replace("[", " ").replace("]", " ").replace("*^", "e")
    return np.array([float(x) for x in cleaned.split(",") if x.strip()], dtype=np.float64)


def _qm9_rows() -> Iterator[tuple[dict[str, str], list[str]]]:
    """(row by column name, polarizability row) in QM9 index order."""
    parts, polar_path = qm9_files()
    with open(polar_path, newline="") as polar_file:
        polar = csv.reader(polar_file)
        next(polar)
        for part in parts:
            with open(part, newline="") as fh:
                reader = csv.reader(fh)
                header = next(reader)
                for values in reader:
                    row = dict(zip(header, values, strict=True))
                    tensor = next(polar)
                    if tensor[0] != row["XYZ_file"]:
                        raise ValueError(f"qm9pack CSVs out of step at {row['XYZ_file']}")
                    yield row, tensor


def _qm9_atoms(row: dict[str, str], tensor: list[str]) -> Atoms:
    symbols = [s.strip().strip("'\"") for s in row["Elements"].strip("[]").split(",")]
    positions = _floats(row["XYZ_Ang"]).reshape(-1, 3)  # [n, 3] Angstrom
    atoms = Atoms(symbols=symbols, positions=positions)
    if len(atoms) != int(row["N_atoms"]):
        raise ValueError(f"QM9 {row['Index']}: {len(atoms)} atoms, N_atoms says {row['N_atoms']}")
    atoms.info["qm9_index"] = int(row["Index"])
    atoms.info["smiles"] = row["SMILES"]
    for column, (name, factor) in _QM9_SCALARS.items():
        atoms.info[name] = float(row[column]) * factor
    atoms.info["rotational_constants"] = np.array(
        [float(row[c]) for c in ("RotA_GHz", "RotB_GHz", "RotC_GHz")]
    )  # [3] GHz
    xx, xy, yy, xz, yz, zz = (float(v) * units.Bohr**3 for v in tensor[1:7])
    atoms.info["polarizability_tensor"] = np.array(
        [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]
    )  # [3, 3] Angstrom^3
    atoms.new_array("mulliken_charges", _floats(row["Mulliken_pop"]))  # [n] e
    energy = float(row["InternalEnergy_0K_au"]) * units.Hartree  # U0, eV
    atoms.calc = SinglePointCalculator(atoms, energy=energy)
    return atoms


def iter_qm9(
    *,
    n_atoms: int | Collection[int] | None = None,
    max_atoms: int | None = None,
    indices: Iterable[int] | None = None,
    skip_indices: Collection[int] = (),
    limit: int | None = None,
) -> Iterator[Atoms]:
    """QM9 molecules in index order (``qm9_index`` 1..133885, 130831 present).

    Filters: exact atom count(s) ``n_atoms``, ``max_atoms``, a set of QM9
    ``indices``; ``skip_indices`` are left out (resuming); at most ``limit``
    molecules. The energy is U0 (internal energy at 0 K) in eV; info holds
    U, H, G (298 K), zpve, homo, lumo, gap (eV), dipole_moment (e*A, a norm),
    polarizability (A^3) and its [3, 3] tensor (frame of the source CSV),
    r2 (A^2), heat_capacity (cal/mol/K), rotational_constants [3] (GHz),
    smiles; arrays hold mulliken_charges [n] (e). Harmonic frequencies
    (3n - 6 per molecule) are not imported.
    """
    wanted_counts = {n_atoms} if isinstance(n_atoms, int) else n_atoms
    wanted = None if indices is None else set(indices)
    last = max(wanted) if wanted else None
    count = 0
    if limit is not None and limit <= 0:
        return
    for row, tensor in _qm9_rows():
        index, size = int(row["Index"]), int(row["N_atoms"])
        if last is not None and index > last:
            return
        if (
            (wanted_counts is not None and size not in wanted_counts)
            or (max_atoms is not None and size > max_atoms)
            or (wanted is not None and index not in wanted)
            or index in skip_indices
        ):
            continue
        yield _qm9_atoms(row, tensor)
        count += 1
        if limit is not None and count >= limit:
            return


def qm9_atoms(**filters: Any) -> list[Atoms]:
    """``list(iter_qm9(**filters))``: e.g. ``qm9_atoms(max_atoms=5, limit=10)``."""
    return list(iter_qm9(**filters))


# ---------------------------------------------------------------- GFN2-xTB sampling

#: Calculator results recorded per sampled structure (stress only if periodic).
XTB_PROPERTIES: Final[tuple[str, ...]] = (ENERGY, FORCES, DIPOLE, CHARGES, STRESS)
MD_RUN: Final[str] = "md_run"  # JSON of the run settings, identifies a run for resuming
MD_TEMPERATURE: Final[str] = "md_temperature"  # K
MD_FRAME: Final[str] = "md_frame"  # 0, 1, ... within (run, temperature)
MD_TRAJECTORY: Final[str] = "md_trajectory"  # one id per (run, temperature): see trajectory_id
MD_UNITS: Final[dict[str, str]] = {MD_TEMPERATURE: "K"}


def xtb_calculator(method: str = "GFN2-xTB") -> Any:
    """A fresh, silent tblite calculator (``tblite.ase.TBLite``)."""
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise ModuleNotFoundError("xTB sampling needs tblite: pip install tblite") from None
    return TBLite(method=method, verbosity=0)


def reference_factory(method: str = "", calculator: str = "", kwargs: dict | None = None
                      ) -> Callable[[str], Any]:
    """A function returning a fresh calculator (it takes the method name, as
    :func:`tfn_md.data.sources.sample_xtb`'s ``calculator`` does). The class is imported
    now, so a misspelt name is an error before any work."""
    kwargs = dict(kwargs or {})
    if method:
        xtb_calculator(method)  # tblite present?
        return xtb_calculator
    module_name, _, class_name = calculator.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"reference.calculator = {calculator!r}: cannot import module "
                         f"{module_name!r} ({err})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"reference.calculator = {calculator!r}: module {module_name!r} has "
                         f"no {class_name!r}")
    cls(**kwargs)  # the keyword arguments are accepted?
    return lambda _method=None: cls(**kwargs)


def _thermalize(atoms: Atoms, temperature: float, rng: np.random.Generator) -> None:
    from ase.md import velocitydistribution as vd

    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29
        vd.thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    else:  # pragma: no cover
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    vd.Stationary(atoms)
    vd.ZeroRotation(atoms)


def _langevin(
    atoms: Atoms, steps: int, temperature: float, timestep: float, friction: float, rng: Any
) -> None:
    from ase.md.langevin import Langevin

    if steps > 0:
        dyn = Langevin(
            atoms,
            timestep=timestep * units.fs,
            temperature_K=temperature,
            friction=friction / units.fs,
            fixcm=False,
            rng=rng,
        )
        dyn.run(steps)


def trajectory_id(run: str, temperature: float) -> str:
    """The id of the trajectory of run ``run`` (JSON of its settings) at ``temperature`` K:
    ``"<source>/seed<seed>/<T>K/<hash>"``, the hash (8 hex digits of SHA-256) covering
    every setting, so two runs that differ in any setting never share an id."""
    settings = json.loads(run)
    digest = hashlib.sha256(f"{run}|{float(temperature)!r}".encode()).hexdigest()[:8]
    return f"{settings.get('source', '?')}/seed{settings.get('seed', '?')}/{temperature:g}K/{digest}"


def _rng(seed: int, temperature: float, *stream: int) -> np.random.Generator:
    """Independent stream per (seed, temperature, purpose[, frame])."""
    return np.random.default_rng(np.random.SeedSequence([seed, round(temperature * 1000), *stream]))


def _done_frames(path: Path, run: str, temperatures: Sequence[float]) -> dict[float, Atoms]:
    """Last stored frame of each temperature of this run (empty if none)."""
    if not path.exists():
        return {}
    with H5Dataset(path) as ds:
        if MD_RUN not in ds.fields or len(ds) == 0:
            return {}
        runs = ds.column(MD_RUN)
        temps, frames = ds.column(MD_TEMPERATURE), ds.column(MD_FRAME)
        last: dict[float, Atoms] = {}
        for t in temperatures:
            rows = np.flatnonzero((runs == run.encode()) & (temps == t))
            if rows.size == 0:
                continue
            if not np.array_equal(frames[rows], np.arange(rows.size)):
                raise ValueError(f"{path}: frames of the run at {t} K are not 0..{rows.size - 1}")
            last[t] = ds[int(rows[-1])]
    return last


def sample_xtb(
    output: PathLike,
    atoms: Atoms,
    *,
    name: str,
    temperatures: Sequence[float],
    n: int,
    method: str = "GFN2-xTB",
    interval: int = 10,
    timestep: float = 0.5,
    friction: float = 0.01,
    equilibration: int = 100,
    seed: int = 0,
    progress: Callable[[int], Any] | None = None,
    calculator: Callable[[str], Any] = xtb_calculator,
) -> int:
    """Langevin MD with tblite; write ``n`` structures per temperature to ``output``.

    For each temperature T (K): momenta from a Maxwell-Boltzmann distribution,
    ``equilibration`` steps, then frame 0 is recorded, and frame j >= 1 after
    ``interval`` more steps of ``timestep`` fs (friction in 1/fs). Each frame
    stores energy (eV), forces [n, 3] (eV/A), dipole [3] (e*A), Mulliken
    charges [n] (e), stress [6] (eV/A^3, periodic only), momenta [n, 3] and
    info ``md_run`` (JSON of the settings), ``md_temperature``, ``md_frame`` and
    ``md_trajectory`` (:func:`trajectory_id`, for splits by trajectory). The labels come from a fresh calculator at the stored geometry.

    Random streams derive from (seed, T, frame): the same settings give the
    same data, and re-running on the same ``output`` resumes each temperature
    after its last stored frame (from its stored positions and momenta),
    producing what an uninterrupted run would. Returns the frames written.
    """
    path = Path(output)
    if n < 0 or interval < 1 or equilibration < 0 or timestep <= 0:
        raise ValueError("need n >= 0, interval >= 1, equilibration >= 0, timestep > 0")
    settings = {
        "source": name,
        "method": method,
        "seed": int(seed),
        "interval": int(interval),
        "timestep_fs": float(timestep),
        "friction_per_fs": float(friction),
        "equilibration": int(equilibration),
    }
    run = json.dumps(settings, sort_keys=True)
    temperatures = list(dict.fromkeys(float(t) for t in temperatures))
    resume = _done_frames(path, run, temperatures)
    for t, last in resume.items():
        if not np.array_equal(last.numbers, atoms.numbers):
            raise ValueError(f"{path}: the stored run {name!r} at {t} K has other atoms")
    written = 0
    with DatasetWriter(path, units=MD_UNITS) as writer:
        for temperature in temperatures:
            last = resume.get(temperature)
            start = 0 if last is None else int(last.info[MD_FRAME]) + 1
            if progress is not None:
                progress(min(start, n))
            if start >= n:
                continue
            if last is None:
                state = atoms.copy()
                state.info, state.calc = {}, None
                _thermalize(state, temperature, _rng(seed, temperature, 1))
                state.calc = calculator(method)
                _langevin(
                    state,
                    equilibration,
                    temperature,
                    timestep,
                    friction,
                    _rng(seed, temperature, 2),
                )
            else:  # the stored state, and a fresh calculator as the run had there
                state = last.copy()
                state.info, state.calc = {}, calculator(method)
            for frame in range(start, n):
                if frame > 0:
                    rng = _rng(seed, temperature, 0, frame)
                    _langevin(state, interval, temperature, timestep, friction, rng)
                state.calc = calculator(method)  # fresh: labels independent of history
                state.get_potential_energy()
                results = {
                    k: state.calc.results[k] for k in XTB_PROPERTIES if k in state.calc.results
                }
                record = state.copy()
                record.info = {MD_RUN: run, MD_TEMPERATURE: temperature, MD_FRAME: frame,
                               MD_TRAJECTORY: trajectory_id(run, temperature)}
                record.calc = SinglePointCalculator(record, **results)
                writer.append(record)
                written += 1
                if progress is not None:
                    progress(1)
    return written


def molecule_or_file(
    molecule: str | None = None, structure: PathLike | None = None
) -> tuple[Atoms, str]:
    """``ase.build.molecule(molecule)`` or the last frame of ``structure``, with a name."""
    if (molecule is None) == (structure is None):
        raise ValueError("give exactly one of a molecule name and a structure file")
    if molecule is not None:
        from ase.build import molecule as build

        try:
            return build(molecule), molecule
        except KeyError:
            raise ValueError(f"unknown molecule {molecule!r}: ase.build.molecule knows names "
                             "such as CH3CH2OH, H2O, CH3CH2NH2 (ase.collections.g2.names); or "
                             "give a structure file") from None
    path = Path(os.fspath(structure))
    return ase.io.read(path), path.name
