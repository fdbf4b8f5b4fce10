"""A reference calculator for the tests of ``tfn-md learn``: ASE's EMT that, for frames the
loop labels (``al_index`` in their info), first sleeps ``delay`` seconds and then appends
"<al_iteration> <al_index> <hash of positions>" to ``log`` once the label is computed."""

import hashlib
import time

from ase.calculators.emt import EMT


class SlowEMT(EMT):
    def __init__(self, log: str = "", delay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.log, self.delay = log, delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        labelling = atoms is not None and "al_index" in atoms.info
        if labelling:
            time.sleep(self.delay)
        if system_changes is None:
            super().calculate(atoms, properties)
        else:
            super().calculate(atoms, properties, system_changes)
        if labelling and self.log:
            digest = hashlib.sha256(atoms.positions.tobytes()).hexdigest()[:16]
            with open(self.log, "a") as fh:
                fh.write(f"{atoms.info['al_iteration']} {atoms.info['al_index']} {digest}\n")
