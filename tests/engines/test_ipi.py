"""``tfn-md ipi``: i-PI (from the ``ipi`` package, its ``i-pi`` script) runs path-integral
MD of ethanol against the driver (``tfn-md ipi`` in a subprocess), and the bead energies
i-PI writes match TFNCalculator on the bead positions i-PI writes; a periodic Cu cell
checks the virial; the CLI's input errors."""

import shutil
import subprocess
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

from tests.helpers import require_extra, triclinic_cu
from tfn_md import TFNCalculator
from tfn_md.cli import main
from tfn_md.engines import ipi as tfn_ipi

ipi = require_extra("ipi", "ipi")
from ipi.utils.units import unit_to_internal, unit_to_user

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ipi"
HARTREE_TO_EV = unit_to_user("energy", "electronvolt", 1.0)  # i-PI's own factor
#: i-PI writes format="ase" in ASE's units (CODATA 2014): back to the driver's eV/A
#: (i-PI's eV over i-PI's A)
ASE_FORCE = unit_to_internal("force", "ase", 1.0) / (tfn_ipi.EV_TO_HARTREE
                                                     / tfn_ipi.ANGSTROM_TO_BOHR)
TIMEOUT = 150  # s, for the whole i-PI run; a hang fails instead of blocking

INPUT = """<simulation verbosity="low" floatformat="%.16e">
  <output prefix="sim">
    <properties stride="1" filename="pots" flush="1">[ step, {properties} ]</properties>
    <trajectory filename="pos" stride="1" format="ase" cell_units="ase">positions{{ase}}</trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>7</seed></prng>
  <ffsocket name="tfn" mode="unix"><address>{socket}</address></ffsocket>
  <system>
    <initialize nbeads="{beads}">
      <file mode="{mode}">{structure}</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="tfn"/></forces>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">0.5</timestep>
        <thermostat mode="pile_l"><tau units="femtosecond">100</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""


@pytest.fixture(scope="module")
def ethanol_calc():
    """The reference: the shipped potential in float64, eager (loaded once per module)."""
    return TFNCalculator("ethanol-gfn2", dtype="float64", compile=False)


def _script(name: str) -> list[str]:
    path = Path(sys.executable).parent / name
    if path.exists():
        return [str(path)]
    found = shutil.which(name)
    if found:
        return [found]
    if name == "tfn-md":
        return [sys.executable, "-m", "tfn_md.cli"]
    pytest.skip(f"the {name} script is not installed")


def _unique_socket() -> str:
    return f"tfn-test-{uuid.uuid4().hex[:12]}"


def _run_ipi(tmp_path: Path, xml: str, socket_name: str, driver: list[str] | None = None,
             thread_driver=None) -> str:
    """Run i-PI on ``xml`` in ``tmp_path`` with a driver (a command, or a function run in a
    thread); both must finish within TIMEOUT, else both are killed and the socket file
    removed. Returns the driver's stdout (command)."""
    (tmp_path / "input.xml").write_text(xml)
    with open(tmp_path / "ipi.log", "w") as ipi_log:
        procs = [subprocess.Popen(_script("i-pi") + ["input.xml"], cwd=tmp_path,
                                  stdout=ipi_log, stderr=subprocess.STDOUT)]
    out = ""
    try:
        if driver is not None:
            procs.append(subprocess.Popen(driver, cwd=tmp_path, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
            out, err = procs[1].communicate(timeout=TIMEOUT)
            assert procs[1].returncode == 0, f"driver failed:\n{out}\n{err}"
        else:
            worker = threading.Thread(target=thread_driver, daemon=True)
            worker.start()
            worker.join(TIMEOUT)
            assert not worker.is_alive(), "driver thread still running"
        assert procs[0].wait(timeout=30) == 0, "i-PI failed"
    except BaseException:
        print((tmp_path / "ipi.log").read_text()[-3000:])
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        Path(tfn_ipi.UNIX_PREFIX + socket_name).unlink(missing_ok=True)
    return out


def test_units_are_ipis():
    assert tfn_ipi.EV_TO_HARTREE == unit_to_internal("energy", "electronvolt", 1.0)
    assert tfn_ipi.ANGSTROM_TO_BOHR == unit_to_internal("length", "angstrom", 1.0)


def _example_input(socket_name: str, beads: int, steps: int) -> str:
    """examples/ipi/input.xml with fewer beads and steps, another socket, and outputs of
    every step (bead energies in Hartree, full precision; bead positions in A and forces in
    eV/A, ASE's units)."""
    root = ET.parse(EXAMPLE / "input.xml").getroot()
    root.set("floatformat", "%.16e")
    root.find("total_steps").text = str(steps)
    root.find("ffsocket/address").text = socket_name
    root.find("system/initialize").set("nbeads", str(beads))
    output = root.find("output")
    output.clear()
    output.set("prefix", "sim")
    ET.SubElement(output, "properties", stride="1", filename="pots").text = \
        "[ step, bead_potentials ]"
    for name in ("positions", "forces"):
        ET.SubElement(output, "trajectory", filename=name[:3], stride="1", format="ase",
                      cell_units="ase").text = f"{name}{{ase}}"
    return ET.tostring(root, encoding="unicode")


def test_pimd_ethanol_end_to_end(tmp_path, ethanol_calc):
    """The example (examples/ipi: ethanol, PILE_L, 300 K, 0.5 fs) with 4 beads and 5 steps,
    through ``tfn-md ipi`` over a unix socket; every bead energy i-PI reports =
    TFNCalculator at that bead's positions, and so is every bead's force."""
    beads, steps, name = 4, 5, _unique_socket()
    shutil.copy(EXAMPLE / "ethanol.xyz", tmp_path / "ethanol.xyz")
    out = _run_ipi(tmp_path, _example_input(name, beads, steps), name, _script("tfn-md") + [
        "ipi", "--potential", "ethanol-gfn2", "--unix", name, "--structure", "ethanol.xyz",
        "--dtype", "float64", "--no-compile"])
    assert '"exit": "EXIT"' in out and f'"evaluations": {beads * (steps + 1)}' in out, out

    pots = np.loadtxt(tmp_path / "sim.pots", ndmin=2)  # step, then one column per bead
    assert pots.shape == (steps + 1, 1 + beads)
    frames = [read(tmp_path / f"sim.pos_{b}.extxyz", index=":") for b in range(beads)]
    forces = [read(tmp_path / f"sim.for_{b}.extxyz", index=":") for b in range(beads)]
    assert all(len(f) == steps + 1 for f in frames + forces)
    worst = worst_force = 0.0
    for step in range(steps + 1):
        for b in range(beads):
            atoms = frames[b][step]
            atoms.pbc = False
            atoms.calc = ethanol_calc
            expected = atoms.get_potential_energy()
            worst = max(worst, abs(pots[step, 1 + b] * HARTREE_TO_EV - expected))
            ipi_forces = forces[b][step].get_forces() * ASE_FORCE  # extxyz: a calculator
            worst_force = max(worst_force, np.abs(ipi_forces - atoms.get_forces()).max())
    print(f"i-PI - TFNCalculator: energies up to {worst:.2e} eV, forces up to "
          f"{worst_force:.2e} eV/A")
    # positions come back rounded to 1e-8 A (extxyz): 1e-7 eV, 1e-6 eV/A (stiff C-H bonds)
    assert worst < 2e-6, f"bead energies differ by up to {worst:.3g} eV"
    assert worst_force < 1e-5, f"bead forces differ by up to {worst_force:.3g} eV/A"
    # the beads are a ring polymer, not copies
    spread = np.ptp([f[-1].positions for f in frames], axis=0).max()
    assert spread > 1e-3


def test_periodic_virial(tmp_path):
    """A sheared periodic Cu cell (cu-emt, 1 bead, 2 steps), the driver in a thread:
    i-PI's potential and virial_md (W/V) are TFNCalculator's energy and -stress."""
    atoms = triclinic_cu(repeat=(2, 1, 1))
    write(tmp_path / "cu.extxyz", atoms)
    name, steps = _unique_socket(), 2
    xml = INPUT.format(properties="potential, virial_md", steps=steps, socket=name, beads=1,
                       mode="ase", structure="cu.extxyz")
    summary = {}

    def serve():
        try:
            summary.update(tfn_ipi.run_driver("cu-emt", tmp_path / "cu.extxyz", unix=name,
                                              dtype="float64", compile=False, wait=60))
        except Exception as err:  # reported below, and i-PI is killed
            summary["error"] = err
            raise

    try:
        _run_ipi(tmp_path, xml, name, thread_driver=serve)
    finally:
        assert "error" not in summary, f"driver failed: {summary.get('error')!r}"
    assert summary["exit"] == "EXIT" and summary["evaluations"] == steps + 1

    rows = np.loadtxt(tmp_path / "sim.pots", ndmin=2)  # step, potential, 6 virial_md
    frames = read(tmp_path / "sim.pos_0.extxyz", index=":")
    calc = TFNCalculator("cu-emt", dtype="float64", compile=False)
    to_ev_a3 = unit_to_user("pressure", "ev/ang3", 1.0)
    for row, frame in zip(rows, frames, strict=True):
        frame.pbc = True
        frame.calc = calc
        assert abs(row[1] * HARTREE_TO_EV - frame.get_potential_energy()) < 1e-6
        s = frame.get_stress()  # Voigt xx yy zz yz xz xy, eV/A^3
        expected = -np.array([s[0], s[1], s[2], s[5], s[4], s[3]])  # i-PI: xx yy zz xy xz yz
        assert np.abs(expected).max() > 1e-3
        np.testing.assert_allclose(row[2:8] * to_ev_a3, expected, rtol=0, atol=1e-7)


def test_driver_units_shapes_and_pbc(ethanol_calc):
    """TFNDriver on i-PI's xyz: atomic units in and out; non-periodic unless pbc=True,
    and then periodic in i-PI's cell (h: cell vectors as columns) with W = -V sigma."""
    driver = tfn_ipi.TFNDriver(ethanol_calc, EXAMPLE / "ethanol.xyz")
    assert not driver.periodic
    atoms = read(EXAMPLE / "ethanol.xyz")
    bohr = tfn_ipi.ANGSTROM_TO_BOHR
    cell = np.eye(3) * 20 * bohr
    pot, force, vir, extras = driver(cell, atoms.positions * bohr)
    atoms.calc = ethanol_calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert abs(pot / tfn_ipi.EV_TO_HARTREE - energy) < 1e-9
    assert force.shape == (9, 3) and vir.shape == (3, 3) and not vir.any() and extras == ""
    np.testing.assert_allclose(force * bohr / tfn_ipi.EV_TO_HARTREE, forces, atol=1e-9)
    assert len(driver([cell, cell], [atoms.positions * bohr] * 2)) == 2
    with pytest.raises(ValueError, match="i-PI sent 3 atoms"):
        driver(cell, np.zeros((3, 3)))

    periodic = tfn_ipi.TFNDriver(ethanol_calc, EXAMPLE / "ethanol.xyz", pbc=True)
    assert periodic.periodic
    h = np.array([[20.0, 1.0, -0.5], [0.0, 19.0, 0.7], [0.0, 0.0, 21.0]])  # columns a, b, c
    pot, force, vir, _ = periodic(h * bohr, atoms.positions * bohr)
    box = atoms.copy()
    box.cell, box.pbc, box.calc = h.T, True, ethanol_calc
    assert abs(pot / tfn_ipi.EV_TO_HARTREE - box.get_potential_energy()) < 1e-9
    expected = -box.get_volume() * box.get_stress(voigt=False)
    np.testing.assert_allclose(vir / tfn_ipi.EV_TO_HARTREE, expected, atol=1e-9)
    assert np.abs(expected).max() > 1e-6


def test_custom_pes_module(ethanol_calc):
    """examples/ipi/tfn_pes.py as i-PI loads it (``<ffdirect>``, ``i-pi-py_driver -m
    custom``): parameters as i-PI passes them, i-PI's call, atomic units."""
    from ipi.pes import load_pes

    pes_class = load_pes("custom", str(EXAMPLE / "tfn_pes.py"))
    structure = str(EXAMPLE / "ethanol.xyz")
    pes = pes_class(potential=ethanol_calc, structure=structure, pbc="false",
                    compile="False", verbosity=1)
    atoms = read(structure)
    pot, force, _, _ = pes(np.eye(3) * 30.0, atoms.positions * tfn_ipi.ANGSTROM_TO_BOHR)
    atoms.calc = ethanol_calc
    assert abs(pot * HARTREE_TO_EV - atoms.get_potential_energy()) < 1e-6
    assert force.shape == (9, 3)
    with pytest.raises(ValueError, match="unknown parameters"):
        pes_class(potential="ethanol-gfn2", structure=structure, cutoff="3")
    with pytest.raises(ValueError, match="allowed"):
        pes_class(potential="ethanol-gfn2", structure=structure, compile="sometimes")


@pytest.mark.parametrize("argv, message", [
    (["--address", "localhost"], "HOST:PORT"),
    (["--address", "localhost:99999"], "HOST:PORT"),
    (["--unix", "x", "--structure", "missing.xyz"], "no such file"),
    (["--unix", "x", "--potential", "cu-emt"], "not known to this model"),
])
def test_cli_errors(argv, message, capsys):
    args = ["ipi", "--no-compile"] + argv
    if "--potential" not in argv:
        args += ["--potential", "ethanol-gfn2"]
    if "--structure" not in argv:
        args += ["--structure", str(EXAMPLE / "ethanol.xyz")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "tfn-md ipi: error:" in err and message in err, err


@pytest.mark.parametrize("argv", [
    [],  # neither --address nor --unix
    ["--address", "localhost:31415", "--unix", "x"],  # both
])
def test_cli_needs_one_socket(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ipi", "--potential", "ethanol-gfn2", "--structure", "x.xyz"] + argv)
    assert exit_info.value.code == 2
    assert "--address" in capsys.readouterr().err


def test_no_server():
    with pytest.raises(ConnectionError, match="no i-PI server at unix socket /tmp/ipi_"):
        tfn_ipi.connect(unix=_unique_socket(), wait=0.2)


def test_library_needs_one_socket():
    with pytest.raises(ValueError, match="exactly one"):
        tfn_ipi.run_driver("ethanol-gfn2", EXAMPLE / "ethanol.xyz")
    with pytest.raises(ValueError, match="exactly one"):
        tfn_ipi.connect(address="localhost:1", unix="x")
