"""The ensembles of ``tfn-md md``: names (scripts rely on them) -> ASE's integrators.

=================  ============================================  ==========================
name               ASE integrator                                samples
=================  ============================================  ==========================
``nve``            ``VelocityVerlet``                            NVE (E_tot conserved)
``nvt-langevin``   ``Langevin`` (friction gamma, 1/fs)           NVT
``nvt-bussi``      ``Bussi`` (stochastic velocity rescaling,     NVT
                   time constant ``tdamp``)
``nvt-nhc``        ``NoseHooverChainNVT`` (3 thermostats,        NVT
                   ``tdamp``)
``npt-mtk``        ``IsotropicMTKNPT`` (Martyna-Tobias-Klein:    NPT, cell shape fixed,
                   NHC thermostat ``tdamp``, barostat ``pdamp``) volume fluctuates
``npt-mtk-full``   ``MTKNPT`` (as above, every cell component)   NPT, whole cell fluctuates
=================  ============================================  ==========================

Degrees of freedom: the global thermostats (Bussi, Nose-Hoover, MTK) act on the kinetic
energy of all 3N Cartesian momenta, the centre-of-mass momentum included (ASE's
implementations count 3N), so their runs keep the centre-of-mass momentum that the
Maxwell-Boltzmann draw gives; zeroing it would leave 3N - 3 degrees of freedom that the
thermostat drives to the temperature of 3N (+12 % for ethanol). NVE and Langevin runs start
with zero total momentum.

Units at this interface: timestep, ``tdamp`` and ``pdamp`` in fs, friction in 1/fs,
temperature in K, pressure in GPa (positive compresses).
"""

import numpy as np
from ase import Atoms, units

__all__ = ["ENSEMBLES", "GLOBAL_THERMOSTATS", "check_ensemble", "make_dynamics"]

ENSEMBLES = ("nve", "nvt-langevin", "nvt-bussi", "nvt-nhc", "npt-mtk", "npt-mtk-full")
GLOBAL_THERMOSTATS = ("nvt-bussi", "nvt-nhc", "npt-mtk", "npt-mtk-full")


def check_ensemble(atoms: Atoms, ensemble: str, pressure: float | None,
                   friction: float | None) -> None:
    """Clear errors for settings that do not fit the ensemble or the structure."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}: choose one of {', '.join(ENSEMBLES)}")
    if ensemble.startswith("npt"):
        if not atoms.pbc.all():
            raise ValueError(f"{ensemble} needs a structure periodic in all three directions "
                             f"(pbc is {atoms.pbc.tolist()}): a barostat changes the cell")
    elif pressure is not None:
        raise ValueError(f"a pressure was given but {ensemble} keeps the volume: use npt-mtk "
                         "or npt-mtk-full")
    if friction is not None and ensemble != "nvt-langevin" and not (
            ensemble == "nve" and friction == 0):
        raise ValueError(f"a friction was given but {ensemble} is not nvt-langevin")
    if ensemble == "nvt-langevin" and friction is not None and not friction > 0:
        raise ValueError(f"nvt-langevin needs a friction > 0 (got {friction}); a friction of "
                         "0 is NVE: --ensemble nve")


def make_dynamics(atoms: Atoms, ensemble: str, timestep: float, temperature: float,
                  friction: float | None = None, pressure: float | None = None,
                  tdamp: float = 100.0, pdamp: float = 1000.0,
                  rng: np.random.Generator | None = None):
    """The ASE dynamics object of ``ensemble`` on ``atoms`` (see the module docstring).

    ``friction`` defaults to 0.01 1/fs, ``pressure`` to 0 GPa. Every argument is checked
    (:func:`check_ensemble`); the thermostat's internal variables start at zero.
    """
    from ase.md.bussi import Bussi
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT, NoseHooverChainNVT
    from ase.md.verlet import VelocityVerlet

    check_ensemble(atoms, ensemble, pressure, friction)
    for name, value in (("timestep", timestep), ("tdamp", tdamp), ("pdamp", pdamp)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 fs (got {value})")
    if ensemble != "nve" and not temperature > 0:
        raise ValueError(f"{ensemble} needs a temperature > 0 K (got {temperature})")
    dt = timestep * units.fs
    if ensemble == "nve":
        return VelocityVerlet(atoms, dt)
    if ensemble == "nvt-langevin":
        gamma = 0.01 if friction is None else friction
        return Langevin(atoms, dt, temperature_K=temperature, friction=gamma / units.fs,
                        rng=rng, fixcm=False)
    if ensemble == "nvt-bussi":
        return Bussi(atoms, dt, temperature_K=temperature, taut=tdamp * units.fs, rng=rng)
    if ensemble == "nvt-nhc":
        return NoseHooverChainNVT(atoms, dt, temperature_K=temperature,
                                  tdamp=tdamp * units.fs)
    barostat = IsotropicMTKNPT if ensemble == "npt-mtk" else MTKNPT
    return barostat(atoms, dt, temperature_K=temperature,
                    pressure_au=(pressure or 0.0) * units.GPa, tdamp=tdamp * units.fs,
                    pdamp=pdamp * units.fs)
