"""Compiled code checked against eager: the tolerance, the comparison, and the child
process of :func:`tfn_md.inference.programs.build` (torch only: it imports nothing of tfn_md).

The child, ``python program_check.py FOLDER``: compile one exported graph with
AOTInductor, load the program, run it twice on the example inputs and compare with the
exported graph run eagerly. FOLDER holds ``exported.pt2``, ``inputs.pt`` and ``job.json``
and gets ``program.pt2``. Exit status 0: compiled and checked; 3: the program disagrees
with the graph; anything else (an exception, a signal): it failed. A program that
corrupts memory takes down this process only.
"""

import json
import sys
from pathlib import Path

import torch

# |compiled - eager| <= TOLERANCE * max(1, max |eager|), per output (eV, eV/A, eV/A^3)
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


def compare(out, ref, tolerance: float) -> str | None:
    """None where every output of ``out`` matches ``ref``, |out - ref| <= tolerance *
    max(1, max |ref|) per output, else what differs."""
    if len(out) != len(ref):
        return f"{len(out)} outputs where {len(ref)} were expected"
    for k, (a, b) in enumerate(zip(out, ref)):
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        if a.shape != b.shape:
            return f"output {k}: shape {tuple(a.shape)} where {tuple(b.shape)} was expected"
        bound = tolerance * max(1.0, float(b.abs().max()) if b.numel() else 0.0)
        err = float((a - b).abs().max()) if a.numel() else 0.0
        if not err <= bound:  # also catches NaN
            return f"output {k}: max |compiled - eager| = {err:.3g} > {bound:.3g}"
    return None


def main(folder: Path) -> int:
    job = json.loads((folder / "job.json").read_text())
    exported = torch.export.load(folder / "exported.pt2")
    device = torch.device(job["device"])
    inputs = [t.to(device) for t in torch.load(folder / "inputs.pt", weights_only=True)]
    with torch._inductor.config.patch(job["inductor"]):
        torch._inductor.aoti_compile_and_package(exported,
                                                 package_path=str(folder / "program.pt2"))
    program = torch._inductor.aoti_load_package(str(folder / "program.pt2"))
    reference = exported.module()(*inputs)
    for _ in range(2):
        problem = compare(program(*inputs), reference, job["tolerance"])
        if problem is not None:
            print(f"the program disagrees with the exported graph: {problem}", file=sys.stderr)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
