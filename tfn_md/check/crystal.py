"""Physical properties of a cubic Bravais crystal (fcc, bcc) from any ASE calculator: one
half of a potential's report card (:mod:`tfn_md.check`), computed the same way for the
potential and for its reference.

Every property is computed with the calculator's own relaxed lattice constant a0:

* ``a`` (A), ``B`` (GPa): Birch-Murnaghan fit (:mod:`ase.eos`) of the conventional cubic
  cell's energy at 9 volumes within +-6 % of a first guess, then again around the first
  fit's volume.
* ``C11``, ``C12``, ``C44`` (GPa): central differences of the stress (Voigt) under strains
  of +-0.5 %: C11 = d s_xx / d e_xx, C12 = d s_yy / d e_xx, C44 = d s_yz / d g_yz
  (g_yz = 2 e_yz). Atoms move with the cell: in a Bravais lattice every atom is a centre
  of inversion, so no internal relaxation follows these strains.
* ``E_vac`` (eV): vacancy formation in the 3x3x3 conventional supercell (108 atoms fcc,
  54 bcc), positions relaxed at fixed cell: E_vac = E(N-1) - (N-1)/N E(N).
* ``gamma_<hkl>`` (J/m^2): surface energy of the three low-index surfaces, from a 1x1
  slab of ``SLAB_LAYERS`` layers with 10 A of vacuum on each side, positions relaxed:
  gamma = (E_slab - N E_bulk/atom) / (2 A).
* ``nu_<point>_<k>`` (THz): phonon frequencies at the zone-boundary points X and L (fcc)
  or H and N (bcc), from finite displacements (:class:`ase.phonons.Phonons`) in a 4x4x4
  supercell of the primitive cell, acoustic sum rule imposed; k = 1..3 in ascending order.
"""

import tempfile
from collections.abc import Callable

import numpy as np
from ase import Atoms, units
from ase.build import bcc100, bcc110, bcc111, bulk, fcc100, fcc110, fcc111
from ase.eos import EquationOfState
from ase.optimize import BFGS
from ase.phonons import Phonons

__all__ = ["FMAX", "PROPERTIES", "SLAB_LAYERS", "crystal_properties", "describe"]

FMAX = 0.005  # eV/A: relaxations stop below this largest force
SLAB_LAYERS = 9
STRAIN = 0.005
SURFACES = {"fcc": {"111": fcc111, "100": fcc100, "110": fcc110},
            "bcc": {"110": bcc110, "100": bcc100, "111": bcc111}}
PHONON_POINTS = {"fcc": ("X", "L"), "bcc": ("H", "N")}
THZ = 1e12 * units._hplanck / units._e  # eV per THz

#: name -> (description, unit) of every property, in report order
PROPERTIES = {
    "a": ("lattice constant", "A"),
    "B": ("bulk modulus", "GPa"),
    "C11": ("elastic constant C11", "GPa"),
    "C12": ("elastic constant C12", "GPa"),
    "C44": ("elastic constant C44", "GPa"),
    "E_vac": ("vacancy formation energy", "eV"),
}


def describe(name: str) -> tuple[str, str]:
    """(description, unit) of a property name of :func:`crystal_properties`."""
    if name.startswith("gamma_"):
        return f"surface energy ({name[6:]})", "J/m^2"
    if name.startswith("nu_"):
        _, point, k = name.split("_")
        return f"phonon frequency at {point}, branch {k}", "THz"
    return PROPERTIES[name]


def _energy(atoms: Atoms, calc) -> float:
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def _relaxed_energy(atoms: Atoms, calc) -> float:
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=FMAX, steps=500)
    return float(atoms.get_potential_energy())


def lattice_constant(symbol: str, lattice: str, make: Callable, guess: float
                     ) -> tuple[float, float]:
    """(a0 in A, B in GPa) of the conventional cubic cell (module docstring)."""
    calc = make()
    a = guess
    for _ in range(2):
        cells = [bulk(symbol, lattice, a=a * s, cubic=True) for s in
                 (1 + np.linspace(-0.06, 0.06, 9)) ** (1 / 3)]
        energies = [_energy(c, calc) for c in cells]
        v0, _, b = EquationOfState([c.get_volume() for c in cells], energies,
                                   eos="birchmurnaghan").fit()
        a = v0 ** (1 / 3)  # the conventional cubic cell: V = a^3
    return float(a), float(b / units.GPa)


def elastic_constants(cell: Atoms, make: Callable) -> dict[str, float]:
    """C11, C12, C44 in GPa of the relaxed conventional cell ``cell`` (module docstring)."""
    calc = make()
    d_s = {}
    for name, (i, j) in {"xx": (0, 0), "yz": (1, 2)}.items():
        stresses = []
        for sign in (1, -1):
            e = np.zeros((3, 3))
            e[i, j] = e[j, i] = sign * STRAIN / (1 if i == j else 2)  # g_yz = 2 e_yz
            strain = np.eye(3) + e
            strained = cell.copy()
            strained.set_cell(cell.cell.array @ strain, scale_atoms=True)
            strained.calc = calc
            stresses.append(strained.get_stress())  # Voigt xx yy zz yz xz xy, eV/A^3
        d_s[name] = (stresses[0] - stresses[1]) / (2 * STRAIN)
    return {"C11": d_s["xx"][0] / units.GPa, "C12": d_s["xx"][1] / units.GPa,
            "C44": d_s["yz"][3] / units.GPa}


def vacancy_energy(cell: Atoms, make: Callable) -> float:
    """E_vac in eV in the 3x3x3 supercell of ``cell`` (module docstring)."""
    perfect = cell.repeat(3)
    n = len(perfect)
    e_perfect = _energy(perfect.copy(), make())
    defect = perfect.copy()
    del defect[0]
    return _relaxed_energy(defect, make()) - (n - 1) / n * e_perfect


def surface_energies(symbol: str, lattice: str, a: float, e_atom: float, make: Callable
                     ) -> dict[str, float]:
    """gamma_<hkl> in J/m^2 of the low-index surfaces (module docstring)."""
    out = {}
    for hkl, build in SURFACES[lattice].items():
        slab = build(symbol, size=(1, 1, SLAB_LAYERS), a=a, vacuum=10.0, periodic=True)
        area = np.linalg.norm(np.cross(slab.cell[0], slab.cell[1]))
        energy = _relaxed_energy(slab, make())
        gamma = (energy - len(slab) * e_atom) / (2 * area)  # eV/A^2
        out[f"gamma_{hkl}"] = gamma * units.m**2 / units.J
    return out


def phonon_frequencies(symbol: str, lattice: str, a: float, make: Callable
                       ) -> dict[str, float]:
    """nu_<point>_<k> in THz at the zone-boundary points (module docstring)."""
    primitive = bulk(symbol, lattice, a=a)
    points = primitive.cell.bandpath(npoints=0).special_points
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        phonons = Phonons(primitive, make(), supercell=(4, 4, 4), delta=0.01,
                          name=f"{folder}/phonon")
        phonons.run()
        phonons.read(acoustic=True)
        names = PHONON_POINTS[lattice]
        energies = phonons.band_structure([points[p] for p in names], verbose=False)
    for name, row in zip(names, energies, strict=True):
        for k, e in enumerate(sorted(row), 1):
            out[f"nu_{name}_{k}"] = float(e) / THZ
    return out


def crystal_properties(make: Callable, symbol: str, lattice: str = "fcc",
                       guess: float | None = None) -> dict[str, float]:
    """Every property of the module docstring for ``make()`` (a function returning a fresh
    ASE calculator), for the cubic crystal ``lattice`` ("fcc" or "bcc") of element
    ``symbol``; ``guess``: first guess of a (default: from the atomic volume of ASE's
    reference structure of the element)."""
    if lattice not in SURFACES:
        raise ValueError(f"lattice = {lattice!r} is not allowed: 'fcc' or 'bcc'")
    if guess is None:  # the atomic volume of ASE's reference structure of the element
        ground = bulk(symbol)
        guess = ({"fcc": 4, "bcc": 2}[lattice] * ground.get_volume() / len(ground)) ** (1 / 3)
    a, b = lattice_constant(symbol, lattice, make, guess)
    cell = bulk(symbol, lattice, a=a, cubic=True)
    e_atom = _energy(cell.copy(), make()) / len(cell)
    return {"a": a, "B": b, **elastic_constants(cell, make),
            "E_vac": vacancy_energy(cell, make),
            **surface_energies(symbol, lattice, a, e_atom, make),
            **phonon_frequencies(symbol, lattice, a, make)}
