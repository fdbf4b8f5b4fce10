"""Per-step overhead of running a TFN potential under i-PI, against a direct calculator call.

    python benchmarks/bench_ipi.py                      # 300 steps, compiled (compile=True)
    python benchmarks/bench_ipi.py --eager --steps 60   # compile=False
    python benchmarks/bench_ipi.py --rows tfn-md-unix,ffdirect

i-PI (the ``i-pi`` script of the ``ipi`` package, a subprocess) runs classical MD of
ethanol (examples/ipi/ethanol.xyz, 1 bead, PILE_L at 300 K, 0.5 fs, outputs every 1000
steps only) for ``--steps`` steps with the shipped ``ethanol-gfn2`` potential (default
dtype float32, ``--dtype`` to change), one force evaluation per step, through each design:

* ``tfn-md-unix`` / ``tfn-md-inet``: ``tfn-md ipi`` (tfn_md.engines.ipi: TFNDriver and
  its socket loop ``serve``) over a unix / TCP socket, the driver in this process;
* ``ase-unix`` / ``ase-inet``: ASE's ``SocketClient`` with a TFNCalculator, this process;
* ``py_driver``: i-PI's own Python socket driver (``i-pi-py_driver -m custom``) with the
  custom PES module examples/ipi/tfn_pes.py, a subprocess, unix socket;
* ``ffdirect``: the same PES module inside i-PI's process (``<ffdirect>``): no socket.

Every design records (start, end) of each calculator call. ms/step is the median time
between the starts of consecutive calls (one i-PI step: the call, the socket round trip,
i-PI's integrator); "in calc" the median call; "overhead" is ms/step minus the direct
call, where ``direct`` is ``atoms.get_forces()`` in this process on the very positions
i-PI sent (recorded in the first socket row), the same calculator settings. The first
``--warmup`` calls of each row (compiling, caches) are left out. Medians, since the
machine may be shared.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from ase.io import read

from tfn_md import TFNCalculator
from tfn_md.engines.ipi import UNIX_PREFIX, TFNDriver, connect, serve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ipi"
BIN = Path(sys.executable).parent
ROWS = ["tfn-md-unix", "tfn-md-inet", "ase-unix", "ase-inet", "py_driver", "ffdirect"]

INPUT = """<simulation verbosity="quiet" safe_stride="100000">
  <output prefix="bench">
    <properties stride="1000" filename="out">[ step, potential ]</properties>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>3</seed></prng>
  {forcefield}
  <system>
    <initialize nbeads="1">
      <file mode="xyz">{structure}</file>
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

#: the custom PES i-PI loads for the py_driver and ffdirect rows: examples/ipi/tfn_pes.py
#: with each call's (start, end) written to ``times`` once ``expected`` calls are done
#: (i-PI may leave with os._exit, skipping atexit)
TIMED_PES = """
import json, sys, time
sys.path.insert(0, {example!r})
from tfn_pes import TFN_driver

__DRIVER_NAME__ = "tfn_timed"
__DRIVER_CLASS__ = "Timed"


class Timed(TFN_driver):
    def __init__(self, times, expected, **kwargs):
        super().__init__(**kwargs)
        self.path, self.expected, self.times = times, int(expected), []

    def compute_structure(self, cell, pos):
        start = time.perf_counter()
        result = super().compute_structure(cell, pos)
        self.times.append((start, time.perf_counter()))
        if len(self.times) >= self.expected:
            with open(self.path, "w") as fh:
                json.dump(self.times, fh)
        return result
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def timed(calc, times: list, positions: list | None = None):
    """Wrap ``calc.calculate`` to record (start, end) and, optionally, positions."""
    inner = calc.calculate

    def calculate(atoms=None, properties=("energy",), system_changes=None):
        start = time.perf_counter()
        if system_changes is None:
            inner(atoms, properties)
        else:
            inner(atoms, properties, system_changes)
        times.append((start, time.perf_counter()))
        if positions is not None:
            positions.append(calc.atoms.positions.copy())

    calc.calculate = calculate
    return calc


def run_row(row: str, args, work: Path, calc_kwargs: dict, shared_calc, times: list,
            positions: list | None):
    name = f"bench-{uuid.uuid4().hex[:10]}"
    port = free_port()
    structure = work / "ethanol.xyz"
    if row == "ffdirect":
        pars = ", ".join(f"{k}: {v}" for k, v in calc_kwargs.items())
        ff = (f'<ffdirect name="tfn"><pes>custom</pes><pes_path>{work / "timed_pes.py"}'
              f"</pes_path><parameters>{{potential: ethanol-gfn2, structure: {structure}, "
              f"{pars}, times: {work / 'times.json'}, expected: {args.steps + 1}}}"
              "</parameters></ffdirect>")
    elif row.endswith("inet"):
        ff = (f'<ffsocket name="tfn" mode="inet"><address>localhost</address>'
              f"<port>{port}</port></ffsocket>")
    else:
        ff = f'<ffsocket name="tfn" mode="unix"><address>{name}</address></ffsocket>'
    (work / "input.xml").write_text(INPUT.format(steps=args.steps, forcefield=ff,
                                                 structure=structure))
    (work / "times.json").unlink(missing_ok=True)
    log = open(work / f"ipi-{row}.log", "w")  # noqa: SIM115 (closed below)
    procs = [subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=work, stdout=log,
                              stderr=subprocess.STDOUT)]
    try:
        if row in ("tfn-md-unix", "tfn-md-inet"):
            driver = TFNDriver(shared_calc, structure)
            sock = (connect(unix=name) if row == "tfn-md-unix"
                    else connect(address=f"localhost:{port}"))
            serve(driver, sock)
        elif row in ("ase-unix", "ase-inet"):
            from ase.calculators.socketio import SocketClient

            atoms = read(structure)
            atoms.calc = shared_calc
            deadline = time.monotonic() + 60
            while True:
                try:
                    client = (SocketClient(unixsocket=name) if row == "ase-unix"
                              else SocketClient(port=port))
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            client.run(atoms)
        elif row == "py_driver":
            deadline = time.monotonic() + 60  # py_driver does not retry: wait for i-PI
            while not Path(UNIX_PREFIX + name).exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            pars = ",".join(f"{k}={v}" for k, v in calc_kwargs.items())
            procs.append(subprocess.Popen(
                [str(BIN / "i-pi-py_driver"), "-u", "-a", name, "-m", "custom",
                 "-P", str(work / "timed_pes.py"), "-o",
                 (f"potential=ethanol-gfn2,structure={structure},{pars},"
                  f"times={work / 'times.json'},expected={args.steps + 1}")],
                cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            if procs[1].wait(timeout=args.timeout) != 0:
                raise RuntimeError(f"i-pi-py_driver failed: {procs[1].stderr.read()[-2000:]}")
        if procs[0].wait(timeout=args.timeout) != 0:
            raise RuntimeError(f"i-PI failed, see {work / f'ipi-{row}.log'}")
        if row in ("py_driver", "ffdirect"):
            times.extend(map(tuple, json.loads((work / "times.json").read_text())))
    finally:
        log.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def summarise(times: list, warmup: int) -> dict:
    t = np.array(times[warmup:])
    steps = np.diff(t[:, 0])
    return {"calls": len(times), "step": statistics.median(steps) * 1e3,
            "step_mean": float(steps.mean()) * 1e3,
            "calc": statistics.median(t[:, 1] - t[:, 0]) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20, help="calls left out per row")
    parser.add_argument("--eager", action="store_true", help="compile=False")
    parser.add_argument("--dtype", default=None, choices=["float32", "float64"])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"some of {','.join(ROWS)}")
    parser.add_argument("--timeout", type=float, default=600, help="s per row")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of every driver (default: torch's choice)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the rows this many times, interleaved; medians over repeats")
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    if unknown := set(rows) - set(ROWS):
        parser.error(f"unknown rows {sorted(unknown)}")
    if args.warmup + 10 > args.steps:
        parser.error("--steps must exceed --warmup by 10 at least")

    compile_ = not args.eager
    calc_kwargs = {"compile": compile_}
    if args.dtype:
        calc_kwargs["dtype"] = args.dtype
    work = Path(tempfile.mkdtemp(prefix="bench_ipi_"))
    shutil.copy(EXAMPLE / "ethanol.xyz", work / "ethanol.xyz")
    (work / "timed_pes.py").write_text(TIMED_PES.format(example=str(EXAMPLE)))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the py_driver and i-PI processes

    # one calculator for this process's rows (and the direct baseline), compiled up front
    calc = TFNCalculator("ethanol-gfn2", dtype=args.dtype, compile=compile_)
    warm = read(work / "ethanol.xyz")
    warm.calc = calc
    start = time.perf_counter()
    warm.get_forces()
    print(f"# ethanol-gfn2, {calc.dtype}, compile={compile_}: first call "
          f"{time.perf_counter() - start:.1f} s; {args.steps} i-PI steps per row, "
          f"torch threads {__import__('torch').get_num_threads()}, repeats {args.repeat}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)

    runs, positions = {row: [] for row in rows}, []
    for repeat in range(args.repeat):
        for row in rows:
            times = []
            record = positions if not positions and row in ROWS[:4] else None
            timed_calc = timed(calc, times, record) if row in ROWS[:4] else None
            run_row(row, args, work, calc_kwargs, timed_calc, times, record)
            if timed_calc is not None:
                del calc.calculate  # unwrap
            runs[row].append(summarise(times, args.warmup))
            print(f"# {repeat}: {row}: {runs[row][-1]}", flush=True)
    results = {row: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
               for row, rs in runs.items()}

    # direct: the same calculator on the positions i-PI sent (or an MD-like walk)
    if not positions:
        rng = np.random.default_rng(0)
        positions = [warm.positions + rng.normal(0, 0.02, warm.positions.shape)
                     for _ in range(args.steps + 1)]
    atoms = read(work / "ethanol.xyz")
    atoms.calc = calc
    times = []
    for pos in positions:
        atoms.positions = pos
        start = time.perf_counter()
        atoms.get_forces()
        times.append((start, time.perf_counter()))
    direct = statistics.median(np.diff(times, axis=1)[args.warmup:, 0]) * 1e3
    threads = __import__("torch").get_num_threads()

    print(f"\n(torch threads {threads})")
    print(f"{'design':<13} {'ms/step':>8} {'mean':>8} {'in calc':>8} {'overhead':>9}")
    print(f"{'direct':<13} {direct:8.2f} {'':>8} {direct:8.2f} {0:9.2f}")
    for row, r in results.items():
        print(f"{row:<13} {r['step']:8.2f} {r['step_mean']:8.2f} {r['calc']:8.2f} "
              f"{r['step'] - direct:9.2f}")
    print("\nms/step: median time between the starts of consecutive calls (mean: its mean);"
          "\nin calc: median call inside the run; overhead: ms/step - direct.")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
