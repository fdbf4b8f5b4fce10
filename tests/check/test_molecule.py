"""The molecule half of the report card (tfn_md.check.molecule): the RMSD is invariant to
rigid motions, the bonds of ethanol are its chemistry, the harmonic frequency of a diatomic
equals sqrt(k / mu) from an independent bond scan, and the CLI as written."""

import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule

from tfn_md.bonds import hops, turned_toward
from tfn_md.check.molecule import bonds, geometry_rmsd, molecule_properties, relaxed
from tfn_md.cli import main
from tfn_md.so3 import random_rotation

tblite = pytest.importorskip("tblite", reason="GFN2-xTB reference needs tblite (extra 'data')")


def xtb():
    from tfn_md.data.sources import xtb_calculator

    return xtb_calculator("GFN2-xTB")


def test_rmsd_ignores_rigid_motion():
    a = molecule("CH3CH2OH")
    b = a.copy()
    b.positions = b.positions @ random_rotation(1, seed=3)[0].double().numpy().T + [1, -2, 3]
    assert geometry_rmsd(a, b) < 1e-12
    b.positions[0] += [0.3, 0, 0]
    assert 0.05 < geometry_rmsd(a, b) < 0.3 / np.sqrt(len(a)) + 1e-9


def test_bonds_of_ethanol():
    atoms = molecule("CH3CH2OH")
    symbols = atoms.get_chemical_symbols()
    kinds = sorted("-".join(sorted((symbols[i], symbols[j]))) for i, j in bonds(atoms))
    assert kinds == ["C-C", "C-H", "C-H", "C-H", "C-H", "C-H", "C-O", "H-O"]


def test_diatomic_frequency_matches_the_curvature_of_its_bond():
    """H2 in GFN2-xTB: nu = sqrt(k / mu) / (2 pi c) with k = d2E/dr2 from a scan of the bond
    length (central differences), against ase.vibrations in molecule_properties."""
    h2 = relaxed(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), xtb())
    card = molecule_properties(xtb, h2)
    props, minimum = card.properties, card.minimum
    assert card.bonds == [(0, 1)] and "nu_1" in props and "nu_2" not in props
    r0, h = minimum.get_distance(0, 1), 1e-3
    energies = []
    for r in (r0 - h, r0, r0 + h):
        pair = minimum.copy()
        pair.set_distance(0, 1, r)
        pair.calc = xtb()
        energies.append(pair.get_potential_energy())
    k = (energies[0] - 2 * energies[1] + energies[2]) / h**2  # eV/A^2
    mu = minimum.get_masses()[0] / 2  # amu
    nu = np.sqrt(k / (mu * units._amu) * units._e * 1e20) / (2 * np.pi * units._c * 100)
    assert abs(props["nu_1"] - nu) < 0.01 * nu, (props["nu_1"], nu)
    assert 0 < props["stretch_H-H_1.3"] < props["stretch_H-H_1.6"]
    factors, energies, _ = card.scans["stretch_H-H"]
    assert abs(energies[factors.index(1.0)]) < 1e-9 and min(energies) > -1e-9  # the minimum


def test_scans_start_at_the_minimum_and_torsions_are_periodic():
    card = molecule_properties(xtb, molecule("CH3CH2OH"))
    torsions = [k for k in card.scans if k.startswith("torsion")]
    assert sorted(torsions) == ["torsion_0-1", "torsion_1-2"]  # C-C and C-O
    for name in torsions:
        angles, energies, spreads = card.scans[name]
        assert spreads is None  # GFN2-xTB gives no uncertainty
        assert angles[0] == 0 and angles[-1] == 360
        assert abs(energies[0]) < 1e-6 and abs(energies[-1]) < 1e-6  # a full turn comes back
        assert abs(1e3 * np.ptp(energies) - card.properties[name]) < 1e-9
    assert {k for k in card.scans if k.startswith("stretch")} == {
        "stretch_C-C", "stretch_C-H", "stretch_C-O", "stretch_H-O"}
    # hydrogens turned toward the next heavy atom: GFN2-xTB's energy rises all the way
    assert {k for k in card.scans if k.startswith("hop")} == {"hop_CH>C", "hop_CH>O",
                                                               "hop_OH>C"}
    for name in ("hop_CH>C", "hop_CH>O", "hop_OH>C"):
        factors, energies, _ = card.scans[name]
        assert factors == sorted(factors, reverse=True) and factors[-1] == 1.0
        assert np.all(np.diff(energies[2:]) > 0) and energies[-1] > 2.0  # eV
        assert card.properties[f"{name}_1.1"] == energies[factors.index(1.1)]


def test_a_turned_hydrogen_keeps_its_bond_and_reaches_the_distance():
    """tfn_md.bonds.turned_toward: h turned about x in the plane h-x-y (nothing else
    moved), |h - x| kept, |h - y| the distance asked for; None on a line."""
    ethanol = molecule("CH3CH2OH")
    edges = bonds(ethanol)
    moves = hops(ethanol.numbers, edges)
    assert (3, 2, 1) in moves and all(ethanol.numbers[h] == 1 for h, _, _ in moves)
    pos = ethanol.positions
    for h, x, y in moves:
        for distance in (1.2, 1.6):
            new = turned_toward(pos, h, x, y, distance)
            assert np.linalg.norm(new - pos[x]) == pytest.approx(np.linalg.norm(pos[h] - pos[x]))
            assert np.linalg.norm(new - pos[y]) == pytest.approx(distance)
            normal = np.cross(pos[h] - pos[x], pos[y] - pos[x])
            assert abs(np.dot(new - pos[x], normal)) < 1e-9 * np.linalg.norm(normal) + 1e-9
    line = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    assert turned_toward(line, 0, 1, 2, 1.5) is None


def test_cli_on_the_shipped_ethanol_potential(tmp_path, capsys):
    """ethanol-gfn2 against GFN2-xTB: geometry, frequencies (its model card: MAE 5.7 cm^-1)
    and torsion barriers close; the bond-stretch rows are reported, not judged here."""
    out = tmp_path / "card"
    assert main(["check", "ethanol-gfn2", "--reference", "GFN2-xTB", "--molecule",
                 "CH3CH2OH", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "relaxed geometry RMSD" in printed and "| rigid torsion barrier 0-1 |" in printed
    assert (out / "scans.png").stat().st_size > 10_000
    data = json.loads((out / "properties.json").read_text())
    ref, pot = data["reference"], data["potential"]
    freq = [abs(pot[k] - ref[k]) for k in ref if k.startswith("nu_")]
    assert len(freq) == 3 * 9 - 6 and np.mean(freq) < 10
    for k in ("torsion_0-1", "torsion_1-2"):
        assert abs(data["relative_error"][k]) < 0.05
    mine, theirs = data["scans"]["stretch_C-C"]  # (x, energy, force spread) each
    assert mine[0] == theirs[0] and len(mine[0]) == 21 and theirs[2] is None
    assert len(mine[2]) == 21 and all(s > 0 for s in mine[2])  # 8 heads: an uncertainty
    with pytest.raises(SystemExit):  # one structure at a time
        main(["check", "ethanol-gfn2", "--reference", "GFN2-xTB", "--molecule", "CH3CH2OH",
              "--crystal", "C"])
