"""Vibrational spectra from MD: the IR spectrum from the dipole, the vibrational density of
states (VDOS) from the velocities.

For a series x(t_k), t_k = k dt (k < n), the autocorrelation C(tau) = <x(t) . x(t + tau)>
(averaged over t, the unbiased estimate up to ``max_lag``) is computed by FFT with zero
padding; it is multiplied by a Hann window w(tau) = cos^2(pi tau / (2 tau_max)) and
transformed: S(nu) = dt [C(0) + 2 sum_{tau > 0} w(tau) C(tau) cos(2 pi nu tau)].

* IR: x = d mu/dt, the time derivative of the dipole mu [3] (e*A). The derivative is taken
  in frequency space: the spectrum of d mu/dt is (2 pi nu)^2 times that of mu, exactly (no
  finite-difference damping of high frequencies). Classically the absorption coefficient
  alpha(nu) n(nu) is proportional to S_mudot(nu); the optional harmonic quantum correction
  multiplies it by beta h nu / (1 - exp(-beta h nu)) (``temperature``).
* VDOS: x = sqrt(m_i) v_i, summed over atoms (mass-weighted velocity autocorrelation).

Several trajectories (the same frame spacing) are averaged spectrum by spectrum. Wavenumbers
in cm^-1 (nu / c). Intensities are in arbitrary units, each spectrum normalised to unit
area over the range it returns (the IR spectrum in absolute units with ``normalise=False``).

Aliasing: a frame spacing dt folds every frequency above the Nyquist frequency
1 / (2 dt) back into the spectrum. Molecular dipoles carry overtones and combination bands
up to about 8000 cm^-1 (twice an O-H stretch); for none of them to fold below 4000 cm^-1
the Nyquist frequency must be >= 6000 cm^-1, and frames are then refused beyond
``MAX_SPACING_FS`` = 2 fs (Nyquist 8339 cm^-1): ``tfn-md md --timestep 0.5 --interval 4``
or closer.
"""

from pathlib import Path

import numpy as np
from ase import units
from ase.io import read

__all__ = ["MAX_SPACING_FS", "autocorrelation_spectrum", "ir_spectrum", "read_series",
           "spectra", "vdos"]

MAX_SPACING_FS = 2.0
C_CM_PER_FS = 2.99792458e-5  # speed of light, cm/fs: nu (1/fs) / c = wavenumber (cm^-1)
HC_OVER_KB = 1.438776877  # cm K: h c / k_B


def _check_spacing(dt_fs: float) -> None:
    if not dt_fs > 0:
        raise ValueError(f"frame spacing {dt_fs} fs: must be > 0")
    if dt_fs > MAX_SPACING_FS + 1e-9:
        nyquist = 1.0 / (2 * dt_fs * C_CM_PER_FS)
        raise ValueError(
            f"frames {dt_fs:g} fs apart: the Nyquist frequency is {nyquist:.0f} cm^-1, so "
            f"overtones would fold into the spectrum below 4000 cm^-1; write a frame at "
            f"least every {MAX_SPACING_FS:g} fs (tfn-md md --interval, e.g. --timestep 0.5 "
            "--interval 4)")


def autocorrelation_spectrum(x: np.ndarray, dt_fs: float, max_lag_fs: float | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(wavenumbers [m] cm^-1, S [m]) of a series ``x`` [n, d] (components summed) with
    frames ``dt_fs`` apart; ``max_lag_fs`` (default: a third of the series) is the window."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = len(x)
    if n < 8:
        raise ValueError(f"{n} frames: too few for a spectrum (at least 8)")
    if not np.isfinite(x).all():
        raise ValueError("the series has non-finite values")
    lag = n // 3 if max_lag_fs is None else round(max_lag_fs / dt_fs)
    lag = max(2, min(lag, n - 1))
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x - x.mean(0), size, axis=0)
    acf = np.fft.irfft((f * f.conj()).real.sum(1), size)[:lag] / (n - np.arange(lag))
    acf *= np.cos(0.5 * np.pi * np.arange(lag) / lag) ** 2  # Hann window, 1 at tau = 0
    m = 4 * lag  # zero-padded: finer interpolated grid
    s = dt_fs * (2 * np.fft.rfft(acf, 2 * m).real - acf[0])
    freq_per_fs = np.fft.rfftfreq(2 * m, dt_fs)
    return freq_per_fs / C_CM_PER_FS, s


def _normalise(wavenumber, s, up_to, normalise=True):
    keep = wavenumber <= up_to
    w, s = wavenumber[keep], np.clip(s[keep], 0.0, None)
    area = np.trapezoid(s, w) if normalise else 0.0
    return w, s / area if area > 0 else s


def ir_spectrum(dipoles: list[np.ndarray], dt_fs: float, temperature: float | None = None,
                max_lag_fs: float | None = None, up_to: float = 4000.0,
                normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """IR spectrum from dipole series (each [n_k, 3], e*A), averaged: (cm^-1 [m], I [m]).
    With ``normalise=False`` I is S_mudot itself, (e*A/fs)^2 fs: spectra of runs with the
    same frame spacing and window then compare in absolute intensity."""
    _check_spacing(dt_fs)
    total, grid = None, None
    for mu in dipoles:
        w, s = autocorrelation_spectrum(mu, dt_fs, max_lag_fs)
        s = s * (2 * np.pi * w * C_CM_PER_FS) ** 2  # the spectrum of d mu / dt
        if grid is None:
            grid, total = w, np.zeros_like(s)
        total += np.interp(grid, w, s)
    s = total / len(dipoles)
    if temperature:
        x = HC_OVER_KB * grid / temperature  # beta h nu
        s = s * np.where(x > 0, x / -np.expm1(-np.where(x > 0, x, 1.0)), 1.0)
    return _normalise(grid, s, up_to, normalise)


def vdos(velocities: list[np.ndarray], masses: np.ndarray, dt_fs: float,
         max_lag_fs: float | None = None, up_to: float = 4000.0):
    """VDOS from velocity series (each [n_k, atoms, 3]), mass-weighted: (cm^-1, g)."""
    _check_spacing(dt_fs)
    total, grid = None, None
    for v in velocities:
        x = (np.sqrt(masses)[None, :, None] * v).reshape(len(v), -1)
        w, s = autocorrelation_spectrum(x, dt_fs, max_lag_fs)
        if grid is None:
            grid, total = w, np.zeros_like(s)
        total += np.interp(grid, w, s)
    return _normalise(grid, total / len(velocities), up_to)


def read_series(path: str | Path, dt_fs: float | None = None):
    """(dipoles [n, 3] or None, velocities [n, atoms, 3] (A/fs) or None, masses [atoms],
    frame spacing fs, n) of a trajectory of n frames. The spacing comes from the frames' ``time_fs`` (``tfn-md md`` writes
    it) unless ``dt_fs`` is given; the dipole from each frame's results (``dipole``, as ASE
    stores a calculator's) or ``info["dipole"]``."""
    frames = read(path, ":")
    if len(frames) < 8:
        raise ValueError(f"{path}: {len(frames)} frames, too few for a spectrum (at least 8)")
    if dt_fs is None:
        times = [f.info.get("time_fs") for f in frames]
        if any(t is None for t in times):
            raise ValueError(f"{path}: its frames carry no time_fs; give the frame spacing "
                             "(--dt FS)")
        steps = np.diff(np.asarray(times, dtype=float))
        if not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9):
            raise ValueError(f"{path}: frames are not evenly spaced in time")
        dt_fs = float(steps[0])

    def dipole(atoms):
        if atoms.calc is not None and "dipole" in atoms.calc.results:
            return atoms.calc.results["dipole"]
        return atoms.info.get("dipole")

    mus = [dipole(f) for f in frames]
    dipoles = None if any(m is None for m in mus) else np.array(mus, dtype=float)
    velocities = (np.array([f.get_velocities() * units.fs for f in frames])  # A/fs
                  if all(f.has("momenta") for f in frames) else None)
    return dipoles, velocities, frames[0].get_masses(), dt_fs, len(frames)


def spectra(paths: list[str | Path], dt_fs: float | None = None,
            temperature: float | None = None, max_lag_fs: float | None = None,
            up_to: float = 4000.0, normalise: bool = True) -> dict:
    """IR (where every trajectory has dipoles) and VDOS (where every one has momenta) of
    several trajectories, averaged: {"wavenumber_cm-1", "ir", "vdos", "dt_fs", "frames"}."""
    if not paths:
        raise ValueError("no trajectories given")
    series = [read_series(p, dt_fs) for p in paths]
    spacings = {round(s[3], 9) for s in series}
    if len(spacings) > 1:
        raise ValueError(f"the trajectories have different frame spacings {sorted(spacings)} "
                         "fs: average only runs written alike")
    dt = series[0][3]
    _check_spacing(dt)
    out: dict = {"dt_fs": dt, "frames": [s[4] for s in series]}
    if all(s[0] is not None for s in series):
        out["wavenumber_cm-1"], out["ir"] = ir_spectrum([s[0] for s in series], dt,
                                                        temperature, max_lag_fs, up_to,
                                                        normalise)
    if all(s[1] is not None for s in series):
        w, g = vdos([s[1] for s in series], series[0][2], dt, max_lag_fs, up_to)
        out.setdefault("wavenumber_cm-1", w)
        out["vdos"] = np.interp(out["wavenumber_cm-1"], w, g)
    if "ir" not in out and "vdos" not in out:
        raise ValueError("the trajectories have neither dipoles nor momenta: nothing to "
                         "compute (a potential with a dipole head writes dipoles; tfn-md md "
                         "writes momenta)")
    return out
