"""fit_dipole_head: a dipole head added to a trained potential by least squares, energies
unchanged, a known head recovered."""

import numpy as np
import torch
from ase.build import molecule

from tests.helpers import make_model
from tfn_md import TFNCalculator
from tfn_md.data import write_atoms
from tfn_md.data.loader import GraphDataset
from tfn_md.train.dipole import fit_dipole_head, with_dipole_head


def test_a_known_head_is_recovered_and_energies_do_not_change(tmp_path):
    student = make_model(seed=4)  # a trained trunk without a dipole head
    teacher = with_dipole_head(student)  # the same trunk with a known head
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        teacher.charge_readout.weight.normal_(0, 1)
        teacher.charge_bias.copy_(torch.tensor([0.2, -0.1, -0.5]))
        teacher.dipole_readout.weight.normal_(0, 1)
    frames = []
    for k in range(30):
        atoms = molecule(["CH3CH2OH", "H2O", "CH3OH"][k % 3])
        atoms.rattle(0.1, seed=k)
        atoms.calc = TFNCalculator(teacher, compile=False, exact=True)  # the fit is exact
        atoms.get_dipole_moment()
        atoms.get_forces()
        frames.append(atoms)
    write_atoms(tmp_path / "d.h5", frames)
    data = GraphDataset(tmp_path / "d.h5", teacher.cutoff, vector_keys=["dipole"], charges=True)

    fitted, stats = fit_dipole_head(student, [data], charges_weight=1.0, ridge=1e-14)
    assert stats["fit_rmse"] < 1e-8
    test = molecule("CH3CH2OH")
    test.rattle(0.2, seed=99)
    test.info["charge"] = 1
    a, b, c = test.copy(), test.copy(), test.copy()
    a.calc = TFNCalculator(fitted, compile=False)
    b.calc = TFNCalculator(teacher, compile=False)
    c.calc = TFNCalculator(student, compile=False)
    assert np.allclose(a.get_dipole_moment(), b.get_dipole_moment(), atol=1e-7)
    assert np.allclose(a.get_charges(), b.get_charges(), atol=1e-7)
    # the energy does not depend on the head: exactly the same
    assert a.get_potential_energy() == c.get_potential_energy()
    assert np.array_equal(a.get_forces(), c.get_forces())


def test_with_dipole_head_keeps_every_weight():
    model = make_model(energy_heads=3, seed=2)
    new = with_dipole_head(model)
    for name, value in model.state_dict().items():
        assert torch.equal(new.state_dict()[name], value), name
    assert new.config.dipole and not model.config.dipole
