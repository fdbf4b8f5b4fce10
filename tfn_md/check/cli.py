"""``tfn-md check``: the report card of a potential against its reference calculator."""

import json
from pathlib import Path

__all__ = ["add_check_parser"]


def add_check_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "check", help="physical properties of a potential beside its reference",
        description="Compute physical properties with POTENTIAL and with the reference "
        "calculator, the same way (each relaxes its own structures), and print a Markdown "
        "table of both with the errors. A cubic crystal (--crystal): lattice constant, bulk "
        "modulus, elastic constants, vacancy formation energy, low-index surface energies, "
        "phonon frequencies at the zone boundary (tfn_md/check/crystal.py). A molecule "
        "(--molecule or --structure): relaxed geometry RMSD, harmonic frequencies, rigid "
        "torsion barriers of rotatable bonds, bond-stretch energies to 1.3x, 1.6x and 3x, "
        "hydrogens turned toward the next heavy atom (tfn_md/check/molecule.py).",
        epilog="examples: tfn-md check cu-emt --reference ase.calculators.emt:EMT "
        "--crystal Cu -o cu-emt-card; tfn-md check ethanol-gfn2 --reference GFN2-xTB "
        "--molecule CH3CH2OH")
    p.add_argument("potential", help="shipped potential name (e.g. cu-emt) or checkpoint path")
    p.add_argument("--reference", required=True,
                   help="reference calculator: 'module:Class' (e.g. ase.calculators.emt:EMT) "
                   "or an xTB method (GFN2-xTB, GFN1-xTB; needs tblite)")
    p.add_argument("--reference-kwargs", type=json.loads, default=None, metavar="JSON",
                   help="keyword arguments of the reference class, as a JSON object")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--crystal", metavar="SYMBOL", help="element of a cubic crystal, e.g. Cu")
    what.add_argument("--molecule", metavar="NAME", help="molecule of ase.build (e.g. CH3CH2OH)")
    what.add_argument("--structure", type=Path, metavar="FILE",
                      help="a molecule from any file ASE reads (its last frame)")
    p.add_argument("--lattice", default="fcc", choices=["fcc", "bcc"],
                   help="the crystal's lattice (default fcc)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                   help="precision of the potential (default float64: finite differences)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for report.md, properties.json and (molecules) scans.png "
                   "(default: print only)")
    p.set_defaults(func=_check)


def _check(args) -> int:
    from ..ase.calculator import TFNCalculator
    from ..checkpoint import load_potential
    from ..data.sources import molecule_or_file, reference_factory
    from .report import card_text, write_card

    model = load_potential(args.potential)  # a clear error now, not after the reference
    xtb = args.reference.upper().startswith(("GFN", "IPEA"))
    make_reference = reference_factory(args.reference if xtb else "",
                                       "" if xtb else args.reference, args.reference_kwargs)

    def reference_calc():
        return make_reference(args.reference)

    def potential_calc():
        return TFNCalculator(model, dtype=args.dtype, compile=False)

    summary, scans = "", {}
    if args.crystal is not None:
        from .crystal import crystal_properties, describe

        if args.crystal not in model.species:
            raise ValueError(f"--crystal {args.crystal}: the potential knows {model.species}")
        reference = crystal_properties(reference_calc, args.crystal, args.lattice)
        potential = crystal_properties(potential_calc, args.crystal, args.lattice,
                                       guess=reference["a"])
    else:
        from .molecule import compare_molecule, describe

        atoms, _ = molecule_or_file(args.molecule, args.structure)
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(model.species))
        if unknown:
            raise ValueError(f"the molecule has {unknown}; the potential knows {model.species}")
        potential, reference, scans, summary = compare_molecule(potential_calc,
                                                                reference_calc, atoms)
    names = (args.potential, args.reference)
    text = card_text(potential, reference, describe, names, summary)
    print(text)
    if args.output is not None and not write_card(args.output, text, potential, reference,
                                                  scans, names):
        print("(scans.png not written: matplotlib is missing, pip install tfn_md[plot])")
    return 0
