"""The ``msvmunet`` command line: a thin layer over the library.

Each command lives in its own module of this package and defines::

    COMMAND = "name"          # what the user types
    HELP = "one line"         # shown by ``msvmunet --help``
    FORMATTER = ...           # optional argparse formatter class (default: DefaultsFormatter)
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int | None: ...
    def interrupted(args) -> str: ...  # optional: what to do after Ctrl-C (e.g. how to resume)

Commands are discovered, so adding a command means adding a module.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import pkgutil
import re
import sys
from typing import Sequence

from .. import __version__
from ..errors import MsvmUnetError


class CLIError(MsvmUnetError):
    """A command-line usage error; printed without a traceback."""


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless its help already speaks of it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, with the closest option or command when a word was mistyped."""

    def error(self, message: str):
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            choices = [c.strip(" '") for c in match.group(2).split(",")]
            message += _did_you_mean(match.group(1), choices)
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _command_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "COMMAND"):
            yield module


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
            formatter_class=getattr(module, "FORMATTER", DefaultsFormatter),
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _interrupted=getattr(module, "interrupted", None))
    return parser


def _unknown_options(parser: argparse.ArgumentParser, command: str | None, extra: list[str]) -> str:
    """'unknown option --epoch; did you mean --epochs?' for words no option of the command takes."""
    if command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    options = [o for action in parser._actions for o in action.option_strings]
    words = [w for w in extra if w.startswith("-")] or extra
    hint = _did_you_mean(words[0].split("=")[0], options) if words[0].startswith("-") else ""
    kind = "option" if words[0].startswith("-") else "argument"
    return f"{parser.prog}: error: unknown {kind} {' '.join(words)}{hint} (see '{parser.prog} --help')"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = command = None
    try:
        parser = build_parser()
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit as done:  # --help, --version, a usage error (already printed)
            return int(done.code or 0)
        command = args.command
        if extra:
            print(_unknown_options(parser, command, extra), file=sys.stderr)
            return 2
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return 2
        args._argv = argv
        try:
            code = args._run(args)
        except (MsvmUnetError, FileNotFoundError) as err:
            # Errors of the input, written to be read by a user: the message, not a traceback.
            print(f"msvmunet {command}: error: {err}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:  # Ctrl-C: a word, not a traceback; 130 is the shell's code for SIGINT
        hint = getattr(args, "_interrupted", None)
        print(f"\nmsvmunet{' ' + command if command else ''}: interrupted" + (f"; {hint(args)}" if hint else ""),
              file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
