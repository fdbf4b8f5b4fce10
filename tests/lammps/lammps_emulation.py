"""What LAMMPS hands an ML-IAP unified model, emulated in Python for tests without LAMMPS.

A "rank" owns some atoms of a structure; its ghosts are the periodic images (and, with
several ranks, the other ranks' atoms) within ``comm_cutoff`` of one of its own atoms, as
LAMMPS' ghost shell contains them; its full neighbour list covers local and ghost atoms
(``pair_style mliap unified FILE 1``), with pairs within the cutoff. ``update_pair_forces``
adds f_ij to atom i and -f_ij to atom j like LAMMPS; :func:`reduce_ranks` sums the ghost
forces back to their owners and the virial sum_i x_i f_i over local and ghost atoms (LAMMPS'
fdotr), like LAMMPS with ``newton on``.
"""

import itertools

import numpy as np
import vesin


class RankData:
    """The attributes of LAMMPS' MLIAPDataPy that tfn_md reads and writes."""

    def __init__(self, positions, elems, owner, nlocal, cutoff):
        self.x, self.owner = positions, owner
        self.nlocal, self.ntotal = nlocal, len(positions)
        self.elems = elems.astype(np.int32)
        i, j, d = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(
            points=positions, box=np.zeros((3, 3)), periodic=False, quantities="ijD")
        order = np.lexsort((j, i))  # grouped by centre, as LAMMPS lists them
        self.pair_i, self.pair_j = i[order].astype(np.int32), j[order].astype(np.int32)
        self.rij = np.ascontiguousarray(d[order])
        self.npairs = len(self.pair_i)
        self.nlistatoms = nlocal
        self.iatoms = np.arange(self.ntotal, dtype=np.int32)
        self.f = np.zeros((self.ntotal, 3))
        self.eatoms = self.energy = None

    def update_pair_forces(self, fij):
        assert fij.dtype == np.float64 and fij.flags.c_contiguous and fij.shape == (self.npairs, 3)
        if not self.npairs:
            return
        np.add.at(self.f, self.pair_i, fij)
        np.add.at(self.f, self.pair_j, -fij)


def rank_data(atoms, owned, comm_cutoff, cutoff, element_types):
    """RankData of the rank that owns the atoms ``owned`` (indices into ``atoms``)."""
    index = {s: k for k, s in enumerate(element_types)}
    elems = np.array([index[s] for s in atoms.get_chemical_symbols()])
    pos = atoms.positions
    owned = np.asarray(owned)
    images = [np.zeros(3)]
    if atoms.pbc.any():
        # enough images along each periodic direction to cover comm_cutoff
        ranges = []
        for axis in range(3):
            if atoms.pbc[axis]:
                normal = np.cross(*np.delete(atoms.cell.array, axis, 0))
                height = abs(atoms.cell.array[axis] @ normal) / np.linalg.norm(normal)
                m = int(np.ceil(comm_cutoff / height)) + 1
                ranges.append(range(-m, m + 1))
            else:
                ranges.append(range(1))
        images = [np.array(s) @ atoms.cell.array for s in itertools.product(*ranges)]
    local = pos[owned]
    xs, owners = [local], [owned]
    for shift in images:
        cand = pos + shift
        is_home = not np.any(shift)
        mask = np.ones(len(pos), bool)
        if is_home:
            mask[owned] = False
        cand_idx = np.nonzero(mask)[0]
        if not len(cand_idx):
            continue
        dist = np.min(np.linalg.norm(cand[cand_idx, None, :] - local[None], axis=-1), axis=1)
        near = cand_idx[dist <= comm_cutoff]
        xs.append(cand[near])
        owners.append(near)
    positions = np.concatenate(xs)
    owner = np.concatenate(owners)
    return RankData(positions, elems[owner], owner, len(owned), cutoff)


def reduce_ranks(atoms, ranks):
    """(energy, per-atom energies [n], forces [n, 3], virial-based stress [6] in ASE's
    order and sign) summed over the emulated ranks."""
    n = len(atoms)
    energies, forces, virial = np.zeros(n), np.zeros((n, 3)), np.zeros((3, 3))
    energy = 0.0
    for data in ranks:
        energy += data.energy
        energies[data.owner[: data.nlocal]] = data.eatoms
        np.add.at(forces, data.owner, data.f)
        virial += data.x.T @ data.f
    stress = None
    if atoms.pbc.all():
        s = -virial / atoms.get_volume()
        s = 0.5 * (s + s.T)
        stress = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return energy, energies, forces, stress
