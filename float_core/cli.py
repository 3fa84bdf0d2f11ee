"""Command line: ``float-studio COMMAND ...`` or ``python -m float_core COMMAND ...``.

Commands: generate, batch, drive, dub, stream, converse, download, convert, bench, train. Each
lives next to the code it drives and either registers itself through an ``add_subparser(subparsers)``
function that sets ``func`` (a callable taking the parsed namespace and returning an exit
code), or has a ``main(argv)`` of its own that receives every argument after the command's
name (bench, train: their own ``--help`` applies).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

#: Every sub-command provider, in --help order: a module name (it has ``add_subparser``) or
#: ``(command, module, help)`` for a module whose ``main(argv)`` takes the remaining arguments.
_PROVIDERS: tuple[str | tuple[str, str, str], ...] = (
    "float_core.generate_cli",  # generate (media pipeline)
    "float_core.batch_cli",  # batch (job files, locally or on Ray)
    "float_core.video_cli",  # drive, dub (a video as input)
    "float_core.stream_cli",  # stream (windows as they are solved)
    "float_core.conversation_cli",  # converse (several portraits in one video)
    "float_core.weights",  # download, convert
    ("bench", "float_core.bench", "per-stage timings of the engine (benchmark)"),
    ("train", "float_core.train.cli", "train FLOAT: prepare data, stage 1, stage 2, demo"),
)

PROG = "float-studio"


def _delegate(module: str) -> Callable[[argparse.Namespace], int]:
    """A ``func`` that imports ``module`` only when run and calls its ``main(argv)``."""

    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).main(list(args.rest)) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="FLOAT Studio: audio-driven talking portraits (FLOAT, flow matching in motion latent space).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _PROVIDERS:
        if isinstance(module, tuple):
            name, target, text = module
            sub = subparsers.add_parser(name, help=text, description=f"{text} (options: {PROG} {name} --help)",
                                        add_help=False, prefix_chars="\0")
            sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            sub.set_defaults(func=_delegate(target))
            continue
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
    """The ``float-studio`` console script (and ``python -m float_core``)."""
    return run_parser(build_parser(), argv)
