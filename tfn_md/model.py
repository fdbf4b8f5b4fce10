"""The TFN potential: species embedding -> TFN layers -> per-atom readouts.

    x^(0)      = embedding(Z)                                     [n, c, 1]
    x^(k+1)    = x^(k) + NL(SelfInteraction(concat_p Conv_p(x^(k))))   [n, c, (l+1)^2]
    E_i        = w_E · x^(last)_{l=0}                             [n]
    v_i        = w_v · x^(last)_{l=1}  (as Cartesian x, y, z)     [n, 3]
    E          = sum_i (scale * E_i + shift + E0[Z_i])  (+ ZBL, wall pairs)  [n_graphs]
    sigma_E    = sqrt(f^T C f),  f = sum_i (z_i - z_i,isolated)  (if llpr)  [n_graphs]

With a dipole head (``TFNConfig.dipole``), per structure b of total charge Q_b:

    q~_i       = w_q · (x^(last)_{i,l=0} - x_{isolated,l=0}) + chi[Z_i]   [n]   (e)
    q_i        = q~_i - (sum_{j in b} q~_j - Q_b) / N_b           [n]   sum_{i in b} q_i = Q_b
    p_i        = w_p · x^(last-1)_{i,l=1}  (Cartesian)            [n, 3]  (e*A)
    mu_b       = sum_{i in b} (q_i r_i + p_i)                     [n_graphs, 3]  (e*A)

with chi a learned value per species (its electronegativity, in effect), so the dipole
of a neutral molecule does not depend on the origin of r, and mu rotates as a vector
(q_i are invariant, p_i are vectors). The atomic dipoles p_i read the l = 1 features that
enter the last layer, not those it puts out: the energy needs only the last layer's l = 0
outputs, and its l = 1 outputs would double the cost of a call (ethanol-gfn2), while
these are computed anyway (and fit GFN2-xTB's dipoles as well, 8.2 against 8.2 me*A). Q_b is ``Graph.charge``
(``atoms.info["charge"]``), 0 where not given.

E_i is measured from the readout of the same species without neighbours, so an
isolated atom has E = shift + E0[Z] exactly (E0 are isolated-atom energies).

Every stage is equivariant (see :mod:`tfn_md.nn.convolution`), so E is
invariant and v rotates as a vector under rotations of the input. Build a
model in one line, e.g. ``TFN(species=["H", "C", "O"], channels=32, l_max=2,
layers=2, cutoff=5.0)``; its dtype follows ``.to(dtype)``.
"""

import copy
from dataclasses import asdict, dataclass, field

import torch
from ase.data import atomic_numbers, chemical_symbols
from torch import Tensor, nn

from . import keys
from .graph import Graph
from .nn import (
    BesselBasis,
    Edges,
    GaussianBasis,
    NormNonlinearity,
    SelfInteraction,
    TFNConvolution,
    polynomial_envelope,
)
from .nn.edge_kernel import tracing_for_compiler
from .nn.radial_table import tabulate
from .nn.repulsion import wall_pair_energy, zbl_pair_energy
from .receptive import ReceptiveField
from .so3 import l2_to_matrix, spherical_harmonics

__all__ = ["TFN", "TFNConfig", "neutral_charges_and_dipole"]

# real basis (y, z, x) of l = 1 -> Cartesian (x, y, z)
L1_TO_XYZ = [2, 0, 1]


def neutral_charges_and_dipole(raw: Tensor, vectors: Tensor, positions: Tensor, batch: Tensor,
                               n_graphs: int, charge: Tensor | None) -> tuple[Tensor, Tensor]:
    """q_i = q~_i - (sum_{j in b} q~_j - Q_b) / N_b [n] and mu_b = sum_{i in b} q_i r_i + v_i
    [n_graphs, 3] from raw charges q~ [n] (any constant shift per structure gives the same
    q), per-atom vectors v [n, 3], positions r [n, 3], ``batch`` [n] and the total charges
    Q [n_graphs] (None: 0)."""
    counts = torch.bincount(batch, minlength=n_graphs).clamp(min=1).to(raw.dtype)
    excess = raw.new_zeros(n_graphs).index_add_(0, batch, raw)
    if charge is not None:
        excess = excess - charge.to(raw.dtype)
    q = raw - (excess / counts)[batch]
    per_atom = q[:, None] * positions + vectors  # [n, 3]
    return q, per_atom.new_zeros(n_graphs, 3).index_add_(0, batch, per_atom)


@dataclass
class TFNConfig:
    """Hyperparameters of :class:`TFN` (JSON-able; stored in every checkpoint).

    cutoff: neighbour cutoff in A, or None for the paper's all-pairs graph
      (self-pair included; use with ``basis="gaussian"``).
    basis: "bessel" (with the smooth polynomial envelope) or "gaussian" (paper).
    readout_l_max: highest order kept by the last layer (1 for energy + vectors).
    n_scalar_inputs: per-atom scalars (``Graph.node_scalars``, e.g. masses) fed to
      the embedding beside the species one-hot.
    last_nonlinearity: False leaves the last layer linear in its convolution
      (the paper's gravity and inertia tasks have exactly linear solutions).
    zbl: add the ZBL screened nuclear repulsion inside covalent distances (a prior
      against atomic collapse; see :mod:`tfn_md.nn.repulsion`).
    energy_heads: K energy readouts on the shared features (a shallow ensemble,
      :mod:`tfn_md.inference.uncertainty`); the energy is their mean, the spread of their
      forces the force uncertainty.
    llpr: the model holds ``readout_covariance`` C [c, c], the calibrated last-layer
      prediction rigidity of the energy readout (:mod:`tfn_md.inference.uncertainty`):
      the energy uncertainty sigma_E = sqrt(f^T C f). Set by
      :meth:`TFN.set_readout_covariance`.
    wall: the model holds ``wall_radius`` [S, S], per species pair the shortest distance
      of its training data, and adds a repulsive wall inside it
      (:func:`tfn_md.nn.repulsion.wall_pair_energy`; zero on every training structure).
      Set by :meth:`TFN.set_wall_radius`.
    dipole: a charge readout and an atomic-dipole readout: atomic charges (summing to the
      structure's charge) and the dipole mu = sum_i q_i r_i + p_i (module docstring),
      with every call, at the cost of two linear readouts.
    """

    species: list[str]
    channels: int = 32
    l_max: int = 2
    layers: int = 2
    cutoff: float | None = 5.0
    n_basis: int = 8
    basis: str = "bessel"
    radial_hidden: int = 64
    envelope_p: int = 6
    avg_num_neighbors: float = 1.0
    residual: bool = True
    readout_l_max: int = 1
    gaussian_range: list[float] = field(default_factory=lambda: [0.0, 5.0])
    zbl: bool = False
    n_scalar_inputs: int = 0
    last_nonlinearity: bool = True
    energy_heads: int = 1
    llpr: bool = False
    wall: bool = False
    dipole: bool = False

    def __post_init__(self):
        from .validation import check_bool, check_int, check_real, check_species

        self.species = check_species("species", self.species)
        for name, low in (("channels", 1), ("layers", 1), ("n_basis", 1), ("radial_hidden", 1),
                          ("envelope_p", 1), ("readout_l_max", 0), ("n_scalar_inputs", 0),
                          ("energy_heads", 1)):
            check_int(name, getattr(self, name), low)
        check_int("l_max", self.l_max, 0, 8)
        if self.cutoff is not None:
            self.cutoff = check_real("cutoff", self.cutoff, 0.0, strict=True, unit="Angstrom")
        check_real("avg_num_neighbors", self.avg_num_neighbors, 0.0, strict=True)
        for name in ("residual", "zbl", "last_nonlinearity", "llpr", "wall", "dipole"):
            check_bool(name, getattr(self, name))
        if self.dipole and (self.l_max < 1 or self.layers < 2):
            raise ValueError("dipole=True needs l = 1 features entering the last layer: "
                             f"l_max >= 1 and layers >= 2 (got {self.l_max}, {self.layers})")
        low_high = list(self.gaussian_range) if hasattr(self.gaussian_range, "__len__") else []
        if len(low_high) != 2 or check_real("gaussian_range[0]", low_high[0], 0.0) >= check_real(
            "gaussian_range[1]", low_high[1], 0.0
        ):
            raise ValueError(f"gaussian_range = {self.gaussian_range!r} is not allowed: "
                             "[low, high] with 0 <= low < high (Angstrom)")
        if self.cutoff is None and self.basis == "bessel":
            raise ValueError("the Bessel basis needs a cutoff; use basis='gaussian' for all pairs")
        for name in ("zbl", "wall"):
            if getattr(self, name) and self.cutoff is None:
                raise ValueError(f"{name}=True needs a cutoff")
        if self.basis not in ("bessel", "gaussian"):
            raise ValueError(f"basis must be 'bessel' or 'gaussian', got {self.basis!r}")


class TFN(nn.Module):
    """Tensor Field Network potential. See the module docstring and :class:`TFNConfig`."""

    def __init__(self, species: list[str], **kwargs):
        super().__init__()
        cfg = self.config = TFNConfig(species=list(species), **kwargs)
        n_species, c = len(cfg.species), cfg.channels
        z_to_index = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        for k, s in enumerate(cfg.species):
            z_to_index[atomic_numbers[s]] = k
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        species_z = torch.tensor([atomic_numbers[s] for s in cfg.species])
        self.register_buffer("species_z", species_z, persistent=False)
        self.embedding = nn.Linear(n_species + cfg.n_scalar_inputs, c, bias=False)
        if cfg.basis == "bessel":
            self.basis = BesselBasis(cfg.n_basis, cfg.cutoff)
        else:
            self.basis = GaussianBasis(cfg.n_basis, *cfg.gaussian_range)
        self.convolutions = nn.ModuleList()
        self.self_interactions = nn.ModuleList()
        self.nonlinearities = nn.ModuleList()
        l_in = 0
        for k in range(cfg.layers):
            l_out = cfg.l_max if k < cfg.layers - 1 else min(cfg.l_max, cfg.readout_l_max)
            conv = TFNConvolution(
                c, l_in, cfg.l_max, l_out, cfg.n_basis, cfg.radial_hidden, cfg.avg_num_neighbors
            )
            self.convolutions.append(conv)
            self.self_interactions.append(SelfInteraction(conv.out_channels, c))
            last = k == cfg.layers - 1
            linear = last and not cfg.last_nonlinearity
            self.nonlinearities.append(nn.Identity() if linear else NormNonlinearity(c, l_out))
            l_in = l_out
        self.l_last = l_in
        self.energy_readout = nn.Linear(c, cfg.energy_heads, bias=False)  # K heads
        self.vector_readout = nn.Linear(c, 1, bias=False) if self.l_last >= 1 else None
        self.tensor_readout = nn.Linear(c, 2, bias=False) if self.l_last >= 2 else None
        self.charge_readout = nn.Linear(c, 1, bias=False) if cfg.dipole else None
        if cfg.dipole:
            self.charge_bias = nn.Parameter(torch.zeros(n_species))  # chi [S], e
            self.dipole_readout = nn.Linear(c, 1, bias=False)  # w_p
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("shift", torch.tensor(0.0))
        self.register_buffer("e0", torch.zeros(n_species))
        if cfg.llpr:
            self.register_buffer("readout_covariance", torch.zeros(c, c))
        if cfg.wall:
            self.register_buffer("wall_radius", torch.zeros(n_species, n_species))

    def set_readout_covariance(self, covariance: Tensor) -> None:
        """Give the model the energy uncertainty sigma_E = sqrt(f^T C f) (``llpr``), C [c, c]
        symmetric positive semi-definite (:func:`tfn_md.train.uncertainty.calibrate_llpr`)."""
        c = self.config.channels
        covariance = torch.as_tensor(covariance, dtype=self.e0.dtype, device=self.e0.device)
        if covariance.shape != (c, c) or not torch.isfinite(covariance).all():
            raise ValueError(f"readout covariance must be a finite [{c}, {c}] matrix")
        self.config.llpr = True
        self.register_buffer("readout_covariance", 0.5 * (covariance + covariance.T))

    def set_wall_radius(self, radius: Tensor) -> None:
        """Give the model the repulsive wall (``wall``) inside ``radius`` [S, S] (A, symmetric;
        0 for a pair without one)."""
        s = len(self.species)
        radius = torch.as_tensor(radius, dtype=self.e0.dtype, device=self.e0.device)
        if radius.shape != (s, s) or not torch.isfinite(radius).all() or (radius < 0).any():
            raise ValueError(f"wall radii must be a finite, non-negative [{s}, {s}] matrix")
        self.config.wall = True
        self.register_buffer("wall_radius", torch.maximum(radius, radius.T))

    def energy_uncertainty(self, pooled: Tensor) -> Tensor:
        """sigma_E [B] (eV) of pooled readout inputs f [B, c] (``llpr`` models)."""
        return torch.einsum("bc,cd,bd->b", pooled, self.readout_covariance, pooled).clamp(
            min=0).sqrt()

    @property
    def species(self) -> list[str]:
        return self.config.species

    @property
    def cutoff(self) -> float | None:
        return self.config.cutoff

    def config_dict(self) -> dict:
        return asdict(self.config)

    def species_index(self, numbers: Tensor) -> Tensor:
        """Atomic numbers [n] -> model species indices [n]; unknown elements raise ValueError."""
        if numbers.numel() and (numbers.min() < 1 or numbers.max() >= len(chemical_symbols)):
            raise ValueError(f"invalid atomic numbers {numbers.unique().tolist()}")
        idx = self.z_to_index[numbers]
        if (idx < 0).any():
            bad = sorted({chemical_symbols[z] for z in numbers[idx < 0].tolist()})
            raise ValueError(
                f"element(s) {bad} not known to this model (species: {self.config.species})"
            )
        return idx

    def edge_vectors(self, graph: Graph) -> Tensor:
        """r_ij = x_j - x_i + S_ij · cell  [E, 3]."""
        i, j = graph.edge_index
        if graph.n_graphs == 1:
            offset = graph.shifts @ graph.cell[0]
        else:
            offset = torch.einsum("ek,ekl->el", graph.shifts, graph.cell[graph.batch[i]])
        return graph.positions[j] - graph.positions[i] + offset

    def edges(self, graph: Graph) -> Edges:
        """The per-edge inputs of the convolutions (lengths, harmonics; basis and envelope
        unless every convolution reads a radial table)."""
        return self.edges_from_vectors(graph.edge_index, self.edge_vectors(graph))

    def edges_from_vectors(self, edge_index: Tensor, vec: Tensor) -> Edges:
        """:meth:`edges` from the edge vectors r_ij [E, 3] themselves."""
        cfg = self.config
        length = torch.linalg.vector_norm(vec, dim=-1)  # [E]
        sh = spherical_harmonics(vec, cfg.l_max)  # [E, (l_max+1)^2]
        if self.tabulated:
            return Edges(edge_index, length, sh, None, None)
        basis = self.basis(length)  # [E, n_basis]
        envelope = (polynomial_envelope(length, cfg.cutoff, cfg.envelope_p)
                    if cfg.basis == "bessel" else None)
        return Edges(edge_index, length, sh, basis, envelope)

    def _interactions(self, x: Tensor, edges: Edges | list[Edges], scalars_only: bool = False,
                      field: ReceptiveField | None = None, inputs: list | None = None) -> Tensor:
        """The TFN layers: [n, c, 1] species features -> [n, c, (l_last+1)^2]
        (-> [n, c, 1] with ``scalars_only``: the last layer computes only l = 0 outputs).
        With a receptive ``field`` (atoms and edges in its order), layer k computes only
        the first field.n_atoms[k] atoms from ``edges[k-1]`` (one Edges per layer: the first
        field.n_edges[k-1] edges), and the result is [field.n_atoms[-1], c, D]. ``inputs``:
        a list that receives the last layer's input features [n, c, (l_max+1)^2]."""
        last = len(self.convolutions) - 1
        layers = zip(self.convolutions, self.self_interactions, self.nonlinearities)
        for k, (conv, si, nl) in enumerate(layers):
            l_out = 0 if scalars_only and k == last else None
            n_out, layer_edges = None, edges
            if field is not None:
                n_out, layer_edges = field.n_atoms[k + 1], edges[k]
            if inputs is not None and k == last:
                inputs.append(x)
            h = nl(si(conv(x, layer_edges, l_out, n_out)))  # [n_out, c, D_out]
            if self.config.residual:
                d = min(x.shape[-1], h.shape[-1])
                h = torch.cat([h[..., :d] + x[: h.shape[0], :, :d], h[..., d:]], dim=-1)
            x = h
        return x

    def embed(self, graph: Graph, species: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Species (and optional scalar inputs) -> (features [n, c, 1], species index [n]).
        ``species``: the indices already checked by :meth:`species_index`."""
        if species is None:
            species = self.species_index(graph.numbers)
        if not self.config.n_scalar_inputs:  # one-hot @ W^T is a column lookup
            return self.embedding.weight.T[species][:, :, None], species
        dtype = self.e0.dtype
        attrs = nn.functional.one_hot(species, len(self.config.species)).to(dtype)  # [n, S]
        if graph.node_scalars is None:
            raise ValueError(
                f"this model needs {self.config.n_scalar_inputs} per-atom scalar inputs "
                "(Graph.node_scalars)"
            )
        attrs = torch.cat([attrs, graph.node_scalars.to(dtype)], dim=1)
        return self.embedding(attrs)[:, :, None], species

    def features(self, graph: Graph, scalars_only: bool = False,
                 species: Tensor | None = None, inputs: list | None = None
                 ) -> tuple[Tensor, Tensor, Edges]:
        """The TFN layers on ``graph``: (features [n, c, (l_last+1)^2], species index [n],
        edges). ``scalars_only``: only the l = 0 features of the last layer ([n, c, 1]).
        ``inputs``: a list that receives the last layer's input features."""
        x0, species = self.embed(graph, species)
        edges = self.edges(graph)
        return self._interactions(x0, edges, scalars_only, inputs=inputs), species, edges

    def isolated_features(self, scalars_only: bool = False,
                          graph: Graph | None = None) -> Tensor:
        """Features of atoms without neighbours: one row per species [S, c, D] (they depend
        only on the weights), or per atom of ``graph`` [n, c, D] for models with per-atom
        scalar inputs."""
        if self.config.n_scalar_inputs:
            x0, _ = self.embed(graph)
        else:
            x0 = self.embedding.weight.T[:, :, None]  # [S, c, 1]
        empty = x0.new_zeros(0)
        no_edges = Edges(torch.zeros(2, 0, dtype=torch.long, device=x0.device), empty,
                         x0.new_zeros(0, (self.config.l_max + 1) ** 2),
                         x0.new_zeros(0, self.config.n_basis), empty)
        return self._interactions(x0, no_edges, scalars_only)

    @property
    def tabulated(self) -> bool:
        """True when every convolution reads tabulated radial functions (see :meth:`tabulate`)."""
        return all(conv.table is not None for conv in self.convolutions)

    def tabulate(self, tol: float = 1e-7) -> bool:
        """Replace each convolution's radial MLP, for inference, by cubic Hermite splines of
        the same functions of r (:mod:`tfn_md.nn.radial_table`), on grids fine enough that
        value and slope deviate by at most ``tol`` relative to their largest magnitude.
        Needs a cutoff; returns False (and leaves the MLP) where no grid meets ``tol``.
        Parameters changed afterwards (training) are not seen by the tables: call
        :meth:`untabulate` first."""
        cfg = self.config
        if cfg.cutoff is None:
            return False
        tables = []
        basis = copy.deepcopy(self.basis).double()
        for conv in self.convolutions:
            radial = copy.deepcopy(conv.radial).double()

            def fn(r, radial=radial, basis=basis):
                w = radial(basis(r)).flatten(1)  # [N, P c]
                if cfg.basis == "bessel":
                    w = w * polynomial_envelope(r, cfg.cutoff, cfg.envelope_p)[:, None]
                return w

            table = tabulate(fn, cfg.cutoff, tol)
            if table is None:
                return False
            tables.append(table[:2])
        for conv, table in zip(self.convolutions, tables):
            conv.set_table(table)
        return True

    def untabulate(self) -> None:
        """Back to the radial MLPs (exact; needed for training)."""
        for conv in self.convolutions:
            conv.set_table(None)

    def _head_energies(self, x: Tensor, species: Tensor, edges: Edges, isolated: Tensor,
                       per_species: bool = True) -> Tensor:
        """E_i of each energy head [n, K] from the last features x [n, c, D] of the first n
        atoms of ``species`` (measured from the isolated atom's features ``isolated``, per
        species [S, c, D] if ``per_species`` and the model has no scalar inputs, else per
        atom [n, c, D]), plus the ZBL and wall pair energies of ``edges`` (centres among the
        n atoms) where the model has them, the same for every head."""
        all_species, species = species, species[: x.shape[0]]
        if per_species and not self.config.n_scalar_inputs:
            isolated = isolated[species]
        # energy relative to the same atom without neighbours: a lone atom has shift + E0
        e_atom = self.energy_readout(x[..., 0] - isolated[..., 0])  # [n, K]
        heads = self.scale * e_atom + (self.shift + self.e0[species])[:, None]  # [n, K]
        if self.config.zbl or self.config.wall:
            i, j = edges.index
            si, sj = all_species[i], all_species[j]
            pair = 0.0
            if self.config.zbl:
                pair = zbl_pair_energy(self.species_z[si], self.species_z[sj], edges.length)
            if self.config.wall:
                pair = pair + wall_pair_energy(edges.length, self.wall_radius[si, sj])  # [E]
            heads = heads.index_add(0, i, pair[:, None].expand(-1, heads.shape[1]))
        return heads

    def _atom_energies(self, x: Tensor, species: Tensor, edges: Edges,
                       isolated: Tensor) -> Tensor:
        """E_i [n]: the mean of :meth:`_head_energies` (the one head if K = 1)."""
        return self._head_energies(x, species, edges, isolated).mean(-1)

    def local_energies(self, species: Tensor, vectors: Tensor, field: ReceptiveField,
                       isolated: Tensor | None = None) -> Tensor:
        """Energies E_i [field.n_atoms[-1]] of the target atoms of a receptive field
        (:func:`tfn_md.receptive.receptive_field`), each computed on its whole neighbourhood
        but with every layer restricted to the atoms and edges it needs: what a LAMMPS rank
        evaluates for its own atoms among its ghosts. ``species`` [n_kept] (checked indices)
        and ``vectors`` r_ij [E_kept, 3] are those of the kept atoms and edges, in the
        field's order (``species[field.atoms]``, ``vectors[field.edges]`` of the original
        numbering); ``isolated``: :meth:`isolated_features` with ``scalars_only``. Equal to
        ``forward(graph)["energies"][:n_targets]`` where every atom within ``layers`` edges
        of a target has all its neighbours in the graph."""
        if self.config.n_scalar_inputs:
            raise ValueError("local_energies needs a model without per-atom scalar inputs")
        x0 = self.embedding.weight.T[species][:, :, None]  # [n_kept, c, 1]
        if tracing_for_compiler():  # separate tensors per layer: Inductor fuses each
            # layer's table lookups into its kernels (prefix views of shared ones it
            # writes out whole: 3x slower)
            edges = [self.edges_from_vectors(field.edge_index[:, :m], vectors[:m])
                     for m in field.n_edges]
        else:
            whole = self.edges_from_vectors(field.edge_index, vectors)
            edges = [whole.head(m) for m in field.n_edges]
        x = self._interactions(x0, edges, scalars_only=True, field=field)
        if isolated is None:
            isolated = self.isolated_features(scalars_only=True)
        return self._atom_energies(x, species, edges[-1], isolated)

    def _charges_and_dipole(self, graph: Graph, scalars: Tensor, last_input: Tensor,
                            species: Tensor) -> dict:
        """Charges q [n] (e), atomic dipoles p [n, 3] and dipoles mu [n_graphs, 3] (e*A)
        from the last l = 0 features measured from the isolated atom's [n, c], the last
        layer's input features [n, c, D] and the species indices [n] (module docstring)."""
        raw = self.charge_readout(scalars).squeeze(-1) + self.charge_bias[species]  # [n]
        p = self.dipole_readout(last_input[..., 1:4].transpose(1, 2)).squeeze(-1)  # (y, z, x)
        p = p[:, L1_TO_XYZ]
        q, mu = neutral_charges_and_dipole(raw, p, graph.positions, graph.batch,
                                           graph.n_graphs, graph.charge)
        return {keys.CHARGES: q, keys.ATOM_DIPOLES: p, keys.DIPOLE: mu}

    def forward(self, graph: Graph, energy_only: bool = False, species: Tensor | None = None,
                isolated: Tensor | None = None) -> dict[str, Tensor]:
        """Per-atom energies [n], total energy [n_graphs], per-atom vectors [n, 3]
        (and symmetric tensors [n, 3, 3] when the last layer keeps l = 2); with a dipole
        head, also with ``energy_only``: charges [n], atomic dipoles [n, 3], dipoles
        [n_graphs, 3].
        ``energy_only``: energies alone, the last layer computing only its l = 0 outputs
        (the same energies, for a fraction of that layer's cost). ``species``: indices
        already checked by :meth:`species_index`; ``isolated``: :meth:`isolated_features`
        computed once (inference: they depend only on the weights)."""
        inputs = [] if self.config.dipole else None
        x, species, edges = self.features(graph, energy_only, species, inputs)
        if isolated is None:
            isolated = self.isolated_features(energy_only, graph)
        if not self.config.n_scalar_inputs:
            isolated = isolated[species]
        heads = self._head_energies(x, species, edges, isolated, per_species=False)  # [n, K]
        energies = heads.mean(-1)  # [n]: the ensemble mean (the one head if K = 1)
        energy = energies.new_zeros(graph.n_graphs).index_add_(0, graph.batch, energies)
        out = {keys.ENERGIES: energies, keys.ENERGY: energy}
        if self.config.energy_heads > 1 or self.config.llpr:  # readout inputs [n, c]
            out[keys.READOUT_INPUTS] = x[..., 0] - isolated[..., 0]
        if self.config.energy_heads > 1:  # per head [n, K], [n_graphs, K]
            out[keys.ENERGIES_HEADS] = heads
            out[keys.ENERGY_HEADS] = heads.new_zeros(graph.n_graphs, heads.shape[1]).index_add_(
                0, graph.batch, heads)
        if self.charge_readout is not None:  # two linear readouts: with every call
            out.update(self._charges_and_dipole(graph, x[..., 0] - isolated[..., 0],
                                                inputs[0], species))
        if energy_only:
            return out
        if self.vector_readout is not None:
            v = self.vector_readout(x[..., 1:4].transpose(1, 2)).squeeze(-1)  # [n, 3] (y, z, x)
            out[keys.VECTORS] = v[:, L1_TO_XYZ]
        if self.tensor_readout is not None:
            w0, w2 = self.tensor_readout.weight  # [c] each: separate l = 0 and l = 2 weights
            t0 = x[..., 0] @ w0  # [n]
            t2 = torch.einsum("ncm,c->nm", x[..., 4:9], w2)  # [n, 5]
            eye = torch.eye(3, dtype=t0.dtype, device=t0.device)
            out[keys.TENSORS] = t0[:, None, None] * eye + l2_to_matrix(t2)
        return out
