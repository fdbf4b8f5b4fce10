"""``tfn-md learn CONFIG.toml``: the active-learning loop (:mod:`tfn_md.learn.loop`)."""

import argparse

__all__ = ["add_learn_parser"]


def add_learn_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "learn", help="active learning: sample, train, explore, label, retrain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build a potential by active learning from a structure and a reference "
        "method\n(GFN2-xTB through tblite, or any ASE calculator 'module:Class'): initial "
        "reference MD,\nthen repeat: train, explore by MD with the potential, select frames "
        "whose force\nspread (energy heads) passes the threshold, label them, retrain from "
        "the last weights;\nuntil nothing passes or the budget is spent. Re-running the same "
        "command resumes\n(also after kill -9) without losing or repeating labels. The "
        "configuration keys are\ndocumented in tfn_md/learn/config.py.",
        epilog="examples:\n  tfn-md --threads 1 learn potentials/ethanol-gfn2-learn.toml\n"
        "  python examples/active_learning.py   (writes and runs learn_methane/learn.toml)")
    p.add_argument("config", help="TOML file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_learn)


def _learn(args: argparse.Namespace) -> int:
    import json

    from .config import load_learn_config
    from .loop import Learner

    state = Learner(load_learn_config(args.config), progress=not args.quiet).run()
    summary = {k: state[k] for k in ("iteration", "stage") if k in state}
    summary["converged"] = bool(state.get("converged"))
    summary["history"] = state["history"]
    print(json.dumps(summary, indent=1, default=float))
    return 0
