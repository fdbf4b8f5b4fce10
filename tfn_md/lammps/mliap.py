"""TFN potentials in LAMMPS, through ML-IAP's unified interface (``pair_style mliap unified``).

    tfn-md export-lammps cu-emt -o cu-emt.mliap        # prints the LAMMPS lines to use

    units metal
    newton on
    comm_modify cutoff 12.0                            # >= layers x cutoff + neighbour skin
    pair_style mliap unified cu-emt.mliap 1            # 1: neighbour lists for ghosts too
    pair_coeff * * Cu

How a rank computes its share. LAMMPS gives each rank its own atoms (local) and
copies of the atoms around them (ghosts), a full neighbour list of local and ghost
atoms, and the pair vectors r_ij = x_j - x_i (ghosts are explicit periodic images).
:meth:`TFNMLIAP.compute_forces` runs the model on local + ghost atoms and sums the
energies of the local atoms only,

    E_rank = sum_{i local} E_i,      f_ij = dE_rank / dr_ij   (autograd),

and hands f_ij back to LAMMPS (``update_pair_forces``), which adds f_ij to atom i and
-f_ij to atom j, sums ghost forces back to their owners and takes the virial from
f · r. Since every E_i is counted on exactly one rank, the forces are exact on any
number of ranks, provided every atom within ``layers - 1`` edges of a local atom sees
all its neighbours: that is what ``comm_modify cutoff >= layers x cutoff + skin``
guarantees. Each layer runs only on the atoms it needs (:mod:`tfn_md.receptive`),
so the ghost shell costs little beyond its first ``cutoff`` of width.

The file written by :func:`export_lammps` is a pickle (LAMMPS loads it with
``pickle.load``) of a :class:`TFNMLIAP` whose state is plain data: a format marker,
the bytes of the tfn_md checkpoint (read back with ``torch.load(weights_only=True)``)
and the dtype/device settings. The model is rebuilt from them on load; no code is
pickled, and LAMMPS need not be importable to write or read the file.
"""

import os
import pickle

import numpy as np
import torch

from ..atomic import atomic_path
from ..checkpoint import checkpoint_bytes, model_from_checkpoint, read_checkpoint, resolve_potential
from ..inference.chunks import compiled_chunk
from ..inference.compiled import COMPILE_AFTER
from ..inference.engine import check_calculator_args, compile_setting, inference_model
from ..model import TFN
from ..receptive import receptive_field
from .local_program import CompiledLocalEnergies

__all__ = ["TFNMLIAP", "export_lammps", "lammps_lines"]

FORMAT = "tfn_md-lammps"
FORMAT_VERSION = 1
DEFAULT_SKIN = 2.0  # LAMMPS' neighbour skin in metal units, A


class TFNMLIAP:
    """A TFN potential as an ML-IAP unified model (the interface of LAMMPS'
    ``lammps.mliap.mliap_unified_abc.MLIAPUnified``, without importing LAMMPS).

    Pickled as ``tfn_md.lammps.TFNMLIAP``, its public home, whichever module defines it:
    files written by earlier versions name that path too.

    Args:
        potential: checkpoint path, shipped potential name, or a :class:`tfn_md.TFN`.
        dtype: "float32" or "float64" (None: the potential's own).
        device: torch device for the model ("cpu", "cuda").
        exact: evaluate the radial MLPs instead of their tables (see ``TFNCalculator``).
        compile: "auto" (default): after ``tfn_md.inference.compiled.COMPILE_AFTER`` steps, run a
            rank's pruned graph as one compiled program (:mod:`tfn_md.lammps.local_program`; up
            to ``tfn_md.lammps.local_program.MAX_EDGES`` edges, 20-40 s to compile, cached on
            disk) or, larger, the edge kernel's chunks compiled (as ``TFNCalculator``
            does; ``TFN_MD_COMPILE=0`` turns it off); True: from the first step; False:
            never.
    """

    def __init__(self, potential, dtype=None, device: str = "cpu", exact: bool = False,
                 compile: bool | str = "auto"):
        device, dtype, _ = check_calculator_args(potential, device, dtype, 0.0, compile, exact)
        if isinstance(potential, TFN):
            blob = checkpoint_bytes(potential)
        else:
            path = resolve_potential(potential)
            read_checkpoint(path)  # a clear error now, not when LAMMPS loads the file
            blob = path.read_bytes()
        self.__setstate__({
            "format": FORMAT, "format_version": FORMAT_VERSION, "checkpoint": blob,
            "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
            "device": str(device), "exact": bool(exact), "compile": compile})

    # -- pickling: plain data only; the model is rebuilt on load ---------------------------
    def __getstate__(self) -> dict:
        return dict(self._state)

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("not a tfn_md LAMMPS potential (no 'tfn_md-lammps' marker)")
        if state.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"tfn_md LAMMPS potential format {state.get('format_version')} is "
                             f"newer than this tfn_md reads ({FORMAT_VERSION}): upgrade tfn_md")
        model = model_from_checkpoint(read_checkpoint(state.get("checkpoint")))
        compile = state.get("compile", "auto")
        device, dtype, _ = check_calculator_args(model, state.get("device", "cpu"),
                                                 state.get("dtype"), 0.0, compile,
                                                 state.get("exact", False))
        self._state = state
        if model.cutoff is None:
            raise ValueError("LAMMPS needs a potential with a cutoff (this one uses all pairs)")
        if model.config.n_scalar_inputs:
            raise ValueError("LAMMPS cannot give this potential its per-atom scalar inputs")
        self.device = torch.device(device)
        self.model = inference_model(model, self.device, dtype, state.get("exact", False))
        compile = compile_setting(compile)
        # "auto": steps until the chunk kernels get compiled (None: not counting)
        self._steps_left = COMPILE_AFTER if compile == "auto" else None
        self._set_compiled(compile is True)
        with torch.no_grad():
            self.isolated = self.model.isolated_features(scalars_only=True)
        # pruned graphs up to local_program.MAX_EDGES edges: one compiled program (its
        # padding edges need radial functions that vanish beyond the cutoff)
        vanishing = self.model.tabulated or self.model.config.basis == "bessel"
        self.compiled = None
        if compile and vanishing:
            self.compiled = CompiledLocalEnergies(self.model, self.isolated,
                                                  0 if compile is True else COMPILE_AFTER)
        # what LAMMPS reads (ML-IAP unified): one dummy descriptor and parameter per atom;
        # pairs are kept within 2 rcutfac = cutoff
        self.interface = None
        self.element_types = list(self.model.species)
        self.ndescriptors = 1
        self.nparams = 1
        self.rcutfac = 0.5 * float(self.model.cutoff)

    def _set_compiled(self, on: bool) -> None:
        for conv in self.model.convolutions:
            conv.chunk_kernels = compiled_chunk if on else None

    @property
    def layers(self) -> int:
        return self.model.config.layers

    @property
    def dtype(self) -> torch.dtype:
        return self.model.e0.dtype

    # -- the ML-IAP unified interface ---------------------------------------------------
    def compute_descriptors(self, data) -> None:
        """Nothing: the model needs no descriptors from LAMMPS."""

    def compute_gradients(self, data) -> None:
        """Nothing: forces are computed in :meth:`compute_forces`."""

    def compute_forces(self, data) -> None:
        """Energies of this rank's atoms and the pair forces f_ij = dE/dr_ij [npairs, 3]
        (see the module docstring). Writes ``data.eatoms`` (per local atom in list order),
        ``data.energy`` and calls ``data.update_pair_forces``."""
        if self._steps_left is not None:
            if self._steps_left <= 0:
                self._set_compiled(True)
                self._steps_left = None
            else:
                self._steps_left -= 1
        npairs = data.npairs

        def pairs(values, *shape):  # LAMMPS gives None before its pair arrays exist
            return np.zeros((0, *shape)) if values is None or not npairs else np.asarray(values)

        energies, fij = self.evaluate(
            data.nlocal, data.ntotal, np.asarray(data.elems), pairs(data.pair_i),
            pairs(data.pair_j), pairs(data.rij, 3))
        listed = np.asarray(data.iatoms)[: data.nlistatoms]
        data.eatoms = np.ascontiguousarray(energies[listed])
        data.energy = float(energies.sum())
        data.update_pair_forces(fij)

    def evaluate(self, nlocal: int, ntotal: int, elems: np.ndarray, pair_i: np.ndarray,
                 pair_j: np.ndarray, rij: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-atom energies E_i of the local atoms 0..nlocal-1 [nlocal] and f_ij = dE/dr_ij
        [npairs, 3] (float64, C-contiguous) for ``ntotal`` local + ghost atoms with element
        indices ``elems`` [ntotal] (into :attr:`element_types`) and pairs (i, j, r_ij)."""
        if ntotal and (elems[:ntotal].min() < 0 or elems[:ntotal].max() >= len(self.element_types)):
            raise ValueError("atoms of types not mapped to an element of this potential "
                             f"({self.element_types}): check pair_coeff (NULL is not supported)")
        field = receptive_field((pair_i, pair_j), ntotal, nlocal, self.layers)
        atoms, edges = field.atoms.numpy(), field.edges.numpy()  # gathered here, in numpy
        species, vectors = elems[atoms].astype(np.int64), rij[edges]
        out = None if self.compiled is None else self.compiled(species, vectors, field)
        energies, grad = self._eager(species, vectors, field) if out is None else out
        fij = np.zeros((len(rij), 3))
        fij[edges] = grad
        return energies, fij

    def _eager(self, species: np.ndarray, vectors: np.ndarray, field) -> tuple:
        """:meth:`evaluate`'s energies [n_targets] and dE/dr_ij [E_kept, 3] (float64) with
        the eager model, from the kept atoms' species and edges' vectors in field order."""
        device = self.device
        field.edge_index = field.edge_index.to(device)
        vectors = torch.tensor(vectors, dtype=self.dtype, device=device, requires_grad=True)
        energies = self.model.local_energies(torch.as_tensor(species, device=device), vectors,
                                             field, self.isolated)
        grad = None
        if len(vectors):
            (grad,) = torch.autograd.grad(energies.sum(), vectors, allow_unused=True)
        grad = np.zeros((len(vectors), 3)) if grad is None else grad.double().cpu().numpy()
        return energies.detach().double().cpu().numpy(), grad


def lammps_lines(potential: TFNMLIAP, path: str, skin: float = DEFAULT_SKIN) -> list[str]:
    """The LAMMPS input lines that run ``potential`` saved at ``path``."""
    comm = potential.layers * float(potential.model.cutoff) + skin
    return [
        "units metal",
        "newton on",
        f"neighbor {skin:g} bin",
        f"comm_modify cutoff {comm:g}   # >= layers ({potential.layers}) x cutoff "
        f"({potential.model.cutoff:g}) + neighbor skin ({skin:g})",
        f"pair_style mliap unified {path} 1",
        f"pair_coeff * * {' '.join(potential.element_types)}   # one element per atom type",
    ]


def export_lammps(potential, path: str | os.PathLike, dtype=None, device: str = "cpu",
                  exact: bool = False, compile: bool | str = "auto") -> TFNMLIAP:
    """Write ``potential`` as a LAMMPS ML-IAP unified model file (atomically) and return it
    (arguments as :class:`TFNMLIAP`). The suffix must not be ``.pt``/``.pth``: LAMMPS
    would load those with ``torch.load``."""
    if str(path).endswith((".pt", ".pth")):
        raise ValueError(f"{path}: LAMMPS loads .pt/.pth files with torch.load; "
                         "use another suffix, e.g. .mliap")
    model = TFNMLIAP(potential, dtype=dtype, device=device, exact=exact, compile=compile)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(model, f)
    return model
