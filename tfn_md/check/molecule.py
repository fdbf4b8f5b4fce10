"""Physical properties of a molecule from any ASE calculator: the other half of a
potential's report card (:mod:`tfn_md.check`), computed the same way for the potential and
for its reference.

Each calculator relaxes the molecule itself (BFGS, largest force below ``FMAX``); then

* ``rmsd`` (A): RMSD between the two relaxed geometries after the best rotation and
  translation (Kabsch) - a comparison, reported by :func:`geometry_rmsd`;
* ``nu_<k>`` (cm^-1): the 3N-6 harmonic frequencies (3N-5 for a linear molecule) in
  ascending order, from central finite differences of the forces (:mod:`ase.vibrations`,
  displacements of 0.01 A) at the calculator's own minimum;
* ``torsion_<i>-<j>`` (meV): the barrier (highest minus lowest energy) of a rigid scan
  of each rotatable bond i-j (a single bond between two atoms that both have other
  neighbours, outside any ring) in steps of 15 degrees, rotating the smaller side;
* ``stretch_<A>-<B>_<f>`` (eV): the energy of the first bond of each element pair A-B
  stretched rigidly to f = 1.3, 1.6 and 3 times its length (the smaller side moved),
  above the minimum, from a scan of f = 0.8 to 1.6 in steps of 0.05, then 1.8, 2, 2.5
  and 3: the strained bond, where a false barrier sits if there is one, and the
  dissociation plateau (a potential that never saw a bond break can put it at a
  fraction of the reference's, README). Bonds are pairs closer than 1.3 times the sum
  of their covalent radii at the reference's minimum; atoms are numbered from 0 as in
  the input. A point where the calculator fails (an SCF that does not converge far
  out) is NaN.
* ``hop_<X>H><Y>_1.1`` (eV): a hydrogen bonded to an X turned about it toward a Y bonded
  to the same X (its bond length kept, nothing else moved: the path of a 1,2-shift)
  until |H - Y| is 1.1 times the sum of their covalent radii, above the minimum, from a
  scan of 2.0 down to 1.0 (the first such H of each X, Y pair); a potential far below
  the reference there has a false well hot MD can fall into.
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.data import covalent_radii
from ase.optimize import BFGS
from ase.vibrations import Vibrations

from ..bonds import bonds, hops, smaller_side, turned_toward

__all__ = ["FMAX", "MoleculeCard", "bonds", "compare_molecule", "contact_scans", "describe",
           "geometry_rmsd", "hop_scans", "molecule_properties", "relaxed", "stretch_scans"]

FMAX = 0.001  # eV/A
TORSION_STEP = 15  # degrees
STRETCH = (1.3, 1.6, 3.0)  # the factors reported
STRETCH_SCAN = [round(0.8 + 0.05 * k, 2) for k in range(17)] + [1.8, 2.0, 2.5, 3.0]
HOP = 1.1  # the factor reported
HOP_SCAN = [2.0, 1.8, 1.6, 1.4, 1.3, 1.2, 1.1, 1.0]  # |H - Y| / (r_H + r_Y)
CM1 = units.invcm  # eV per cm^-1


def describe(name: str) -> tuple[str, str]:
    """(description, unit) of a property name of :func:`molecule_properties`."""
    if name == "rmsd":
        return "relaxed geometry RMSD", "A"
    if name.startswith("nu_"):
        return f"harmonic frequency {name[3:]}", "cm^-1"
    if name.startswith("torsion_"):
        return f"rigid torsion barrier {name[8:]}", "meV"
    kind, pair, factor = name.split("_")
    if kind == "hop":
        x, y = pair.split(">")
        return f"H on {x[:-1]} turned toward {y}, {factor}x covalent radii", "eV"
    return f"bond {pair} stretched to {factor}x", "eV"


def relaxed(atoms: Atoms, calc) -> Atoms:
    """A copy of ``atoms`` relaxed with ``calc`` (attached)."""
    atoms = atoms.copy()
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=FMAX, steps=2000)
    return atoms


def geometry_rmsd(a: Atoms, b: Atoms) -> float:
    """RMSD (A) of ``a`` and ``b`` after the best rigid motion of ``b`` (Kabsch)."""
    x = a.positions - a.positions.mean(0)
    y = b.positions - b.positions.mean(0)
    u, _, vt = np.linalg.svd(y.T @ x)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1, 1, d]) @ vt
    return float(np.sqrt(((y @ rotation - x) ** 2).sum(1).mean()))


@dataclass
class MoleculeCard:
    """What :func:`molecule_properties` found for one calculator: ``properties`` (module
    docstring), the relaxed ``minimum``, the ``bonds`` scanned, and the ``scans``: name ->
    (x, energy above the minimum in eV, force spread in eV/A) for every torsion (x in
    degrees from the minimum's dihedral) and stretch (x the length over the minimum's).
    The force spread is the calculator's uncertainty, the RMS over atoms of its
    ``forces_spread`` (a TFN with several energy heads), or None where it has none."""

    properties: dict[str, float]
    minimum: Atoms
    bonds: list[tuple[int, int]]
    scans: dict[str, tuple[list[float], list[float], list[float] | None]] = field(
        default_factory=dict)


def _known(values: list) -> list | None:
    return None if any(v is None for v in values) else values


def molecule_properties(make: Callable, atoms: Atoms, edges: list | None = None
                        ) -> MoleculeCard:
    """Every property of the module docstring but the RMSD, for ``make()`` (a function
    returning a fresh ASE calculator). The bonds scanned are ``edges``, or where None the
    :func:`bonds` of this calculator's minimum (give the potential the reference's)."""
    minimum = relaxed(atoms, make())
    edges = bonds(minimum) if edges is None else edges
    e0 = float(minimum.get_potential_energy())
    card = MoleculeCard({}, minimum, edges)
    out = card.properties
    with tempfile.TemporaryDirectory() as folder:
        vib = Vibrations(minimum, name=f"{folder}/vib", delta=0.01, nfree=2)
        vib.run()
        energies = np.sort(np.real(vib.get_energies()))
    n, linear = len(atoms), np.linalg.matrix_rank(minimum.positions - minimum.positions[0]) < 2
    for k, e in enumerate(energies[(5 if linear else 6):], 1):
        out[f"nu_{k}"] = float(e / CM1)
    degree = np.bincount(np.array(edges).ravel(), minlength=n) if edges else np.zeros(n)
    calc = make()

    def energy(moved: Atoms) -> float:
        moved.calc = calc
        return float(moved.get_potential_energy()) - e0

    def energy_or_nan(moved: Atoms) -> float:
        try:
            return energy(moved)
        except Exception:  # noqa: BLE001 - any calculator's failure far out on the curve
            return float("nan")

    def spread(moved: Atoms) -> float | None:
        try:
            values = calc.get_property("forces_spread", moved)
        except PropertyNotImplementedError:  # not offered, or a TFN with one energy head
            return None
        return float(np.sqrt(np.mean(np.square(values))))

    for i, j in edges:
        if degree[i] < 2 or degree[j] < 2:
            continue
        side = smaller_side(n, edges, i, j)
        if side is None:
            continue
        b, c, mask = side
        a = next(k for e in edges for k in e if b in e and k not in (b, c))
        d = next(k for e in edges for k in e if c in e and k not in (b, c))
        start = minimum.get_dihedral(a, b, c, d)
        angles, energies, spreads = list(range(0, 360 + TORSION_STEP, TORSION_STEP)), [], []
        for step in angles:
            scan = minimum.copy()
            scan.set_dihedral(a, b, c, d, start + step, mask=mask)
            energies.append(energy(scan))
            spreads.append(spread(scan))
        name = f"torsion_{min(i, j)}-{max(i, j)}"
        out[name] = 1e3 * float(np.ptp(energies))
        card.scans[name] = ([float(x) for x in angles], energies, _known(spreads))
    for name, (factors, frames) in stretch_scans(minimum, edges).items():
        energies = [energy_or_nan(a) for a in frames]
        for factor in STRETCH:
            out[f"stretch_{name[8:]}_{factor}"] = energies[factors.index(factor)]
        card.scans[name] = (factors, energies, _known([spread(a) for a in frames]))
    for name, (factors, frames) in hop_scans(minimum, edges).items():
        energies = [energy_or_nan(a) for a in frames]
        out[f"{name}_{HOP}"] = energies[factors.index(HOP)]
        card.scans[name] = (factors, energies, _known([spread(a) for a in frames]))
    return card


def compare_molecule(make_potential: Callable, make_reference: Callable, atoms: Atoms
                     ) -> tuple[dict, dict, dict, str]:
    """The report card of a molecule: (potential's properties, reference's, scans: name ->
    (potential's (x, E, spread), reference's), a summary line). Each calculator relaxes
    its own minimum; the bonds scanned are the reference's."""
    ref_card = molecule_properties(make_reference, atoms)
    pot_card = molecule_properties(make_potential, atoms, ref_card.bonds)
    reference, potential = ref_card.properties, pot_card.properties
    scans = {k: (pot_card.scans[k], ref_card.scans[k]) for k in ref_card.scans}
    freq = [abs(potential[k] - reference[k]) for k in reference if k.startswith("nu_")]
    rmsd = geometry_rmsd(ref_card.minimum, pot_card.minimum)
    summary = f"relaxed geometry RMSD {rmsd:.4f} A" + (
        f"; harmonic frequencies MAE {np.mean(freq):.1f} cm^-1, max {np.max(freq):.1f} "
        "cm^-1" if freq else "")
    return potential, reference, scans, summary


def stretch_scans(minimum: Atoms, edges: list[tuple[int, int]]
                  ) -> dict[str, tuple[list[float], list[Atoms]]]:
    """``stretch_<A>-<B>`` -> (factors, geometries): the first bond of each element pair
    stretched rigidly to each factor of ``STRETCH_SCAN`` x its length (0.8-3; the smaller
    side moved; bonds in rings are skipped)."""
    n, symbols, pairs, scans = len(minimum), minimum.get_chemical_symbols(), {}, {}
    for i, j in edges:
        pairs.setdefault("-".join(sorted((symbols[i], symbols[j]))), (i, j))
    factors = list(STRETCH_SCAN)
    for pair, (i, j) in sorted(pairs.items()):
        side = smaller_side(n, edges, i, j)
        if side is None:
            continue
        b, c, mask = side
        length, frames = minimum.get_distance(b, c), []
        for factor in factors:
            stretched = minimum.copy()
            stretched.set_distance(b, c, factor * length, fix=0, indices=np.flatnonzero(mask))
            frames.append(stretched)
        scans[f"stretch_{pair}"] = (factors, frames)
    return scans


def hop_scans(minimum: Atoms, edges: list[tuple[int, int]]
              ) -> dict[str, tuple[list[float], list[Atoms]]]:
    """``hop_<X>H><Y>`` -> (factors, geometries): the first hydrogen bonded to an X turned
    about it toward a non-hydrogen Y bonded to the same X, to each of ``HOP_SCAN`` x the
    sum of their covalent radii (:func:`tfn_md.bonds.turned_toward`)."""
    symbols, scans = minimum.get_chemical_symbols(), {}
    for h, x, y in hops(minimum.numbers, edges):
        name = f"hop_{symbols[x]}H>{symbols[y]}"
        if minimum.numbers[y] == 1 or name in scans:
            continue
        r_cov = covalent_radii[1] + covalent_radii[minimum.numbers[y]]
        frames = []
        for factor in HOP_SCAN:
            moved = minimum.copy()
            position = turned_toward(minimum.positions, h, x, y, factor * r_cov)
            if position is None:
                break
            moved.positions[h] = position
            frames.append(moved)
        if len(frames) == len(HOP_SCAN):
            scans[name] = (list(HOP_SCAN), frames)
    return scans


def contact_scans(minimum: Atoms, edges: list[tuple[int, int]]
                  ) -> dict[str, tuple[list[float], list[Atoms]]]:
    """``contact_<A>-<B>`` -> (factors, geometries): atoms pushed together. For each element
    pair, the first two atoms that are not bonded but share a bonded neighbour (geminal
    hydrogens, the two ends of an angle); the second moved alone along their axis to
    1.0 down to 0.4 times their distance in steps of 0.05."""
    n, symbols = len(minimum), minimum.get_chemical_symbols()
    neighbours = [set() for _ in range(n)]
    for i, j in edges:
        neighbours[i].add(j)
        neighbours[j].add(i)
    pairs = {}
    for i in range(n):
        for j in range(i + 1, n):
            if j not in neighbours[i] and neighbours[i] & neighbours[j]:
                pairs.setdefault("-".join(sorted((symbols[i], symbols[j]))), (i, j))
    factors = [round(float(f), 2) for f in np.arange(1.0, 0.375, -0.05)]
    scans = {}
    for pair, (i, j) in sorted(pairs.items()):
        length, frames = minimum.get_distance(i, j), []
        for factor in factors:
            pushed = minimum.copy()
            pushed.set_distance(i, j, factor * length, fix=0)
            frames.append(pushed)
        scans[f"contact_{pair}"] = (factors, frames)
    return scans
