"""The ``msvmunet`` command line: a thin layer over the library.

Each command lives in its own module of this package and defines::

    COMMAND = "name"          # what the user types
    HELP = "one line"         # shown by ``msvmunet --help``
    FORMATTER = ...           # optional argparse formatter class (default: show defaults)
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int | None: ...

Commands are discovered, so adding a command means adding a module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from .. import __version__
from ..errors import MsvmUnetError


class CLIError(MsvmUnetError):
    """A command-line usage error; printed without a traceback."""


def _command_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "COMMAND"):
            yield module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msvmunet",
        description="MSVM-UNet for medical image segmentation: prepare data, train, evaluate, predict.",
    )
    parser.add_argument("--version", action="version", version=f"msvmunet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(
            module.COMMAND,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=getattr(module, "FORMATTER", argparse.ArgumentDefaultsHelpFormatter),
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        code = args._run(args)
    except (MsvmUnetError, FileNotFoundError) as err:
        # Errors of the input, written to be read by a user: the message, not a traceback.
        print(f"msvmunet {args.command}: error: {err}", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
