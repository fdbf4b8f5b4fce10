"""A TFN potential as an i-PI ``custom`` PES module: the alternative to ``tfn-md ipi``.

i-PI loads this file itself, by path, in one of two ways:

* inside i-PI's own process, with no socket (in input.xml, instead of the <ffsocket>):

      <ffdirect name="tfn">
        <pes>custom</pes>
        <pes_path>tfn_pes.py</pes_path>
        <parameters>{potential: ethanol-gfn2, structure: ethanol.xyz}</parameters>
      </ffdirect>

* in i-PI's Python socket driver (what ``tfn-md ipi`` replaces):

      i-pi-py_driver -u -a tfn-ethanol -m custom -P tfn_pes.py \\
          -o potential=ethanol-gfn2,structure=ethanol.xyz

Cost (benchmarks/bench_ipi.py, ethanol, compiled, 1 thread: 0.46 ms per direct call):
``<ffdirect>`` adds 0.25 ms per force evaluation to the direct call, any socket driver
(``tfn-md ipi``, ``i-pi-py_driver``, ASE's SocketClient over a unix socket) about 1.05 ms.
That matters for small molecules with a fast potential; ``tfn-md ipi`` needs no file
path in i-PI's input and can run on another machine (TCP).

Parameters (strings, as i-PI passes them): ``potential``, ``structure`` (the elements:
i-PI sends none), and optionally ``device``, ``dtype`` (float32/float64), ``pbc``
(true/false) and ``compile`` (auto/true/false), as :class:`tfn_md.engines.ipi.TFNDriver`.
Units: atomic units in and out (i-PI's), converted by TFNDriver with i-PI's factors.
"""

from tfn_md.engines.ipi import TFNDriver

__DRIVER_NAME__ = "tfn"
__DRIVER_CLASS__ = "TFN_driver"


def _setting(value, allowed=(True, False, None)):
    """i-PI's string (or py_driver's parsed value) -> True/False/None/"auto"."""
    text = str(value).strip().lower()
    found = {"true": True, "false": False, "none": None, "auto": "auto"}.get(text, value)
    if found not in allowed:
        raise ValueError(f"{value!r}: allowed {', '.join(map(str, allowed))}")
    return found


class TFN_driver(TFNDriver):  # i-PI's naming of PES classes
    def __init__(self, potential, structure, device="cpu", dtype=None, pbc=None,
                 compile="auto", verbose=False, verbosity=None, **unused):
        if unused:
            raise ValueError(f"unknown parameters {sorted(unused)}: allowed potential, "
                             "structure, device, dtype, pbc, compile")
        super().__init__(potential, structure, device=str(device),
                         dtype=None if dtype in (None, "None", "") else str(dtype),
                         pbc=_setting(pbc), compile=_setting(compile, (True, False, "auto")))
