"""``tfn-md ipi``: serve a TFN potential to i-PI (path-integral MD and the rest of i-PI)."""

import json
from pathlib import Path

__all__ = ["add_engine_parsers"]


def add_engine_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "ipi", help="serve a TFN potential to i-PI over its socket (path-integral MD)",
        description="Connect to a running i-PI (its <ffsocket>, mode 'unix' or 'inet') and "
        "answer its force requests with a TFN potential until i-PI finishes (one structure "
        "at a time; start several drivers to share the beads). i-PI sends positions and the "
        "cell only, in atomic units; the elements come from --structure.",
        epilog="example: i-pi input.xml & tfn-md ipi --potential ethanol-gfn2 --unix tfn-ethanol "
        "--structure ethanol.xyz   (examples/ipi/)")
    p.add_argument("--potential", required=True,
                   help="shipped potential name (e.g. ethanol-gfn2) or checkpoint path")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", metavar="HOST:PORT",
                       help="i-PI's <ffsocket mode='inet'> address and port, e.g. localhost:31415")
    where.add_argument("--unix", metavar="NAME",
                       help="i-PI's <ffsocket mode='unix'> <address>: the socket /tmp/ipi_NAME")
    p.add_argument("--structure", type=Path, required=True,
                   help="the system of i-PI's input (any file ase.io.read reads, e.g. i-PI's "
                   "xyz): needed because i-PI sends no elements, only positions and the cell; "
                   "its pbc says whether the system is periodic (see --pbc)")
    p.add_argument("--pbc", action="store_true",
                   help="periodic in i-PI's cell (stress and virial), whatever the structure "
                   "says: i-PI's xyz format reads as non-periodic")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])
    p.add_argument("--no-compile", action="store_true",
                   help="never compile (default: compile after a few calls, as TFNCalculator)")
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to keep trying to connect while i-PI starts (default 60)")
    p.add_argument("--sockets-prefix", default="/tmp/ipi_",
                   help="i-PI's <simulation sockets_prefix> for unix sockets (default /tmp/ipi_)")
    p.set_defaults(func=_ipi)


def _ipi(args) -> int:
    from .ipi import run_driver

    if not args.wait >= 0:
        raise ValueError(f"--wait {args.wait}: allowed a number >= 0 (s)")
    summary = run_driver(args.potential, args.structure, address=args.address, unix=args.unix,
                         device=args.device, dtype=args.dtype, pbc=True if args.pbc else None,
                         compile=False if args.no_compile else "auto", wait=args.wait,
                         sockets_prefix=args.sockets_prefix)
    print(json.dumps(summary, default=float))
    return 0
