"""``tfn-md export-lammps``: write a potential for LAMMPS' ``pair_style mliap unified``."""

from pathlib import Path

__all__ = ["add_lammps_parser"]


def add_lammps_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export-lammps", help="write a potential for LAMMPS (pair_style mliap unified)",
        description="Write POTENTIAL as an ML-IAP unified model file for LAMMPS and print "
        "the input lines that use it. LAMMPS must be built with ML-IAP and Python support "
        "(examples/lammps/build_lammps.sh) and run with tfn_md importable.",
        epilog="example: tfn-md export-lammps cu-emt -o cu-emt.mliap --dtype float64")
    p.add_argument("potential", help="shipped potential name (e.g. cu-emt) or checkpoint path")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="model file to write (not .pt/.pth: LAMMPS would torch.load those)")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"],
                   help="model precision in LAMMPS (default: the potential's own)")
    p.add_argument("--device", default="cpu", help="torch device LAMMPS runs the model on")
    p.add_argument("--exact", action="store_true",
                   help="evaluate the radial MLPs instead of their tables")
    p.add_argument("--skin", type=float, default=None,
                   help="your LAMMPS neighbor skin in A (default 2.0, metal units' default)")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from .mliap import DEFAULT_SKIN, export_lammps, lammps_lines

    skin = DEFAULT_SKIN if args.skin is None else args.skin
    if not skin >= 0:
        raise ValueError(f"--skin {args.skin}: allowed a number >= 0 (A)")
    model = export_lammps(args.potential, args.output, dtype=args.dtype, device=args.device,
                          exact=args.exact)
    print(f"# wrote {args.output} ({', '.join(model.element_types)}; cutoff "
          f"{model.model.cutoff:g} A, {model.layers} layers, {str(model.dtype)[6:]}). "
          "In your LAMMPS input:")
    print("\n".join(lammps_lines(model, str(args.output), skin)))
    return 0
