"""Free atoms, stretched bonds and hopping hydrogens in the initial data of ``tfn-md learn``
(issue 26: a potential trained on thermal frames of one molecule put ethanethiol's S-H
dissociation at 0.24 eV instead of GFN2-xTB's 4.05 eV), and the exploration's broken-bond
flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.data import covalent_radii

from tfn_md.data import H5Dataset
from tfn_md.learn.config import LearnConfig
from tfn_md.learn.dissociation import bridges, free_atoms, hopped_hydrogens, stretched_bonds
from tfn_md.learn.loop import Learner, bonded_pairs, broken_bond


def _thermal(name: str, n: int, seed: int = 0):
    start = molecule(name)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        a = start.copy()
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        frames.append(a)
    return start, frames


def test_bridges_leave_ring_bonds_out_and_move_the_smaller_side():
    benzene = molecule("C6H6")
    cuts = bridges(len(benzene), bonded_pairs(benzene))
    assert len(cuts) == 6  # the C-H bonds; the six ring C-C bonds do not split it
    for i, j, side in cuts:
        assert benzene.numbers[i] == 6 and side == [j] and benzene.numbers[j] == 1
    ethanol = molecule("CH3CH2OH")
    cuts = bridges(len(ethanol), bonded_pairs(ethanol))
    assert len(cuts) == len(ethanol) - 1  # a tree: every bond is a bridge
    assert all(2 * len(side) <= len(ethanol) for _, _, side in cuts)


def test_stretched_bonds_pull_one_side_rigidly_to_the_factor():
    start, frames = _thermal("CH3CH2OH", 6)
    bonded = bonded_pairs(start)
    factors = [1.3, 2.0, 3.0]
    out = stretched_bonds(frames, bonded, factors, per_bond=2)
    cuts = {f"{i}-{j}": side for i, j, side in bridges(len(start), bonded)}
    assert 0 < len(out) <= len(cuts) * 2 * len(factors)
    assert {a.info["al_bond"] for a in out} == set(cuts)  # every bond stretched
    for a in out:
        i, j = map(int, a.info["al_bond"].split("-"))
        r_cov = covalent_radii[a.numbers[i]] + covalent_radii[a.numbers[j]]
        assert a.get_distance(i, j) == pytest.approx(a.info["al_stretch"] * r_cov)
        # the frame it came from: the same distances within each side
        base = next(f for f in frames if np.allclose(f.positions[:j], a.positions[:j])
                    or np.allclose(f.positions[i], a.positions[i]))
        side = cuts[a.info["al_bond"]]
        rest = [k for k in range(len(a)) if k not in side]
        for group in (side, rest):
            d_new = a.get_all_distances()[np.ix_(group, group)]
            d_old = base.get_all_distances()[np.ix_(group, group)]
            np.testing.assert_allclose(d_new, d_old, atol=1e-9)
        assert not a.pbc.any()
    atoms = free_atoms(start.numbers)
    assert [a.get_chemical_formula() for a in atoms] == ["H", "C", "O"]


def test_hopped_hydrogens_turn_about_their_partner_toward_the_next_atom():
    """Each H turned about its partner x (|h - x| kept, nothing else moved) until |h - y| =
    factor x (r_H + r_y) for y bonded to x; a frame bringing a pair of elements closer than
    anywhere in the frames it was made from is left out (geminal H-H hops are)."""
    start, frames = _thermal("CH3CH2NH2", 12)
    bonded = bonded_pairs(start)
    factors = [1.05, 1.25, 1.5]
    out = hopped_hydrogens(frames, bonded, factors, per_pair=2)
    neighbours = {i: {j for p in bonded for j in p if i in p and j != i} for i in range(10)}
    hops = {(h, y) for h in range(10) if start.numbers[h] == 1 for x in neighbours[h]
            for y in neighbours[x] if y != h}
    heavy = {f"{h}>{y}" for h, y in hops if start.numbers[y] > 1}
    assert {a.info["al_bond"] for a in out} == heavy  # every H toward every heavy 1-3 atom
    closest = min(f.get_all_distances()[np.triu_indices(10, 1)][
        (start.numbers[np.triu_indices(10, 1)[0]] == 1)
        & (start.numbers[np.triu_indices(10, 1)[1]] == 1)].min() for f in frames)
    for a in out:
        h, y = map(int, a.info["al_bond"].split(">"))
        (x,) = neighbours[h]
        base = next(f for f in frames if np.allclose(np.delete(f.positions, h, 0),
                                                     np.delete(a.positions, h, 0)))
        assert a.get_distance(h, x) == pytest.approx(base.get_distance(h, x))
        r_cov = covalent_radii[1] + covalent_radii[a.numbers[y]]
        assert a.get_distance(h, y) == pytest.approx(a.info["al_stretch"] * r_cov)
        hh = [a.get_distance(h, k) for k in range(10) if k != h and a.numbers[k] == 1]
        assert min(hh) >= closest - 1e-9  # the H-H wall stays where the frames put it
    assert {a.info["al_stretch"] for a in out} <= set(factors)
    assert hopped_hydrogens(frames, bonded, [], 2) == []


def test_a_broken_bond_is_flagged_past_the_factor():
    start = molecule("CH3CH2OH")
    bonded = bonded_pairs(start)
    assert broken_bond(start, bonded, 1.5) is None
    i, j = sorted(bonded)[0]
    r_cov = covalent_radii[start.numbers[i]] + covalent_radii[start.numbers[j]]
    pulled = start.copy()
    pulled.set_distance(i, j, 1.7 * r_cov, fix=0)
    assert broken_bond(pulled, bonded, 1.5) == pytest.approx(1.7)
    assert broken_bond(pulled, bonded, 1.8) is None


def test_the_loop_labels_them_once_and_trains_on_them(tmp_path: Path):
    raw = {
        "system": {"molecule": "CH3OH"},
        "reference": {"calculator": "ase.calculators.emt:EMT"},
        "initial": {"temperatures": [300.0], "n": 6, "interval": 5, "equilibration": 5,
                    "stretch": [1.5, 2.5], "hop": [1.3], "stretch_frames": 1},
        "model": {"channels": 8, "l_max": 1, "layers": 1, "cutoff": 3.0, "radial_hidden": 16,
                  "energy_heads": 2},
        "optim": {"epochs": 1},
        "run": {"out": str(tmp_path / "out"), "dtype": "float64", "compile": False},
    }
    learner = Learner(LearnConfig.from_dict(raw), progress=False)
    learner.out.mkdir()
    learner.initial()
    with H5Dataset(learner.data) as ds:
        frames = list(ds)
    extra = [a for a in frames if "al_dissociation" in a.info]
    assert sorted(a.info["al_dissociation"] for a in extra) == list(range(len(extra)))
    alone = [a for a in extra if len(a) == 1]
    assert sorted(a.get_chemical_formula() for a in alone) == ["C", "H", "O"]
    assert all(a.get_forces().shape == (1, 3) for a in alone)
    stretched = [a for a in extra if "al_stretch" in a.info]
    assert {a.info["al_stretch"] for a in stretched if "-" in a.info["al_bond"]} == {1.5, 2.5}
    assert {a.info["al_stretch"] for a in stretched if ">" in a.info["al_bond"]} == {1.3}
    with H5Dataset(learner.data) as ds:  # stretched bonds: the energy only
        has_forces = ds.mask("forces")
    assert [bool(has_forces[k]) for k, a in enumerate(frames)] == [
        "al_stretch" not in a.info for a in frames]
    assert len(stretched) + len(alone) == len(extra) and len(frames) == 6 + len(extra)
    # the energy zero is re-fitted on the thermal frames and the free atoms only
    assert learner.sampled(range(len(frames))) == [k for k, a in enumerate(frames)
                                                   if "al_stretch" not in a.info]
    learner.dissociation()  # again (a resume): nothing labelled twice
    with H5Dataset(learner.data) as ds:
        assert len(ds) == len(frames)
    entry = learner.train(0)  # free atoms (no edges) go through training and calibration
    # (the random 10 % held out may hold only energy-only frames: the energy MAE is there)
    assert np.isfinite(entry["valid_energy_per_atom_mae"]) and "energy_zero" in entry["calibration"]
    # the training's energy zero of each element is its free atom's: the model's energy
    # of an atom alone is the reference's (the re-fit after it moves E0 by the least
    # squares over all sampled frames, where the molecule's thousands of frames dominate)
    from tfn_md import TFNCalculator

    calc = TFNCalculator(str(learner.out / "iter0" / "train" / "best.pt"), compile=False)
    for a in alone:
        reference = a.get_potential_energy()
        a.calc = calc
        assert a.get_potential_energy() == pytest.approx(reference, abs=1e-6)
    # the loop's last step for a molecule: the final potential's report card against the
    # reference, bonds stretched out to dissociation (3x), shown in report.md
    import shutil

    from tfn_md.learn.report import write_report

    shutil.copyfile(learner.out / "iter0" / "model.pt", learner.out / "final.pt")
    learner.report_card()
    card = json.loads((learner.out / "card" / "properties.json").read_text())
    for name in ("stretch_C-O_3.0", "stretch_C-H_3.0", "nu_1"):  # EMT: no O-H bond
        assert np.isfinite(card["reference"][name]) and np.isfinite(card["potential"][name])
    mine, theirs = card["scans"]["stretch_C-O"]
    assert mine[0] == theirs[0] and mine[0][-1] == 3.0
    state = {"iteration": 0, "stage": "done", "final": True,
             "history": [{"iteration": 0, **entry}]}
    write_report(learner, state)
    report = (learner.out / "report.md").read_text()
    assert "## Report card: final.pt against ase.calculators.emt:EMT" in report
    assert "| bond C-O stretched to 3.0x | eV |" in report


class _FailsFarApart:
    """EMT that fails (as an SCF that does not converge would) on frames whose atoms
    spread over more than ``limit`` A."""

    limit = 0.0

    def __init__(self):
        from ase.calculators.emt import EMT

        self.emt = EMT()

    def __getattr__(self, name):
        return getattr(self.emt, name)

    def get_potential_energy(self, atoms=None, **kwargs):
        from ase.calculators.calculator import CalculationFailed

        if atoms.get_all_distances().max() > self.limit:
            raise CalculationFailed("SCF not converged")
        return self.emt.get_potential_energy(atoms)


def test_frames_the_reference_fails_on_are_left_out_and_said(tmp_path: Path, capsys):
    raw = {
        "system": {"molecule": "CH3OH"},
        "reference": {"calculator": "ase.calculators.emt:EMT"},
        "initial": {"temperatures": [300.0], "n": 4, "interval": 5, "equilibration": 5,
                    "stretch": [1.3, 3.0], "stretch_frames": 1},
        "run": {"out": str(tmp_path / "out")},
    }
    learner = Learner(LearnConfig.from_dict(raw), progress=True)
    learner.out.mkdir()
    learner.cfg.initial.stretch = []  # the thermal frames only, with EMT
    learner.initial()
    with H5Dataset(learner.data) as ds:
        _FailsFarApart.limit = max(a.get_all_distances().max() for a in ds) + 0.5
    learner.cfg.initial.stretch = [1.3, 3.0]
    learner.make = lambda _method=None: _FailsFarApart()
    capsys.readouterr()
    learner.dissociation()
    err = capsys.readouterr().err
    assert "the reference failed on" in err and "SCF not converged" in err
    with H5Dataset(learner.data) as ds:
        n_kept = len(ds)
        kept = [a for a in ds if "al_stretch" in a.info]
    assert kept and all(a.get_all_distances().max() <= _FailsFarApart.limit for a in kept)
    assert {a.info["al_stretch"] for a in kept} == {1.3}  # 3x: every one failed
    learner.dissociation()  # a resume tries the failed ones again, stores nothing twice
    with H5Dataset(learner.data) as ds:
        assert len(ds) == n_kept
