"""A TFN potential as an i-PI force provider: ``tfn-md ipi`` (a socket driver) and
:class:`TFNDriver` (an i-PI PES object, also usable in i-PI's ``<ffdirect>``).

    i-pi input.xml &                      # opens /tmp/ipi_tfn-ethanol (ffsocket unix)
    tfn-md ipi --potential ethanol-gfn2 --unix tfn-ethanol --structure ethanol.xyz

i-PI sends only positions and the cell, never the elements: the driver takes them
from ``structure`` (any file ``ase.io.read`` reads, the same atoms in the same order as
i-PI's input). Periodicity comes from the structure too (``pbc``): an extended XYZ with
``Lattice=`` is periodic; i-PI's own XYZ (``# CELL(abcABC): ...``) reads as non-periodic,
so pass ``pbc=True`` (``--pbc``) for a periodic system given in that format.

Units. i-PI talks atomic units over the socket: positions and cell in Bohr, energy in
Hartree, forces in Hartree/Bohr, virial in Hartree. The calculator works in eV and A.
The conversions use i-PI's own factors (``ipi.utils.units``: 1 eV = 0.036749326 Ha,
1 A = 1.8897261 Bohr; forces with their ratio, so that they stay exactly the gradient of
the energy), so an energy i-PI prints in ``{electronvolt}`` is the calculator's energy
to rounding. (ASE's ``SocketClient`` uses CODATA 2014 instead: energies then differ from
i-PI's ``{electronvolt}`` by 1e-7 relative, 3e-5 eV on ethanol's -310 eV.)

The virial (periodic systems only; zero otherwise) is W = -V sigma, with sigma the
calculator's stress (eV/A^3, ASE's sign: positive under tension) and V the cell volume,
so that i-PI's ``virial_md`` (W / V) is -sigma.

The socket protocol is i-PI's (STATUS, INIT, POSDATA, GETFORCE, EXIT), one structure per
request: an ``<ffsocket>`` with ``batch_size`` > 1 is refused at INIT. Several drivers
may connect to one i-PI socket (one per process): i-PI spreads the beads over them.
Replies go out in one ``sendall`` with TCP_NODELAY: ASE's ``SocketClient`` sends each
field apart without it and, over TCP, waits ~45 ms per step for delayed ACKs
(benchmarks/bench_ipi.py measures the designs). The driver itself needs no i-PI package:
i-PI may run on another machine (``address``).
"""

import socket
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from ..ase.calculator import TFNCalculator

__all__ = ["ANGSTROM_TO_BOHR", "EV_TO_HARTREE", "UNIX_PREFIX", "TFNDriver", "connect",
           "parse_address", "run_driver", "serve"]

#: i-PI's factors (ipi/utils/units.py, UnitMap["energy"]["electronvolt"] and
#: UnitMap["length"]["angstrom"]); tests/engines/test_ipi.py checks them against ipi
EV_TO_HARTREE = 0.036749326
ANGSTROM_TO_BOHR = 1.8897261
#: where i-PI (``<simulation sockets_prefix>``'s default) and ASE put unix sockets
UNIX_PREFIX = "/tmp/ipi_"

_HEADER = 12  # bytes of an i-PI message header


class TFNDriver:
    """A TFN potential as an i-PI PES (the interface of ``ipi.pes.dummy.Dummy_driver``,
    without importing i-PI): ``driver(cell, pos)`` with i-PI's arrays in atomic units.

    Args:
        potential: shipped potential name (e.g. ``ethanol-gfn2``), checkpoint path, or a
            :class:`tfn_md.TFNCalculator` to use as it is (its own device, dtype, ...).
        structure: ``ase.Atoms`` or a file ``ase.io.read`` reads (its last frame): the
            elements, in i-PI's atom order, and the periodicity. Its positions and cell
            are replaced by i-PI's at every call.
        device, dtype, skin, compile, exact: as :class:`tfn_md.TFNCalculator`.
        pbc: override the structure's periodicity (True: fully periodic in i-PI's cell;
            False: a molecule, the cell ignored); None keeps the structure's.

    Attributes: ``atoms`` (the structure, with the calculator attached), ``evaluations``
    (calls so far) and ``calc_seconds`` (wall time spent in the calculator).
    """

    def __init__(self, potential, structure, device: str = "cpu", dtype=None,
                 pbc: bool | None = None, skin: float = 0.5, compile: bool | str = "auto",
                 exact: bool = False):
        if isinstance(structure, Atoms):
            atoms = structure.copy()
        else:
            from ase.io import read

            path = Path(structure)
            if not path.is_file():
                raise FileNotFoundError(f"structure {str(structure)!r}: no such file (it "
                                        "gives the elements, which i-PI does not send)")
            atoms = read(path, index=-1)
        if len(atoms) == 0:
            raise ValueError(f"structure {structure!r} has no atoms")
        if pbc is not None:
            atoms.pbc = bool(pbc)
        if atoms.pbc.any() and not atoms.pbc.all():
            raise ValueError(f"structure has pbc={atoms.pbc.tolist()}: i-PI runs molecules "
                             "(no pbc) or fully periodic cells")
        if isinstance(potential, TFNCalculator):
            atoms.calc = potential
        else:
            atoms.calc = TFNCalculator(potential, device=device, dtype=dtype, skin=skin,
                                       compile=compile, exact=exact)
        calc = atoms.calc
        # an element the potential does not know fails now, not at i-PI's first request
        calc.model.species_index(torch.as_tensor(atoms.numbers, device=calc.device))
        self.atoms = atoms
        self.periodic = bool(atoms.pbc.all())
        self.evaluations = 0
        self.calc_seconds = 0.0

    def compute_structure(self, cell, pos):
        """One structure. ``cell``: [3, 3] Bohr, i-PI's h (cell vectors as columns);
        ``pos``: [n_atoms, 3] (or [3 n_atoms]) Bohr. Returns (energy Ha, forces
        [n_atoms, 3] Ha/Bohr, virial [3, 3] Ha, extras ``""``), float64."""
        atoms = self.atoms
        pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
        if len(pos) != len(atoms):
            raise ValueError(f"i-PI sent {len(pos)} atoms; the structure has {len(atoms)} "
                             "(--structure must be the system of i-PI's input)")
        atoms.positions = pos / ANGSTROM_TO_BOHR
        if self.periodic:
            atoms.cell = np.asarray(cell, dtype=np.float64).reshape(3, 3).T / ANGSTROM_TO_BOHR
        start = time.perf_counter()
        energy = atoms.get_potential_energy()  # one call computes forces (and stress) too
        forces = atoms.get_forces()
        virial = np.zeros((3, 3))
        if self.periodic:
            virial = -atoms.get_volume() * atoms.get_stress(voigt=False)
        self.calc_seconds += time.perf_counter() - start
        self.evaluations += 1
        return (energy * EV_TO_HARTREE, forces * (EV_TO_HARTREE / ANGSTROM_TO_BOHR),
                virial.T * EV_TO_HARTREE, "")

    def __call__(self, cell, pos):
        """i-PI's PES call: one structure, or lists of cells and positions (a batch,
        evaluated one by one) giving a list of results."""
        if isinstance(cell, list):
            return [self.compute_structure(c, p) for c, p in zip(cell, pos, strict=True)]
        return self.compute_structure(cell, pos)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = str(text).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not sep or not host or not 1 <= number <= 65535:
        raise ValueError(f"--address {text!r}: expected HOST:PORT with a port in 1..65535, "
                         "e.g. localhost:31415 (i-PI's <ffsocket mode='inet'> address and port)")
    return host, number


def connect(address: str | None = None, unix: str | None = None, wait: float = 60.0,
            sockets_prefix: str = UNIX_PREFIX) -> socket.socket:
    """A socket connected to i-PI: TCP to ``address`` (HOST:PORT) or the unix socket
    ``sockets_prefix + unix`` (i-PI's and ASE's convention: /tmp/ipi_NAME). Retries for
    up to ``wait`` seconds while i-PI starts (it creates the socket)."""
    if (address is None) == (unix is None):
        raise ValueError("give exactly one of address (HOST:PORT, i-PI's ffsocket mode "
                         "'inet') and unix (NAME, i-PI's ffsocket mode 'unix')")
    if unix is not None:
        if not unix:
            raise ValueError("--unix NAME: the name is empty")
        target = sockets_prefix + unix
        if len(target.encode()) > 107:
            raise ValueError(f"unix socket path {target!r} is longer than 107 bytes")
        family, label = socket.AF_UNIX, f"unix socket {target}"
    else:
        target = parse_address(address)
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        label = f"{target[0]}:{target[1]}"
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.connect(target)
            break
        except (FileNotFoundError, ConnectionRefusedError) as err:
            sock.close()
            if time.monotonic() >= deadline:
                raise ConnectionError(f"no i-PI server at {label} after {wait:g} s ({err}); "
                                      "start i-PI first") from err
            time.sleep(0.1)
    if family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv(sock: socket.socket, n: int) -> bytes | None:
    """Exactly ``n`` bytes, or None when i-PI closed the connection."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def _message(name: str) -> bytes:
    return name.upper().ljust(_HEADER).encode()


def serve(driver, sock: socket.socket) -> dict:
    """Answer i-PI's requests on ``sock`` with ``driver(cell, pos)`` (i-PI's PES call,
    atomic units) until i-PI sends EXIT or closes the connection; closes ``sock``.
    Returns {"evaluations": int, "seconds": wall time connected, "exit": "EXIT" or
    "closed"}."""
    start = time.perf_counter()
    initialised, result, evaluations, reason = False, None, 0, "closed"
    try:
        while True:
            header = _recv(sock, _HEADER)
            if header is None:
                break
            name = header.decode(errors="replace").strip()
            if name == "STATUS":
                state = "HAVEDATA" if result is not None else "READY" if initialised else "NEEDINIT"
                sock.sendall(_message(state))
            elif name == "INIT":
                head = _recv(sock, 8)
                if head is None:
                    break
                _bead, length = np.frombuffer(head, np.int32)
                text = (_recv(sock, int(length)) or b"").decode(errors="replace")
                for token in text.split(","):
                    key, _, value = token.partition(":")
                    if key.strip() == "batch_size" and value.strip() not in ("", "1"):
                        raise RuntimeError(f"i-PI asks for batches of {value.strip()} structures; "
                                           "this driver takes one: remove <batch_size> from "
                                           "the <ffsocket>")
                initialised = True
            elif name == "POSDATA":
                head = _recv(sock, 18 * 8 + 4)
                if head is None:
                    break
                cell = np.frombuffer(head[:72], np.float64).reshape(3, 3)
                n_atoms = int(np.frombuffer(head[144:], np.int32)[0])
                data = _recv(sock, 24 * n_atoms)
                if data is None:
                    break
                pos = np.frombuffer(data, np.float64).reshape(n_atoms, 3)
                result = driver(cell, pos)
                evaluations += 1
            elif name == "GETFORCE":
                if result is None:
                    raise RuntimeError("i-PI asked for forces before sending positions")
                energy, forces, virial, extras = result
                forces = np.ascontiguousarray(forces, dtype=np.float64)
                extras = (extras or "").encode()
                sock.sendall(b"".join([
                    _message("FORCEREADY"), np.float64(energy).tobytes(),
                    np.int32(forces.size // 3).tobytes(), forces.tobytes(),
                    np.ascontiguousarray(virial, dtype=np.float64).tobytes(),
                    np.int32(len(extras)).tobytes(), extras]))
                result = None
            elif name == "EXIT":
                reason = "EXIT"
                break
            else:
                raise RuntimeError(f"unknown i-PI message {header!r}")
    except (ConnectionResetError, BrokenPipeError):
        reason = "closed"
    finally:
        sock.close()
    return {"evaluations": evaluations, "seconds": time.perf_counter() - start, "exit": reason}


def run_driver(potential, structure, address: str | None = None, unix: str | None = None,
               device: str = "cpu", dtype=None, pbc: bool | None = None,
               compile: bool | str = "auto", wait: float = 60.0,
               sockets_prefix: str = UNIX_PREFIX) -> dict:
    """Serve ``potential`` to i-PI until i-PI ends the run (EXIT or closed connection).

    Connect to i-PI's ``<ffsocket mode="inet">`` at ``address`` (``"HOST:PORT"``) or its
    ``<ffsocket mode="unix">`` named ``unix`` (the socket ``/tmp/ipi_<unix>``): exactly one.
    ``structure`` (Atoms or file) gives the elements and periodicity (see
    :class:`TFNDriver`, which also explains ``pbc``); the other arguments are the
    calculator's. ``wait``: seconds to keep retrying the connection while i-PI starts.

    Returns {"evaluations", "seconds" (connected), "calc_seconds" (in the calculator),
    "exit" ("EXIT": i-PI finished; "closed": it went away)}.
    """
    if (address is None) == (unix is None):
        raise ValueError("give exactly one of --address HOST:PORT and --unix NAME")
    if address is not None:
        parse_address(address)  # a bad address fails before the model loads
    driver = TFNDriver(potential, structure, device=device, dtype=dtype, pbc=pbc,
                       compile=compile)
    summary = serve(driver, connect(address, unix, wait, sockets_prefix))
    summary["calc_seconds"] = driver.calc_seconds
    return summary
