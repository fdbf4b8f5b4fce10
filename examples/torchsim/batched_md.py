"""Batched MD of many ethanol molecules through torch-sim: all of them in one model call
per step (tfn_md.engines.torchsim.TFNModel), NVT Langevin at 300 K.

    python examples/torchsim/batched_md.py --n-systems 16 --steps 200
    python examples/torchsim/batched_md.py --quick          # 4 molecules, 10 steps

Needs torch-sim (pip install "tfn_md[torchsim]"). Each molecule starts from its own
rattled geometry; at the end the script prints the wall time, the throughput in
atom-steps/s, the temperatures and potential energies, and whether every bond of the
start survived (no bonded distance grew by more than 30 %).
"""

import argparse
import time

import numpy as np
import torch
import torch_sim as ts
from ase.build import molecule

from tfn_md.engines.torchsim import TFNModel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-systems", type=int, default=16, help="ethanol molecules")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--potential", default="ethanol-gfn2")
    parser.add_argument("--dtype", default=None, help="float32 / float64 (default: the "
                        "potential's)")
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"],
                        help="the compiled whole-response program (as TFNCalculator's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 molecules, 10 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_systems, args.steps = 4, 10

    compile = {"auto": "auto", "true": True, "false": False}[args.compile]
    model = TFNModel(args.potential, dtype=args.dtype, compile=compile)
    frames = []
    for k in range(args.n_systems):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=args.seed + k)
        frames.append(atoms)
    start = ts.io.atoms_to_state(frames, model.device, model.dtype)

    if hasattr(ts, "Integrator"):  # torch-sim >= 0.4 (Python >= 3.12)
        integrator, extra = ts.Integrator.nvt_langevin, {}
    else:  # torch-sim 0.3 (Python 3.11)
        integrator, extra = ts.nvt_langevin, {"seed": args.seed}
    t0 = time.perf_counter()
    final = ts.integrate(start, model, integrator=integrator, n_steps=args.steps,
                         temperature=args.temperature, timestep=args.timestep * 1e-3,
                         **extra)  # timestep in ps (torch-sim's metal units)
    seconds = time.perf_counter() - t0

    temperature = ts.quantities.calc_temperature(masses=final.masses, momenta=final.momenta,
                                                 system_idx=final.system_idx)
    n_atoms = final.n_atoms
    print(f"{args.n_systems} x ethanol ({n_atoms} atoms), {args.steps} steps of "
          f"{args.timestep} fs, {model.dtype}: {seconds:.2f} s, "
          f"{n_atoms * args.steps / seconds:,.0f} atom-steps/s, "
          f"{args.n_systems * args.steps / seconds:,.1f} structure-steps/s")
    print(f"temperature per system (K): mean {temperature.mean():.0f}, "
          f"min {temperature.min():.0f}, max {temperature.max():.0f}")
    energy = final.energy.double()
    print(f"potential energy per system (eV): mean {energy.mean():.4f}, "
          f"spread {energy.max() - energy.min():.4f}")
    print(f"bonds intact: {bonds_intact(start, final)}")
    if model.compiled is not None:
        print(f"compiled programs: {model.compiled.n_programs} (compile='auto' compiles one "
              "after 20 calls: tens of seconds, then cached on disk; --compile false: eager)")


def bonds_intact(start, final, bond=1.6, stretch=1.3) -> bool:
    """Every pair closer than ``bond`` A at the start is closer than ``stretch`` times its
    starting distance at the end, in every system."""
    for k in range(start.n_systems):
        mask = start.system_idx == k
        d0 = torch.cdist(start.positions[mask], start.positions[mask]).double().numpy()
        d1 = torch.cdist(final.positions[mask], final.positions[mask]).double().numpy()
        bonded = (d0 < bond) & (d0 > 0)
        if np.any(d1[bonded] > stretch * d0[bonded]):
            return False
    return True


if __name__ == "__main__":
    main()
