"""``tfn-md paper TASK``: train (or re-score) one of the paper's tasks and write its report."""

import argparse
from pathlib import Path

from . import TASKS, get_task

__all__ = ["add_paper_parser"]


def add_paper_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "paper",
        help="reproduce the paper's tasks (tetris, gravity, inertia, missing-point)",
        description="Train one of the paper's tasks from scratch with seeded defaults, or "
        "re-score a saved model (--evaluate), writing report.json, report.md and PNG plots.",
    )
    p.add_argument("task", choices=list(TASKS))
    p.add_argument("--out", type=Path, default=None, help="output folder (default paper-TASK)")
    p.add_argument("--data", type=Path, default=None, help="reuse a dataset HDF5 file")
    p.add_argument("--evaluate", type=Path, default=None, metavar="CHECKPOINT",
                   help="score this checkpoint instead of training")
    p.add_argument("--quick", action="store_true", help="train briefly (tests, smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atoms", default=None,
                   help="missing-point --evaluate: molecule size N or range N-M")
    p.add_argument("--limit", type=int, default=None,
                   help="missing-point --evaluate: at most this many molecules")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = args.out or Path(f"paper-{args.task}")
    kwargs = dict(out=out, data=args.data, evaluate=args.evaluate, quick=args.quick, seed=args.seed)
    if args.task == "missing-point":
        kwargs.update(atoms=args.atoms, limit=args.limit)
    elif args.atoms or args.limit:
        raise SystemExit("--atoms and --limit apply to the missing-point task only")
    report = get_task(args.task).run(**kwargs)
    print((out / "report.md").read_text())
    print(f"wrote {out}/report.json, report.md and plots")
    return 0 if report else 1
