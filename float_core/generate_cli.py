"""``python -m float_core generate``: portrait + speech -> talking-head MP4, one job or a batch.

Batch mode (``--jobs FILE -o DIR``) is the ``batch`` command in one process
(:mod:`float_core.batch_cli`): job fields ``id`` (the video is ``DIR/<id>.mp4``), ``image``,
``audio`` or ``text``, optionally ``drive`` and ``drive_groups`` (this command's ``--drive`` and
``--drive-groups``), the settings of :data:`float_core.batch.SETTING_FIELDS`, and the other
modes (``mode``: drive, dub), with ``DIR/results.jsonl`` and resume. Missing fields take the
command-line values. The sampling defaults are SamplingConfig's (a flag left out is "not given").
"""

from __future__ import annotations

import argparse
import sys

from .cli_options import add_generation_and_model_groups, pipeline_from_args, print_result, settings_from_args
from .config import DEFAULT_DRIVE_GROUPS

__all__ = ["add_subparser", "run"]


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
    io.add_argument("-o", "--out", "--output", dest="output",
                    help="output .mp4 path (with --jobs: the output folder)")
    io.add_argument("--jobs", metavar="FILE",
                    help="batch mode, = `batch FILE -o DIR`: a CSV (header: id,image,audio[,emotion,a_cfg,...]), "
                         "JSON list or JSON Lines of jobs; each makes DIR/<id>.mp4 (a job's drive and "
                         "drive_groups fields are --drive and --drive-groups)")
    add_generation_and_model_groups(p)
    v = p.add_argument_group("head from a video")
    v.add_argument("--drive", metavar="VIDEO", default=None,
                   help="a video whose face gives the motion of --drive-groups (e.g. the head), relative to its "
                        "first frame; the lips stay with the speech")
    v.add_argument("--drive-groups", metavar="GROUPS", default=None,
                   help="comma-separated direction groups taken from --drive: mouth, eyes, head, other "
                        "(default: head)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.jobs:
        if args.drive or args.drive_groups:
            print("error: --drive: give it to one job (--image/--audio/--out); with --jobs, give each job its "
                  "drive (and drive_groups) field", file=sys.stderr)
            return 2
        if args.image or args.audio:
            print("error: --jobs: give either --jobs FILE -o DIR or --image/--audio/--out, not both",
                  file=sys.stderr)
            return 2
        if not args.output:
            print("error: --jobs needs -o DIR, the folder for <id>.mp4 and results.jsonl", file=sys.stderr)
            return 2
        from .batch_cli import run_jobs

        return run_jobs(args, args.jobs, args.output)
    from .batch import parse_settings

    missing = [flag for flag, value in (("--image", args.image), ("--audio", args.audio),
                                        ("--out", args.output)) if not value]
    try:
        if missing:
            raise ValueError(f"missing {', '.join(missing)} (or use --jobs FILE -o DIR for a batch)")
        if args.drive_groups and not args.drive:
            raise ValueError("--drive-groups: needs --drive VIDEO (the video the groups come from)")
        settings = parse_settings(settings_from_args(args))
        drive_groups = DEFAULT_DRIVE_GROUPS
        if args.drive_groups:
            from .video_in import parse_groups

            drive_groups = parse_groups(args.drive_groups)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        pipe = pipeline_from_args(args)
    except ValueError as exc:  # WeightsError and bad device/dtype: say what to do, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        result = pipe.generate(
            args.image, args.audio, args.output, settings.sampling, crop=settings.crop,
            paste_back=settings.paste_back, face=settings.face, crop_scale=settings.crop_scale,
            preset=settings.preset, batch_size=args.batch_size, max_seconds=args.max_seconds,
            progress=not args.quiet, drive=args.drive, drive_groups=drive_groups,
        )
    except (ValueError, OSError) as exc:  # bad input: a clear message, no traceback
        print(f"error: {args.output}: {exc}", file=sys.stderr)
        return 1
    return print_result(result)
