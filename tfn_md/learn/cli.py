"""``tfn-md learn``: the active-learning loop (:mod:`tfn_md.learn.loop`), from one command
line (:mod:`tfn_md.learn.defaults`) or a TOML file."""

import argparse

__all__ = ["add_learn_parser"]


def add_learn_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "learn", help="active learning: sample, train, explore, label, retrain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build a potential by active learning from a structure and a reference "
        "method\n(GFN2-xTB through tblite, or any ASE calculator 'module:Class'): "
        "independent test\ntrajectories and initial reference MD, then repeat: train, explore "
        "by MD with the\npotential, label the frames it is unsure of, retrain from the last "
        "weights; until\nnothing is flagged or the budget is spent. Re-running the same "
        "command resumes\n(also after kill -9) without losing or repeating labels.\n\n"
        "Without a file the defaults of `tfn-md learn --template` apply (for periodic\n"
        "structures, those of crystals); a file sets every key itself.",
        epilog="examples:\n"
        "  tfn-md learn --molecule CH3CH2OH --method GFN2-xTB --budget-minutes 60\n"
        "  tfn-md learn --structure cu.xyz --calculator ase.calculators.emt:EMT -o learn-cu\n"
        "  tfn-md learn --template > my.toml   (every key, commented)\n"
        "  tfn-md learn my.toml")
    p.add_argument("config", nargs="?", default=None, help="TOML file (overrides everything)")
    system = p.add_mutually_exclusive_group()
    system.add_argument("--molecule", help="an ase.build.molecule name, e.g. CH3CH2OH")
    system.add_argument("--structure", nargs="+", metavar="FILE",
                        help="structure file(s) ase.io reads; explorations start from each")
    reference = p.add_mutually_exclusive_group()
    reference.add_argument("--method", help="tblite method, e.g. GFN2-xTB")
    reference.add_argument("--calculator", help="ASE calculator module:Class, e.g. "
                           "ase.calculators.emt:EMT")
    p.add_argument("-o", "--output", default=None,
                   help="output folder (default learn-<name>); resumes where it exists")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock budget: no iteration starts that would end past it")
    p.add_argument("--template", action="store_true",
                   help="print the full commented configuration and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars or lines")
    p.set_defaults(func=_learn, _parser=p)


def _learn(args: argparse.Namespace) -> int:
    import json

    from .config import LearnConfig, load_learn_config
    from .defaults import command_config, template_text
    from .loop import Learner

    command_line = any(v is not None for v in (args.molecule, args.structure, args.method,
                                               args.calculator, args.output,
                                               args.budget_minutes))
    if args.template:
        if args.config or command_line:
            args._parser.error("--template takes no other argument")
        print(template_text(), end="")
        return 0
    if args.config and command_line:
        args._parser.error("give a configuration file or the command-line options "
                           "(--molecule/--structure, --method/--calculator, -o, "
                           "--budget-minutes), not both")
    if args.config:
        cfg = load_learn_config(args.config)
    elif command_line:
        try:
            raw = command_config(molecule=args.molecule, structures=args.structure,
                                 method=args.method, calculator=args.calculator,
                                 out=args.output, budget_minutes=args.budget_minutes)
            cfg = LearnConfig.from_dict(raw)
        except (ValueError, FileNotFoundError) as err:
            args._parser.error(str(err))
    else:
        args._parser.error("give --molecule NAME or --structure FILE with --method or "
                           "--calculator, or a configuration file (tfn-md learn --template)")
    state = Learner(cfg, progress=not args.quiet).run()
    summary = {k: state[k] for k in ("iteration", "stage") if k in state}
    summary["converged"] = bool(state.get("converged"))
    summary["output"] = cfg.run.out
    summary["history"] = state["history"]
    print(json.dumps(summary, indent=1, default=float))
    return 0
