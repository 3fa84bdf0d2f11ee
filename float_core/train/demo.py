"""``python -m float_core.train demo``: the whole training path in about a minute on a CPU.

Synthetic talking-face clips (:mod:`float_core.train.synthetic`) -> ``prepare`` -> stage 1 ->
precomputed latents -> stage 2 -> a talking-head video from held-out speech, with the tiny
model. It checks that an installation can train end to end and shows the outputs of a run;
it is not a model of any use (use real data and the official size for that: docs/training.md).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("float_core.train")


@dataclass(frozen=True)
class DemoReport:
    """What :func:`run_demo` produced."""

    data: Path  #: the prepared dataset
    stage1: Path  #: stage-1 run folder (float.pth + logs)
    stage2: Path  #: stage-2 run folder (float.pth + logs)
    video: Path  #: the generated video from held-out speech
    correlation: float  #: audio-mouth correlation of the trained model (evaluate.audio_mouth_correlation)
    correlation_untrained: float  #: the same for the model before stage 2

    def summary(self) -> str:
        return (f"demo done: video {self.video}; audio-mouth correlation {self.correlation:.2f} after "
                f"stage 2 (untrained {self.correlation_untrained:.2f}); runs in {self.stage1.parent}")


def run_demo(out: str | Path, *, stage1_steps: int = 24, stage2_steps: int = 2000, seed: int = 0,
             progress: bool = True) -> DemoReport:
    """Run the synthetic end-to-end training demo under ``out`` and return its :class:`DemoReport`."""
    from ..media import load_audio
    from ..pipeline import FloatPipeline
    from .data import ClipStore
    from .evaluate import audio_mouth_correlation
    from .prepare import precompute_conditions, precompute_motion, prepare_dataset
    from .stage1 import Stage1Config, train_stage1
    from .stage2 import Stage2Config, train_stage2
    from .synthetic import make_synthetic_clip, make_synthetic_dataset

    out = Path(out)
    common = dict(model="tiny", num_workers=0, progress=progress, seed=seed, save_every=0)
    log.info("1/5 drawing synthetic talking-face videos")
    videos = make_synthetic_dataset(out / "videos", num_clips=5, seconds=4.0, seed=seed, size=128, broken=False)
    log.info("2/5 preparing the dataset")
    data = out / "data"
    log.info(prepare_dataset(videos.folder, data, size=64, progress=progress).summary())
    log.info("3/5 stage 1: motion auto-encoder (random VGG-19: a demo, not a model)")
    stage1 = train_stage1(Stage1Config(data=str(data), out=str(out / "stage1"), base="tiny-random", vgg="random",
                                       steps=stage1_steps, batch_size=4, lr=1e-3, **common)).parent
    log.info("4/5 precomputing conditions and motion latents with the stage-1 export")
    base = FloatPipeline.from_pretrained(stage1, device="cpu").model
    precompute_conditions(data, base, progress=progress)
    precompute_motion(data, base.motion_autoencoder, progress=progress)
    log.info("5/5 stage 2: flow matching transformer")
    stage2 = train_stage2(Stage2Config(data=str(data), out=str(out / "stage2"), base=str(stage1), steps=stage2_steps,
                                       batch_size=32, lr=2e-3, **common)).parent
    held_out = make_synthetic_clip(out / "held_out.mp4", seconds=6.0, seed=seed + 1234, size=128)
    audio = load_audio(held_out.path)
    store = ClipStore(data)
    trained = FloatPipeline.from_pretrained(stage2, device="cpu")
    video = out / "demo.mp4"
    trained.generate(_first_frame(held_out.path), audio, video, seed=seed, progress=progress)
    return DemoReport(
        data=data, stage1=stage1, stage2=stage2, video=video,
        correlation=audio_mouth_correlation(trained, store, audio),
        correlation_untrained=audio_mouth_correlation(FloatPipeline.from_pretrained(stage1, device="cpu"), store, audio),
    )


def _first_frame(path: Path) -> "np.ndarray":
    """The first picture of a video as (H, W, 3) uint8 (the demo's portrait: an unseen face)."""
    import av

    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def add_demo_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    text = "train both stages on synthetic talking faces in about a minute (CPU) and render a video"
    sub = subparsers.add_parser("demo", help=text, description=__doc__.split("\n\n")[0] + "\n\n" + text)
    sub.add_argument("-o", "--out", default="runs/demo", help="output folder (default: runs/demo)")
    sub.add_argument("--stage1-steps", type=int, default=24, help="stage-1 steps (default: 24)")
    sub.add_argument("--stage2-steps", type=int, default=2000, help="stage-2 steps (default: 2000)")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    def run(args: argparse.Namespace) -> int:
        report = run_demo(args.out, stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps,
                          seed=args.seed, progress=not args.quiet)
        print(report.summary())
        return 0

    sub.set_defaults(func=run)
