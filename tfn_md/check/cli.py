"""``tfn-md check``: the report card of a potential against its reference calculator."""

import json
from pathlib import Path

__all__ = ["add_check_parser"]


def add_check_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "check", help="physical properties of a potential beside its reference",
        description="Compute physical properties of a cubic crystal with POTENTIAL and with "
        "the reference calculator, the same way (each relaxed by itself), and print a "
        "Markdown table of both with the errors: lattice constant, bulk modulus, elastic "
        "constants, vacancy formation energy, low-index surface energies, phonon "
        "frequencies at the zone boundary (see tfn_md/check/crystal.py).",
        epilog="example: tfn-md check cu-emt --reference ase.calculators.emt:EMT "
        "--crystal Cu -o cu-emt-card")
    p.add_argument("potential", help="shipped potential name (e.g. cu-emt) or checkpoint path")
    p.add_argument("--reference", required=True,
                   help="reference calculator: 'module:Class' (e.g. ase.calculators.emt:EMT) "
                   "or an xTB method (GFN2-xTB, GFN1-xTB; needs tblite)")
    p.add_argument("--reference-kwargs", type=json.loads, default=None, metavar="JSON",
                   help="keyword arguments of the reference class, as a JSON object")
    p.add_argument("--crystal", required=True, metavar="SYMBOL", help="element, e.g. Cu")
    p.add_argument("--structure", default="fcc", choices=["fcc", "bcc"])
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                   help="precision of the potential (default float64: finite differences)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for report.md and properties.json (default: print only)")
    p.set_defaults(func=_check)


def _check(args) -> int:
    from ..ase.calculator import TFNCalculator
    from ..atomic import write_text_atomic
    from ..checkpoint import load_potential
    from ..learn.reference import reference_factory
    from .crystal import crystal_properties, describe
    from .report import as_json, card_table

    model = load_potential(args.potential)  # a clear error now, not after the reference
    if args.crystal not in model.species:
        raise ValueError(f"--crystal {args.crystal}: the potential knows {model.species}")
    xtb = args.reference.upper().startswith(("GFN", "IPEA"))
    make_reference = reference_factory(args.reference if xtb else "",
                                       "" if xtb else args.reference, args.reference_kwargs)
    reference = crystal_properties(lambda: make_reference(args.reference), args.crystal,
                                   args.structure)
    potential = crystal_properties(
        lambda: TFNCalculator(model, dtype=args.dtype, compile=False), args.crystal,
        args.structure, guess=reference["a"])
    table = card_table(potential, reference, describe, (args.potential, args.reference))
    print(table)
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.output / "report.md", table + "\n")
        write_text_atomic(args.output / "properties.json", as_json(potential, reference))
    return 0
