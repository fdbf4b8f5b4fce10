"""The ``tfn-md`` command. Thin: each subcommand parses arguments and calls library code."""

import argparse
import sys

from . import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfn-md",
        description="Tensor Field Network potentials for ASE: datasets, training, MD.",
    )
    parser.add_argument("--version", action="version", version=f"tfn_md {__version__}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for this command (default: torch's choice)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from .data.cli import add_data_parser
    from .simulate_cli import add_simulate_parsers
    from .tasks.cli import add_paper_parser
    from .train.cli import add_train_parsers

    add_simulate_parsers(subparsers)
    add_data_parser(subparsers)
    add_train_parsers(subparsers)
    add_paper_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
