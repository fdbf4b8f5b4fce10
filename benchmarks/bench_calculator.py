"""Speed of TFNCalculator against the same TFN on e3nn, MACE, NequIP and GFN2-xTB.

    python benchmarks/bench_calculator.py                    # both sections
    python benchmarks/bench_calculator.py --section ethanol  # ethanol latency only
    python benchmarks/bench_calculator.py --section cu       # Cu 864 headline only
    python benchmarks/bench_calculator.py --cu6912           # also one row of Cu 6912
    python benchmarks/bench_calculator.py --grid             # sizes, dtypes, l_max, channels
    ... --peer mace=/work/peers/mace/bin/python --peer nequip=/work/peers/nequip/bin/python

Run it on an idle machine without OMP_NUM_THREADS (the script sets torch's threads itself
per row; the rows marked "default" run with the thread count torch and tblite pick).

Ethanol latency (``--section ethanol``): ase.build.molecule("CH3CH2OH"), 1 thread (and
the compiled default-skin calculator and GFN2-xTB also at the default threads), float32,
milliseconds per energy + forces call through each engine's ASE calculator, positions
perturbed by 1e-3 A before every call (as ../shared/peers/common.py does), median of
``--ethanol-calls`` calls after 10 untimed warm-up calls. Rows: tfn_md with the shipped
``ethanol-gfn2`` potential with ``compile=True`` (the first, compiling call untimed; its
time is printed), eager (``compile=False``) and eager with ``exact=True`` (radial MLPs
instead of tables), all with ``skin=0`` (a fresh neighbour search every call, as the peers
do), and compiled with the calculator's default skin (0.5 A: the neighbour search is
reused while atoms move less than 0.25 A, as in MD); the same TFN on e3nn (benchmarks/e3nn_reference.py, built from the exact model: graph
building + autograd response); GFN2-xTB (../shared/peers/xtb_calc.py, run with this
interpreter, which has tblite); MACE and NequIP (random weights, width 32, l_max 2) with
``--peer``. The last column is the speed-up over GFN2-xTB, the method the potential replaces.

Cu headline (``--section cu``): fcc Cu 864 atoms (43 neighbours per atom at 5 A), channels
32, l_max 2, 2 layers, random weights, float32 on 1 and 2 threads and float64 on 1 thread;
energy + forces + stress through the ASE calculator (neighbour list included, skin 0):
tfn_md eager (``compile=False``) and with ``compile=True`` (one compiled program for the
whole E+F+S response; its first, compiling calls untimed), and the e3nn reference on the
same model, graph and autograd response, in the same process. The split of the eager call
(neighbour list / forward / backward) and a FLOP count of the call come with it. MACE and
NequIP run through the peers harness (../shared/peers, each in its own venv) in the same
run with ``--peer NAME=PYTHON`` (repeatable); without it, their figures recorded on this
machine are printed instead. ``--cu6912`` adds rows of 6912 atoms (float32, 1 and 2 threads,
tfn_md eager and compile=True, which there compiles the edge kernel's chunks: the graph is
over the whole-program limit; without the e3nn reference).
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk, molecule

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tfn_md import TFN, TFNCalculator
from tfn_md.graph import atoms_to_graph
from tfn_md.inference.response import compute_response
from tfn_md.so3 import sh_dim

PEERS_RECORDED = {  # ../shared/peers/README.md: this machine, 1 thread, float32, cu864
    "MACE (recorded)": 3.94,
    "NequIP (recorded)": 1.18,
    "e3nn TFN (recorded)": 1.07,
}
DEFAULT_THREADS = torch.get_num_threads()  # what a user gets (before this script sets any)
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


def bench_one(name, dtype, l_max, channels, threads, repeats, reference=True, compiled=True):
    """One Cu (or ethanol) row: eager and compile=True calculator calls, the split of the
    eager call, and (``reference``) the e3nn TFN on the same graph."""
    torch.set_num_threads(threads)
    atoms = system(name)
    model = model_for(atoms, channels, l_max, dtype)
    calc = TFNCalculator(model, skin=0.0, compile=False)  # a fresh neighbour search every
    stress = bool(atoms.pbc.all())  # call, as peers do
    props = ["energy", "forces"] + (["stress"] if stress else [])

    def call():
        atoms.rattle(1e-4)  # a new geometry: the calculator really recomputes
        calc.calculate(atoms, props, ["positions"])

    t_call = timed(call, repeats)
    t_compiled = float("nan")
    if compiled:  # the whole E+F(+S) response as one compiled program (compiled at the
        # first, untimed call; chunked compiled kernels above tfn_md.inference.compiled.MAX_EDGES)
        whole = TFNCalculator(model, skin=0.0, compile=True)

        def call_compiled():
            atoms.rattle(1e-4)
            whole.calculate(atoms, props, ["positions"])

        t_compiled = timed(call_compiled, repeats)
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
           "compiled_atom_steps_per_s": len(atoms) / t_compiled,
           "nl_s": t_nl, "forward_s": t_fwd, "backward_s": max(t_call - t_nl - t_fwd, 0.0),
           "gflop": flops(model, len(atoms), graph.edge_index.shape[1]) / 1e9,
           "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if reference:
        from e3nn_reference import E3nnTFN

        # like the calculator's E+F+S call, the reference computes only what the energy
        # needs (the last layer's l = 0 outputs); compared with the exact (MLP) model
        exact = TFNCalculator(model, skin=0.0, compile=False, exact=True).model
        ref = E3nnTFN(exact)
        out_ours = compute_response(exact, graph, stress=stress, energy_only=True)
        out_ref = compute_response(ref, graph, stress=stress, energy_only=True)
        diff = (out_ours["energy"] - out_ref["energy"]).abs().max()
        row["ref_energy_diff"] = float(diff.detach())
        row["ref_energy"] = float(out_ours["energy"].sum().detach())
        row["ref_s_per_call"] = t_nl + timed(
            lambda: compute_response(ref, graph, stress=stress, energy_only=True), repeats)
    return row


def run_peer(name: str, python: str, peers_dir: Path, threads: int, system: str = "cu864",
             dtype: str = "float32", steps: int | None = None) -> float:
    """Seconds per E+F(+S) call of a peer on ``system`` (channels 32, l_max 2), run by the
    harness ``peers_dir/<name>_calc.py`` in its own interpreter (median of ``steps`` calls
    after its warm-up; its default without ``steps``)."""
    cmd = [python, f"{name}_calc.py", "--system", system, "--width", "32", "--lmax", "2",
           "--dtype", dtype, "--threads", str(threads)]
    if steps:
        cmd += ["--steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # tblite's OpenMP threads too
    out = subprocess.run(cmd, cwd=peers_dir, capture_output=True, text=True, check=True,
                         env=env).stdout
    return float(re.search(r"s_per_call=([0-9.]+)", out).group(1))


def ethanol_latency(calls: int, peers: list[str], peers_dir: Path, warmup: int = 10) -> None:
    """The ethanol latency table (see the module docstring)."""
    torch.set_num_threads(1)
    start = molecule("CH3CH2OH")

    def median_ms(step):
        """Median ms of ``step(atoms)`` over ``calls`` perturbed geometries, first call s."""
        atoms = start.copy()
        rng = np.random.default_rng(1)
        times = []
        for _ in range(warmup + calls):
            atoms.positions += 1e-3 * rng.standard_normal(atoms.positions.shape)
            t = time.perf_counter()
            step(atoms)
            times.append(time.perf_counter() - t)
        return 1e3 * statistics.median(times[warmup:]), times[0]

    def through(calc):
        def step(atoms):
            atoms.calc = calc
            atoms.get_forces()  # energy + forces in one call

        return step

    f32 = torch.float32
    rows, first = {}, {}
    for label, kwargs in (("tfn_md compile=True", {"compile": True}),
                          ("tfn_md compile=True, default skin 0.5 A (as in MD)",
                           {"compile": True, "skin": 0.5}),
                          ("tfn_md eager", {"compile": False}),
                          ("tfn_md eager, exact=True", {"compile": False, "exact": True})):
        calc = TFNCalculator("ethanol-gfn2", dtype=f32, **{"skin": 0.0, **kwargs})
        rows[label], first[label] = median_ms(through(calc))

    from e3nn_reference import E3nnTFN

    exact = TFNCalculator("ethanol-gfn2", dtype=f32, compile=False, exact=True).model
    ref = E3nnTFN(exact)

    def e3nn_step(atoms):
        graph = atoms_to_graph(atoms, exact.cutoff, dtype=f32)
        out = compute_response(ref, graph, energy_only=True)
        float(out["energy"].detach().sum())
        out["forces"].detach().numpy()

    rows["e3nn TFN (same weights)"], _ = median_ms(e3nn_step)
    rows["GFN2-xTB (tblite)"] = 1e3 * run_peer("xtb", sys.executable, peers_dir, 1, "ethanol",
                                               steps=calls)
    for spec in peers:
        name, python = spec.split("=", 1)
        try:
            secs = run_peer(name, python, peers_dir, 1, "ethanol", steps=calls)
            rows[f"{name} (random weights, width 32, l_max 2)"] = 1e3 * secs
        except subprocess.CalledProcessError as err:  # a broken peer does not stop the rest
            tail = (err.stderr or "").strip().splitlines()[-1:] or ["?"]
            print(f"peer {name} failed on ethanol: {tail[0]}")
    # the defaults a user gets: torch's and tblite's own thread count (one per core)
    torch.set_num_threads(DEFAULT_THREADS)
    calc = TFNCalculator("ethanol-gfn2", dtype=f32, compile=True)
    label = f"tfn_md compile=True, default skin 0.5 A, {DEFAULT_THREADS} threads (default)"
    rows[label], first[label] = median_ms(through(calc))
    rows[f"GFN2-xTB (tblite), {DEFAULT_THREADS} threads (default)"] = 1e3 * run_peer(
        "xtb", sys.executable, peers_dir, DEFAULT_THREADS, "ethanol", steps=calls)
    torch.set_num_threads(1)
    xtb = rows["GFN2-xTB (tblite)"]
    print(f"## Ethanol (9 atoms): 1 thread where not said, float32, median of {calls} E+F "
          "calls\n")
    print("| engine | ms per E+F call | GFN2-xTB (1 thread) / engine |")
    print("|---|---|---|")
    for label, ms in rows.items():
        print(f"| {label} | {ms:.3f} | {xtb / ms:.2f}x |")
    print(f"\ntfn_md compile=True: first call {first['tfn_md compile=True']:.1f} s (compiling, "
          "or loading the program from the disk cache), untimed.\n")


def print_rows(rows):
    cols = {"system": "system", "atoms": "atoms", "edges": "edges", "dtype": "dtype",
            "l_max": "l_max", "channels": "channels", "threads": "threads",
            "s_per_call": "eager s/call", "atom_steps_per_s": "eager atom-steps/s",
            "compiled_s_per_call": "compile=True s/call",
            "compiled_atom_steps_per_s": "compile=True atom-steps/s",
            "nl_s": "eager: neighbours s", "forward_s": "eager: forward s",
            "backward_s": "eager: backward s", "gflop": "GFLOP/call", "max_rss_gb": "max RSS GB"}
    print("| " + " | ".join(cols.values()) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c])
                                for c in cols) + " |")


def cu_headline(args) -> None:
    rows = [bench_one("cu864", torch.float32, 2, 32, threads, args.repeats)
            for threads in (1, 2)]
    rows.append(bench_one("cu864", torch.float64, 2, 32, 1, args.repeats))
    print("## Headline: Cu 864, channels 32, l_max 2, 2 layers, cutoff 5 A, E+F+S\n")
    print("eager = compile=False; compile=True = the whole E+F+S response as one compiled "
          "program; the neighbours / forward / backward split is of the eager call.\n")
    print_rows(rows)
    print("\n| engine | dtype | threads | s per E+F+S call | atom-steps/s | "
          "tfn_md eager is faster by | tfn_md compile=True is faster by |")
    print("|---|---|---|---|---|---|---|")

    def line(name, secs, r):
        print(f"| {name} | {r['dtype']} | {r['threads']} | {secs:.3f} | {r['atoms'] / secs:.0f} "
              f"| {secs / r['s_per_call']:.2f}x | {secs / r['compiled_s_per_call']:.2f}x |")

    for r in rows:
        line("tfn_md eager", r["s_per_call"], r)
        line("tfn_md compile=True", r["compiled_s_per_call"], r)
        line("e3nn reference (same run)", r["ref_s_per_call"], r)
    one = rows[0]
    peers = []
    for spec in args.peer:
        name, python = spec.split("=", 1)
        for r in rows:
            try:
                secs = run_peer(name, python, args.peers_dir, r["threads"], "cu864", r["dtype"])
                peers.append((f"{name} (same run)", secs, r))
            except subprocess.CalledProcessError as err:
                tail = (err.stderr or "").strip().splitlines()[-1:] or ["?"]
                print(f"peer {name} failed on cu864 {r['dtype']}: {tail[0]}")
    if not args.peer:
        peers = [(name, secs, one) for name, secs in PEERS_RECORDED.items()]
    for name, secs, r in peers:
        line(name, secs, r)
    for r in rows:
        print(f"\n{r['dtype']}, {r['threads']} thread(s): energies of tfn_md (exact) and the "
              f"e3nn reference differ by {r['ref_energy_diff']:.2e} eV "
              f"(of {r['ref_energy']:.3f} eV).")
    for r in rows:
        if r["dtype"] != "float32":
            continue
        peak = PEAK_GFLOPS * r["threads"] / 2
        for label, secs in (("eager", r["s_per_call"]), ("compile=True", r["compiled_s_per_call"])):
            rate = r["gflop"] / secs
            print(f"{r['threads']} thread(s), {label}: {r['gflop']:.2f} GFLOP per call, "
                  f"{rate:.1f} GFLOP/s = {100 * rate / peak:.0f} % of the matmul peak "
                  f"({peak:.0f} GFLOP/s on {r['threads']} thread(s); the limit is "
                  f"{r['gflop'] / peak:.3f} s per call)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=["all", "ethanol", "cu"], default="all")
    parser.add_argument("--cu6912", action="store_true", help="also one row of Cu 6912 atoms")
    parser.add_argument("--grid", action="store_true", help="also sizes, dtypes, l_max, widths")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per Cu figure")
    parser.add_argument("--ethanol-calls", type=int, default=300,
                        help="timed calls per ethanol figure (median)")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=PYTHON",
                        help="run a peer (mace, nequip) with this interpreter, same run")
    parser.add_argument("--peers-dir", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "peers")
    args = parser.parse_args()
    if args.section in ("all", "ethanol"):
        ethanol_latency(args.ethanol_calls, args.peer, args.peers_dir)
    if args.section in ("all", "cu"):
        cu_headline(args)
    if args.cu6912:
        print("\n## Cu 6912, channels 32, l_max 2, float32, 1 and 2 threads, E+F+S\n")
        print_rows([bench_one("cu6912", torch.float32, 2, 32, threads, args.repeats,
                              reference=False) for threads in (1, 2)])
    if args.grid:
        grid = []
        for name in ("ethanol", "cu864", "cu6912"):
            for dtype in (torch.float32, torch.float64):
                grid.append(bench_one(name, dtype, 2, 32, 1, 3, reference=False, compiled=False))
        for l_max in (1, 3):
            grid.append(bench_one("cu864", torch.float32, l_max, 32, 1, 3, reference=False,
                                  compiled=False))
        for channels in (16, 64):
            grid.append(bench_one("cu864", torch.float32, 2, channels, 1, 3, reference=False,
                                  compiled=False))
        print("\n## Grid (1 thread, eager)\n")
        print_rows(grid)


if __name__ == "__main__":
    main()
