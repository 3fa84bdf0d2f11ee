"""``python -m float_core generate``: portrait + speech -> talking-head MP4, one job or a batch.

Batch mode (``--jobs FILE``) reads a CSV (header row) or JSON list of jobs, loads the model
once, reports and skips a failing job and completes the rest (exit code 1 if any failed).
Job fields: ``image``, ``audio``, ``output`` (required) and optionally ``emotion``, ``a_cfg``,
``e_cfg``, ``nfe``, ``solver``, ``seed`` (the :class:`~float_core.config.SamplingConfig`),
``crop``, ``paste_back``, ``face``, ``crop_scale``, ``drive``, ``drive_groups``; missing fields take the
command-line values.
The sampling defaults are SamplingConfig's (a flag left out is "not given").
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import DTYPE_CHOICES, EMOTIONS, SOLVER_NAMES, SamplingConfig

#: Job fields that are SamplingConfig fields.
_SAMPLING_FIELDS = ("emotion", "a_cfg", "e_cfg", "nfe", "solver", "seed")
_JOB_FIELDS = {"image", "audio", "output", "crop", "paste_back", "face", "crop_scale", "drive", "drive_groups",
               *_SAMPLING_FIELDS}
#: What ``--drive`` takes from the video when ``--drive-groups`` is not given.
DEFAULT_DRIVE_GROUPS = ("head",)
_DEFAULTS = SamplingConfig()


@dataclass
class Job:
    """One generation request (CLI arguments or one row of a jobs file)."""

    image: str
    audio: str
    output: str
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    crop: bool = True
    paste_back: bool = False
    face: int = 0  #: which detected face, 0 = the largest
    crop_scale: float | None = None  #: None: the reference's 1.6
    drive: str | None = None  #: a video whose face drives the groups below (lips from speech, head from video)
    drive_groups: tuple[str, ...] = DEFAULT_DRIVE_GROUPS


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="make a talking-head video from a portrait and speech",
        description="Generate a talking-head MP4 (H.264 + AAC speech) from a portrait and a speech file: the "
                    "identity and the picture from --image, the motion sampled for --audio, the length and the "
                    "sound from --audio. With --drive VIDEO the directions of --drive-groups (default: head) "
                    "follow the video's face instead, relative to its first frame (played back and forth when "
                    "shorter than the speech, cut when longer); the others, the mouth at least, stay with the "
                    "speech.",
    )
    io = p.add_argument_group("inputs and output (one job)")
    io.add_argument("--image", help="portrait image (JPEG, PNG, WebP, ...)")
    io.add_argument("--audio", help="speech (wav, flac, mp3, ogg, m4a, webm or a video's audio track)")
    io.add_argument("-o", "--out", "--output", dest="output", help="output .mp4 path")
    io.add_argument("--jobs", metavar="FILE",
                    help="batch mode: a CSV (header: image,audio,output[,emotion,a_cfg,...]) or JSON list of jobs")
    g = p.add_argument_group("generation")
    add_sampling_arguments(g)
    g.add_argument("--no-crop", dest="crop", action="store_false",
                   help="do not detect and crop the face; resize the whole image instead")
    g.add_argument("--paste-back", action="store_true",
                   help="paste the animated face back into the original photo at full resolution")
    g.add_argument("--face", type=int, default=1,
                   help="which detected face to animate, 1 = the largest (default), 2 = the next, ...")
    g.add_argument("--crop-scale", type=float, default=None,
                   help="crop side in face-box sizes (default: 1.6, the reference's crop)")
    g.add_argument("--max-seconds", type=float, default=None, help="reject audio longer than this")
    v = p.add_argument_group("head from a video")
    v.add_argument("--drive", metavar="VIDEO", default=None,
                   help="a video whose face gives the motion of --drive-groups (e.g. the head), relative to its "
                        "first frame; the lips stay with the speech")
    v.add_argument("--drive-groups", metavar="GROUPS", default=None,
                   help="comma-separated direction groups taken from --drive: mouth, eyes, head, other "
                        "(default: head)")
    m = p.add_argument_group("model")
    add_model_arguments(m)
    p.set_defaults(func=run)


def add_sampling_arguments(g: argparse._ArgumentGroup) -> None:
    """The sampling flags (SamplingConfig: emotion, a_cfg, e_cfg, nfe, solver, seed); shared with `stream`.

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
    return _DEFAULTS.with_overrides(**{name: getattr(args, name) for name in _SAMPLING_FIELDS})


def add_model_arguments(m: argparse._ArgumentGroup) -> None:
    """The model flags (checkpoint, audio/emotion model, device, dtype, batch size, quiet); shared with `stream`."""
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


def pipeline_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~float_core.pipeline.FloatPipeline` of the model flags (:func:`add_model_arguments`);
    says what runs on stderr unless ``--quiet``. Raises ValueError (missing weights, bad device or dtype)."""
    from .pipeline import FloatPipeline

    pipe = FloatPipeline.from_pretrained(args.checkpoint, args.audio_model, args.emotion_model,
                                         device=args.device, dtype=args.dtype)
    if not args.quiet:
        print(f"running on {pipe.describe()}", file=sys.stderr)
    return pipe


def run(args: argparse.Namespace) -> int:
    try:
        jobs = _jobs_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        pipe = pipeline_from_args(args)
    except ValueError as exc:  # WeightsError and bad device/dtype: say what to do, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failures = 0
    for index, job in enumerate(jobs, 1):
        label = f"[{index}/{len(jobs)}] " if len(jobs) > 1 else ""
        try:
            result = pipe.generate(
                job.image, job.audio, job.output, job.sampling, crop=job.crop, paste_back=job.paste_back,
                face=job.face, crop_scale=job.crop_scale, batch_size=args.batch_size,
                max_seconds=args.max_seconds, progress=not args.quiet, drive=job.drive,
                drive_groups=job.drive_groups,
            )
        except (ValueError, OSError) as exc:  # bad input: report, skip, go on with the next job
            failures += 1
            print(f"{label}error: {job.output}: {exc}", file=sys.stderr)
            continue
        if result.message:
            print(f"{label}note: {result.message}", file=sys.stderr)
        print(f"{label}{result.summary()}")
    if len(jobs) > 1:
        print(f"{len(jobs) - failures} of {len(jobs)} jobs done, {failures} failed")
    return 1 if failures else 0


def _jobs_from_args(args: argparse.Namespace) -> list[Job]:
    if args.drive_groups and not args.drive and not args.jobs:
        raise ValueError("--drive-groups: needs --drive VIDEO (the video the groups come from)")
    defaults = dict(crop=args.crop, paste_back=args.paste_back, face=args.face, crop_scale=args.crop_scale,
                    drive=args.drive, drive_groups=args.drive_groups,
                    **{name: getattr(args, name) for name in _SAMPLING_FIELDS})
    if args.jobs:
        if args.image or args.audio or args.output:
            raise ValueError("--jobs: give either --jobs or --image/--audio/--out, not both")
        return [_make_job({**defaults, **row}, f"--jobs row {i}") for i, row in enumerate(read_jobs(args.jobs), 1)]
    missing = [flag for flag, value in (("--image", args.image), ("--audio", args.audio),
                                        ("--out", args.output)) if not value]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (or use --jobs FILE for a batch)")
    return [_make_job(dict(defaults, image=args.image, audio=args.audio, output=args.output), "arguments")]


def read_jobs(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV (with header) or a JSON list of objects."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--jobs: no such file: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("--jobs: a JSON jobs file must be a list of objects")
    else:
        rows = [{k.strip(): v for k, v in row.items() if k and v not in (None, "")}
                for row in csv.DictReader(text.splitlines())]
    if not rows:
        raise ValueError(f"--jobs: {path} holds no jobs")
    for i, row in enumerate(rows, 1):
        unknown = set(row) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"--jobs row {i}: unknown field(s) {sorted(unknown)}; known: {sorted(_JOB_FIELDS)}")
    return rows


#: How a jobs-file text value becomes a SamplingConfig field (CSV cells are strings).
_PARSE = {"emotion": lambda v: str(v).lower(), "a_cfg": float, "e_cfg": float, "nfe": int, "solver": str,
          "seed": int}


def _make_job(values: dict[str, Any], where: str) -> Job:
    """A validated Job; SamplingConfig checks the sampling fields (its message names the field)."""
    from .video_in import parse_groups

    try:
        sampling = _DEFAULTS.with_overrides(**{name: None if values.get(name) in (None, "") else
                                               _PARSE[name](values[name]) for name in _SAMPLING_FIELDS})
        face = int(values.get("face") or 1)
        if face < 1:
            raise ValueError(f"face: 1 is the largest face, got {face}")
        scale = values.get("crop_scale")
        groups = values.get("drive_groups")
        job = Job(
            image=str(values["image"]), audio=str(values["audio"]), output=str(values["output"]),
            sampling=sampling, crop=_as_bool(values["crop"]), paste_back=_as_bool(values["paste_back"]),
            face=face - 1, crop_scale=None if scale in (None, "") else float(scale),
            drive=str(values["drive"]) if values.get("drive") else None,
            drive_groups=DEFAULT_DRIVE_GROUPS if groups in (None, "") else parse_groups(groups),
        )
    except KeyError as exc:
        raise ValueError(f"{where}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    return job


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")
