"""Spectra from MD (tfn_md.ase.spectra, tfn-md spectrum): the peak of a harmonic signal at
its frequency, averaging, the quantum correction, and refusals."""

import numpy as np
import pytest
from ase import Atoms, units
from ase.io import write

from tfn_md.ase.spectra import C_CM_PER_FS, HC_OVER_KB, ir_spectrum, spectra, vdos
from tfn_md.cli import main

DT = 0.5  # fs


def oscillator(wavenumber, n=8000, dt=DT, amplitude=0.3, phase=0.4):
    """mu(t) = A cos(2 pi nu t + phase) e_x + a constant: [n, 3] e*A."""
    t = np.arange(n) * dt
    mu = np.zeros((n, 3)) + [0.1, -0.2, 0.5]
    mu[:, 0] += amplitude * np.cos(2 * np.pi * wavenumber * C_CM_PER_FS * t + phase)
    return mu


@pytest.mark.parametrize("wavenumber", [850.0, 1650.0, 3650.0])
def test_ir_peak_of_a_harmonic_dipole_is_at_its_frequency(wavenumber):
    w, s = ir_spectrum([oscillator(wavenumber)], DT)
    bin_width = w[1] - w[0]
    assert abs(w[np.argmax(s)] - wavenumber) <= bin_width
    assert np.trapezoid(s, w) == pytest.approx(1.0)


def test_two_bands_and_averaging_over_trajectories():
    mu = oscillator(1000.0) + oscillator(3000.0, amplitude=0.1, phase=1.0)
    w, s = ir_spectrum([mu, oscillator(1000.0, phase=2.0) + oscillator(3000.0, amplitude=0.1)], DT)
    peaks = [w[i] for i in range(1, len(s) - 1) if s[i] > s[i - 1] and s[i] >= s[i + 1]
             and s[i] > 0.05 * s.max()]
    assert len(peaks) == 2
    assert abs(peaks[0] - 1000.0) <= w[1] - w[0] and abs(peaks[1] - 3000.0) <= w[1] - w[0]
    # intensity ~ (amplitude * omega)^2: the 3000 band has (0.1 * 3)^2 / (0.3 * 1)^2 = 1 x
    band = lambda lo, hi: np.trapezoid(s[(w > lo) & (w < hi)], w[(w > lo) & (w < hi)])
    assert band(2800, 3200) / band(800, 1200) == pytest.approx(1.0, rel=0.05)


def test_quantum_correction_scales_by_the_harmonic_factor():
    mu = oscillator(500.0) + oscillator(3000.0, amplitude=0.05)
    w, classical = ir_spectrum([mu], DT)
    _, corrected = ir_spectrum([mu], DT, temperature=300.0)
    ratio = lambda s: s[np.argmin(abs(w - 3000))] / s[np.argmin(abs(w - 500))]
    qcf = lambda nu: (x := HC_OVER_KB * nu / 300.0) / -np.expm1(-x)
    assert ratio(corrected) / ratio(classical) == pytest.approx(qcf(3000) / qcf(500), rel=0.02)


def test_vdos_of_harmonic_velocities():
    n, nu = 6000, 1200.0
    t = np.arange(n) * DT
    v = np.zeros((n, 2, 3))
    v[:, 0, 1] = np.sin(2 * np.pi * nu * C_CM_PER_FS * t)
    w, g = vdos([v], np.array([1.0, 16.0]), DT)
    assert abs(w[np.argmax(g)] - nu) <= w[1] - w[0]


def test_aliasing_frame_spacing_is_refused():
    with pytest.raises(ValueError, match="Nyquist frequency is 6671 cm\\^-1"):
        ir_spectrum([oscillator(1000.0, dt=2.5)], 2.5)
    with pytest.raises(ValueError, match="at least every 2 fs"):
        vdos([np.zeros((100, 1, 3))], np.ones(1), 4.0)
    ir_spectrum([oscillator(1000.0, dt=2.0)], 2.0)  # 2 fs is allowed


def _trajectory(path, wavenumber, dt, n=2000, time=True):
    frames = []
    mu = oscillator(wavenumber, n=n, dt=dt)
    for k in range(n):
        a = Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
        a.set_velocities(np.full((2, 3), 0.01 * np.cos(k * 0.3)) / units.fs)
        a.info["dipole"] = mu[k]
        if time:
            a.info["time_fs"] = k * dt
        frames.append(a)
    write(path, frames)


def test_cli_writes_csv_and_plot(tmp_path, capsys):
    for i in range(2):
        _trajectory(tmp_path / f"run{i}.xyz", 1700.0, 1.0)
    assert main(["spectrum", str(tmp_path / "run0.xyz"), str(tmp_path / "run1.xyz"), "-o",
                 str(tmp_path / "ir")]) == 0
    table = np.loadtxt(tmp_path / "ir.csv", delimiter=",", skiprows=1)
    header = (tmp_path / "ir.csv").read_text().splitlines()[0]
    assert header == "wavenumber_cm-1,ir,vdos"
    assert abs(table[np.argmax(table[:, 1]), 0] - 1700.0) <= table[1, 0] - table[0, 0]
    assert (tmp_path / "ir.png").stat().st_size > 1000
    assert '"frame_spacing_fs": 1.0' in capsys.readouterr().out


def test_cli_errors_name_the_problem(tmp_path, capsys):
    _trajectory(tmp_path / "a.xyz", 1000.0, 1.0, n=50)
    _trajectory(tmp_path / "b.xyz", 1000.0, 0.5, n=50)
    _trajectory(tmp_path / "c.xyz", 1000.0, 0.5, n=50, time=False)
    assert main(["spectrum", str(tmp_path / "a.xyz"), str(tmp_path / "b.xyz")]) == 1
    assert "different frame spacings" in capsys.readouterr().err
    assert main(["spectrum", str(tmp_path / "c.xyz")]) == 1
    assert "--dt FS" in capsys.readouterr().err
    assert main(["spectrum", str(tmp_path / "c.xyz"), "--dt", "3"]) == 1
    assert "at least every 2 fs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="neither dipoles nor momenta"):
        write(tmp_path / "d.xyz", [Atoms("H", positions=[[0, 0, k]]) for k in range(10)])
        spectra([tmp_path / "d.xyz"], dt_fs=1.0)
