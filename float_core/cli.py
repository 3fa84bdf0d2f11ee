"""Command line: ``python -m float_core {generate,download,convert} ...``.

Each sub-command lives next to the code it drives and registers itself through an
``add_subparser(subparsers)`` function that sets ``func`` (a callable taking the parsed
namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# (module, description) of every sub-command provider, in --help order.
_PROVIDERS = (
    "float_core.generate_cli",  # generate (media pipeline)
    "float_core.weights",  # download, convert
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m float_core",
        description="FLOAT Studio: audio-driven talking portraits (FLOAT, flow matching in motion latent space).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _PROVIDERS:
        try:
            importlib.import_module(module).add_subparser(subparsers)
        except ModuleNotFoundError as exc:  # a provider not written yet must not break the others
            if exc.name != module:
                raise
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
               errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse ``argv`` and call the chosen sub-command's ``func``; its exit code is returned.

    No sub-command prints the help (exit 2); Ctrl-C exits 130; exceptions of the ``errors``
    types print ``error: <message>`` (no traceback) and exit 2.
    """
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    return run_parser(build_parser(), argv)
