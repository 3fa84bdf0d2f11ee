"""Command line of training: ``python -m float_core.train {prepare,stage1,stage2} ...``.

Single GPU / CPU::

    python -m float_core.train stage1 --data data/hdtf --out runs/ae --vgg vgg19.safetensors

Several GPUs (one process per GPU; the global ``--batch-size`` is split over them)::

    torchrun --nproc_per_node 4 -m float_core.train stage2 --data data/hdtf --out runs/fmt ...

Options can also come from a YAML file (``--config run.yaml``); flags override it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..cli import run_parser
from .loop import RunConfig, add_config_arguments, config_from_sources, shutdown_distributed


def _stage_command(cls: type[RunConfig], train: Callable[[Any], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        overrides = {k: v for k, v in vars(args).items() if k not in ("config", "func", "command")}
        config = config_from_sources(cls, args.config, overrides)
        try:
            path = train(config)
        finally:
            shutdown_distributed()
        print(f"weights: {path} (load with FloatPipeline.from_pretrained({str(path.parent)!r}) "
              f"or `python -m float_core generate --checkpoint {path.parent}`)")
        return 0

    return run


def build_parser() -> argparse.ArgumentParser:
    from .demo import add_demo_parser
    from .stage1 import Stage1Config, train_stage1
    from .stage2 import Stage2Config, train_stage2

    parser = argparse.ArgumentParser(
        prog="python -m float_core.train",
        description="Train FLOAT: prepare data, stage 1 (motion auto-encoder), stage 2 (flow matching transformer).",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    try:
        from .prepare import add_prepare_parser
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        add_prepare_parser(subparsers)
    add_demo_parser(subparsers)
    for name, cls, train, text in (
        ("stage1", Stage1Config, train_stage1, "train the motion auto-encoder (paper Sec. 4.1, A.3-A.4)"),
        ("stage2", Stage2Config, train_stage2, "train the flow matching transformer (paper Sec. 4.2, 5.2)"),
    ):
        sub = subparsers.add_parser(name, help=text, description=text)
        add_config_arguments(sub, cls)
        sub.set_defaults(func=_stage_command(cls, train))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # WeightsError and DatasetError are ValueErrors: a clear message, no traceback.
    return run_parser(build_parser(), argv, errors=(ValueError, OSError))
