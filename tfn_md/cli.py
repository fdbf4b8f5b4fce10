"""The ``tfn-md`` command. Thin: each subcommand parses arguments and calls library code."""

import argparse
import sys

from .version import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfn-md",
        description="Tensor Field Network potentials for ASE: datasets, training, MD.",
    )
    parser.add_argument("--version", action="version", version=f"tfn_md {__version__}")
    parser.add_argument("--threads", type=_threads, default=None,
                        help="torch CPU threads for this command (default: torch's choice)")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback (default: one line)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from .ase.cli import add_simulate_parsers
    from .check.cli import add_check_parser
    from .data.cli import add_data_parser
    from .engines.cli import add_engine_parsers
    from .lammps.cli import add_lammps_parser
    from .learn.cli import add_learn_parser
    from .tasks.cli import add_paper_parser
    from .train.cli import add_train_parsers

    add_simulate_parsers(subparsers)
    add_data_parser(subparsers)
    add_train_parsers(subparsers)
    add_paper_parser(subparsers)
    add_lammps_parser(subparsers)
    add_learn_parser(subparsers)
    add_check_parser(subparsers)
    add_engine_parsers(subparsers)
    return parser


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--threads {text!r}: allowed an integer >= 1")
    return value


#: exceptions whose message is the whole story; others get their type name in front
_PLAIN = (ValueError, TypeError, OSError, RuntimeError, ArithmeticError, ImportError)


def error_line(err: BaseException) -> str:
    """An exception as one line of text: its message, whitespace collapsed."""
    message = " ".join(str(err).split()) or "(no message)"
    return message if isinstance(err, _PLAIN) else f"{type(err).__name__}: {message}"


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors are reported in one line on stderr (exit code 1), with
    the traceback only under ``--debug``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"tfn-md {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(f"tfn-md {args.command}: error: {error_line(err)} (--debug shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
