"""Command-line flags shared by ``generate``, ``batch``, ``stream`` and ``converse``: one spelling,
one default.

Every sampling flag defaults to None ("not given"), so that :class:`SamplingConfig` (and, for a
batch, each job's own fields) fill in the value: the defaults live in one place.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .config import DTYPE_CHOICES, EMOTIONS, PRESET_NAMES, SAMPLING_FIELDS, SOLVER_NAMES, SamplingConfig

if TYPE_CHECKING:
    from .pipeline import FloatPipeline

__all__ = ["add_generation_and_model_groups", "add_generation_arguments", "add_model_arguments",
           "add_sampling_arguments", "pipeline_from_args", "sampling_from_args", "settings_from_args"]

_DEFAULTS = SamplingConfig()


def add_sampling_arguments(g: argparse._ArgumentGroup) -> None:
    """The sampling flags (SamplingConfig: emotion, a_cfg, e_cfg, nfe, solver, seed).

    Every flag defaults to None ("not given"): :func:`sampling_from_args` fills in
    SamplingConfig's defaults, which the help texts quote.
    """
    d = _DEFAULTS
    g.add_argument("--emotion", default=None, choices=("auto", "dynamic") + EMOTIONS,
                   help="'auto' uses the emotion predicted from the whole speech, 'dynamic' each 2 s window's "
                        "own estimate; a name redirects to it (default: auto)")
    g.add_argument("--a-cfg", type=float, default=None, help=f"audio guidance scale gamma_a (default: {d.a_cfg:g})")
    g.add_argument("--e-cfg", type=float, default=None,
                   help=f"emotion guidance scale gamma_e (default: {d.e_cfg:g})")
    g.add_argument("--nfe", type=int, default=None, help=f"vector-field evaluations per window (default: {d.nfe})")
    g.add_argument("--solver", default=None, choices=SOLVER_NAMES, help=f"ODE solver (default: {d.solver})")
    g.add_argument("--seed", type=int, default=None, help="noise seed for reproducible output (default: random)")


def sampling_from_args(args: argparse.Namespace) -> SamplingConfig:
    """The :class:`SamplingConfig` of the sampling flags (flags not given keep its defaults).

    Raises:
        ValueError: a flag's value is out of range (the message names it).
    """
    return _DEFAULTS.with_overrides(**{name: getattr(args, name) for name in SAMPLING_FIELDS})


def add_generation_arguments(g: argparse._ArgumentGroup) -> None:
    """The portrait and motion flags of ``generate`` and ``batch`` (crop, paste-back, face,
    crop scale, preset, max seconds), after the sampling flags."""
    add_sampling_arguments(g)
    g.add_argument("--no-crop", dest="crop", action="store_false",
                   help="do not detect and crop the face; resize the whole image instead")
    g.add_argument("--paste-back", action="store_true",
                   help="paste the animated face back into the original photo at full resolution")
    g.add_argument("--face", type=int, default=1,
                   help="which detected face to animate, 1 = the largest (default), 2 = the next, ...")
    g.add_argument("--crop-scale", type=float, default=None,
                   help="crop side in face-box sizes (default: 1.6, the reference's crop)")
    g.add_argument("--preset", default=None, metavar="NAME",
                   help=f"motion preset: {', '.join(repr(p) for p in PRESET_NAMES)} (default: none)")
    g.add_argument("--max-seconds", type=float, default=None, help="reject audio longer than this")


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The job settings of :func:`add_generation_arguments`' flags, by job field name (None: not
    given), for :func:`float_core.batch.parse_settings`."""
    return dict({name: getattr(args, name) for name in SAMPLING_FIELDS}, crop=args.crop,
                paste_back=args.paste_back, face=args.face, crop_scale=args.crop_scale, preset=args.preset)


def add_model_arguments(m: argparse._ArgumentGroup) -> None:
    """The model flags (checkpoint, audio/emotion model, device, dtype, batch size, quiet)."""
    m.add_argument("--checkpoint", default=None,
                   help="checkpoint folder (authors' layout) or single file; default $FLOAT_CHECKPOINT_DIR "
                        "or ./checkpoints; 'tiny-random' for a test model")
    m.add_argument("--audio-model", default=None, help="wav2vec2-base-960h folder or Hugging Face id")
    m.add_argument("--emotion-model", default=None, help="speech-emotion model folder or Hugging Face id")
    m.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    m.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="precision: auto (default) = bfloat16 where the device has native bf16 "
                        "(AMX/AVX512-BF16 CPUs, CUDA sm80+), else float32; float32 reproduces the reference; "
                        "bfloat16 runs the decoder in bf16 (FMT and encoders float32), float16 every stage "
                        "(for GPUs; emulated and slow on most CPUs)")
    m.add_argument("--batch-size", type=int, default=8, help="frames decoded at once (default: 8)")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def pipeline_from_args(args: argparse.Namespace) -> FloatPipeline:
    """The :class:`~float_core.pipeline.FloatPipeline` of the model flags (:func:`add_model_arguments`);
    says what runs on stderr unless ``--quiet``. Raises ValueError (missing weights, bad device or dtype)."""
    from .pipeline import FloatPipeline

    pipe = FloatPipeline.from_pretrained(args.checkpoint, args.audio_model, args.emotion_model,
                                         device=args.device, dtype=args.dtype)
    if not args.quiet:
        print(f"running on {pipe.describe()}", file=sys.stderr)
    return pipe


def print_result(result: Any) -> int:
    """Print a finished video's notes (stderr) and summary (stdout); the exit code 0."""
    if result.message:
        print(f"note: {result.message}", file=sys.stderr)
    print(result.summary())
    return 0


def add_generation_and_model_groups(parser: argparse.ArgumentParser, generation_title: str = "generation") -> None:
    """The "generation" (:func:`add_generation_arguments`) and "model" (:func:`add_model_arguments`)
    flag groups of a command that makes videos."""
    add_generation_arguments(parser.add_argument_group(generation_title))
    add_model_arguments(parser.add_argument_group("model"))
