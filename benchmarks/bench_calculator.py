"""Speed of TFNCalculator (energy + forces + stress) against the same TFN on e3nn.

    python benchmarks/bench_calculator.py                 # the headline table
    python benchmarks/bench_calculator.py --grid          # sizes, dtypes, l_max, channels

Headline: fcc Cu 864 atoms (43 neighbours per atom at 5 A), channels 32, l_max 2,
2 layers, float32, random weights, 1 and 2 threads; tfn_md through its ASE calculator
(neighbour list included), eager and with ``compile=True`` (its first, compiling calls
untimed), and the e3nn reference (benchmarks/e3nn_reference.py) on the same model, graph
and autograd response, in the same process. The split of a tfn_md call
(neighbour list / forward / backward) and a FLOP count of the call come with it.
MACE and NequIP run through the peers harness (../shared/peers, each in its own venv)
in the same run with ``--peer mace=/path/to/venv/bin/python`` (repeatable); without it,
their figures recorded on this machine are printed instead.
"""

import argparse
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from ase.build import bulk, molecule

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tfn_md import TFN, TFNCalculator
from tfn_md.graph import atoms_to_graph
from tfn_md.response import compute_response
from tfn_md.so3 import sh_dim

PEERS_RECORDED = {  # ../shared/peers/README.md: this machine, 1 thread, float32, cu864
    "MACE (recorded)": 3.94,
    "NequIP (recorded)": 1.18,
    "e3nn TFN (recorded)": 1.07,
}
PEAK_GFLOPS = 63.0  # measured fp32 matmul peak of this machine on 2 threads (issue 5)


def system(name: str):
    if name == "ethanol":
        return molecule("CH3CH2OH")
    cells = {"cu864": 6, "cu6912": 12, "cu100k": 29}
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((cells[name],) * 3)
    atoms.rattle(0.05, seed=0)
    return atoms


def model_for(atoms, channels, l_max, dtype, layers=2, cutoff=5.0):
    species = sorted(set(atoms.get_chemical_symbols()))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TFN(species=species, channels=channels, l_max=l_max, layers=layers,
                   cutoff=cutoff).to(dtype)


def timed(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def flops(model: TFN, n_atoms: int, n_edges: int) -> float:
    """Multiply-adds x 2 of one energy + forces call: forward, then backward counted as
    2 x forward (the kernel recomputes its messages and radial MLP, then takes the input
    gradient; the weight gradients are not needed for forces)."""
    cfg, total = model.config, 0.0
    for layer, conv in enumerate(model.convolutions):
        # an energy call computes only the l = 0 outputs of the last layer
        l_out = 0 if layer == len(model.convolutions) - 1 else conv.l_out
        paths = [path for path in conv.paths if path[2] <= l_out]
        p, c, h = len(paths), conv.channels, cfg.radial_hidden
        total += n_edges * (cfg.n_basis * h + h * p * c)  # radial MLP
        for li in range(conv.l_in + 1):
            k = sum(2 * lo + 1 for l_i, _, lo in paths if l_i == li)
            total += n_edges * sh_dim(conv.l_filter) * (2 * li + 1) * k  # Y . C
            total += n_edges * k * (2 * li + 1) * c  # A^T V
            total += n_edges * k * c  # radial weights
        total += n_atoms * p * c * c * 3  # self-interaction (approx.)
    return 2 * 3 * total


def bench_one(name, dtype, l_max, channels, threads, repeats, reference=True):
    torch.set_num_threads(threads)
    atoms = system(name)
    model = model_for(atoms, channels, l_max, dtype)
    calc = TFNCalculator(model, skin=0.0)  # a fresh neighbour search every call, as peers do
    stress = bool(atoms.pbc.all())

    def call():
        atoms.rattle(1e-4)  # a new geometry: the calculator really recomputes
        calc.calculate(atoms, ["energy", "forces"] + (["stress"] if stress else []), ["positions"])

    t_call = timed(call, repeats)
    compiled = TFNCalculator(model, skin=0.0, compile=True)

    def call_compiled():
        atoms.rattle(1e-4)
        compiled.calculate(atoms, ["energy", "forces"] + (["stress"] if stress else []),
                           ["positions"])

    t_compiled = timed(call_compiled, repeats) if reference else float("nan")
    t_nl = timed(lambda: atoms_to_graph(atoms, model.cutoff, dtype=dtype), repeats)
    graph = atoms_to_graph(atoms, model.cutoff, dtype=dtype)

    def forward():
        with torch.no_grad():
            calc.model(graph, energy_only=True)

    t_fwd = timed(forward, repeats)
    row = {"system": name, "atoms": len(atoms), "edges": graph.edge_index.shape[1],
           "dtype": str(dtype)[6:], "l_max": l_max, "channels": channels, "threads": threads,
           "s_per_call": t_call, "atom_steps_per_s": len(atoms) / t_call,
           "compiled_s_per_call": t_compiled,
           "nl_s": t_nl, "forward_s": t_fwd, "backward_s": max(t_call - t_nl - t_fwd, 0.0),
           "gflop": flops(model, len(atoms), graph.edge_index.shape[1]) / 1e9,
           "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if reference:
        from e3nn_reference import E3nnTFN

        # like the calculator's E+F+S call, the reference computes only what the energy
        # needs (the last layer's l = 0 outputs)
        ref = E3nnTFN(calc.model)
        out_ours = compute_response(calc.model, graph, stress=stress, energy_only=True)
        out_ref = compute_response(ref, graph, stress=stress, energy_only=True)
        row["ref_energy_diff"] = float((out_ours["energy"] - out_ref["energy"]).abs().max().detach())
        row["ref_energy"] = float(out_ours["energy"].sum().detach())
        row["ref_s_per_call"] = t_nl + timed(
            lambda: compute_response(ref, graph, stress=stress, energy_only=True), repeats)
    return row


def run_peer(name: str, python: str, peers_dir: Path, threads: int) -> float:
    """Seconds per E+F+S call of a peer on cu864 (channels 32, l_max 2, float32), run by
    the harness ``peers_dir/<name>_calc.py`` in its own interpreter."""
    cmd = [python, f"{name}_calc.py", "--system", "cu864", "--width", "32", "--lmax", "2",
           "--dtype", "float32", "--threads", str(threads)]
    out = subprocess.run(cmd, cwd=peers_dir, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"s_per_call=([0-9.]+)", out).group(1))


def print_rows(rows):
    cols = ["system", "atoms", "dtype", "l_max", "channels", "threads", "s_per_call",
            "compiled_s_per_call", "atom_steps_per_s", "nl_s", "forward_s", "backward_s",
            "gflop", "max_rss_gb"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c])
                                for c in cols) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="store_true", help="also sizes, dtypes, l_max, widths")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=PYTHON",
                        help="run a peer (mace, nequip) with this interpreter, same run")
    parser.add_argument("--peers-dir", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "peers")
    args = parser.parse_args()
    rows = []
    print("## Headline: Cu 864, channels 32, l_max 2, 2 layers, cutoff 5 A, float32\n")
    for threads in (1, 2):
        rows.append(bench_one("cu864", torch.float32, 2, 32, threads, args.repeats))
    print_rows(rows)
    print("\n| engine | threads | s per E+F+S call | atom-steps/s | tfn_md is faster by | "
          "tfn_md compile=True is faster by |")
    print("|---|---|---|---|---|---|")

    def line(name, threads, secs, r):
        print(f"| {name} | {threads} | {secs:.3f} | {r['atoms'] / secs:.0f} | "
              f"{secs / r['s_per_call']:.2f}x | {secs / r['compiled_s_per_call']:.2f}x |")

    for r in rows:
        line("tfn_md", r["threads"], r["s_per_call"], r)
        line("tfn_md compile=True", r["threads"], r["compiled_s_per_call"], r)
        line("e3nn reference (same run)", r["threads"], r["ref_s_per_call"], r)
    one = rows[0]
    peers = {}
    for spec in args.peer:
        name, python = spec.split("=", 1)
        for r in rows:
            secs = run_peer(name, python, args.peers_dir, r["threads"])
            peers[f"{name} (same run)", r["threads"]] = (secs, r)
    if not peers:
        peers = {(name, 1): (secs, one) for name, secs in PEERS_RECORDED.items()}
    for (name, threads), (secs, r) in peers.items():
        line(name, threads, secs, r)
    print(f"\nEnergies of tfn_md and the e3nn reference differ by {one['ref_energy_diff']:.2e} eV "
          f"(of {one['ref_energy']:.3f} eV, float32).")
    for r in rows:
        peak = PEAK_GFLOPS * r["threads"] / 2
        for label, secs in (("eager", r["s_per_call"]), ("compiled", r["compiled_s_per_call"])):
            rate = r["gflop"] / secs
            print(f"{r['threads']} thread(s), {label}: {r['gflop']:.2f} GFLOP per call, "
                  f"{rate:.1f} GFLOP/s = {100 * rate / peak:.0f} % of the matmul peak "
                  f"({peak:.0f} GFLOP/s on {r['threads']} thread(s); the limit is "
                  f"{r['gflop'] / peak:.3f} s per call)")
    if args.grid:
        grid = []
        for name in ("ethanol", "cu864", "cu6912"):
            for dtype in (torch.float32, torch.float64):
                grid.append(bench_one(name, dtype, 2, 32, 1, 3, reference=False))
        for l_max in (1, 3):
            grid.append(bench_one("cu864", torch.float32, l_max, 32, 1, 3, reference=False))
        for channels in (16, 64):
            grid.append(bench_one("cu864", torch.float32, 2, channels, 1, 3, reference=False))
        print("\n## Grid (1 thread)\n")
        print_rows(grid)


if __name__ == "__main__":
    main()
