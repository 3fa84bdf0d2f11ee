"""``python -m float_core drive`` and ``dub``: a video as input (:mod:`float_core.video_in`).

* ``drive --image IMG --video VID --out OUT.mp4``: the portrait moves as the face in the video
  (reenactment, LIA's relative transfer).
* ``dub --video VID --audio WAV --out OUT.mp4``: the video's own frames with the lips following
  new speech.

``generate --drive VID --drive-groups head`` (lips from speech, head from a video) is a flag of
``generate`` (:mod:`float_core.generate_cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from .cli_options import add_model_arguments, add_sampling_arguments, pipeline_from_args, print_result
from .config import DEFAULT_DUB_GROUPS

DRIVE_DESCRIPTION = (
    "Animate a portrait with the face motion of a video (reenactment). Kept from --image: the identity, the "
    "face's look and the picture around it. Taken from --video: all the motion (head pose, eyes, mouth, "
    "expression), by default relative to the video's first frame (the portrait starts as it is and makes the "
    "video's changes; --absolute copies the video's pose), the length (at 25 fps) and the sound, if it has any. "
    "Nothing is sampled, so there is no --seed.")
DUB_DESCRIPTION = (
    "Dub a talking-head video with new speech. Kept from --video: the picture (every pixel outside the face's "
    "crop square is the input frame's), the resolution, the identity (one reference frame, by default the first "
    "frontal, sharp face) and, frame by frame, the motion of --groups (default head, eyes, other). Taken from "
    "--audio: the mouth (motion sampled for the speech), the length (the video is played back and forth when "
    "shorter, cut when longer) and the sound.")


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``drive`` and ``dub`` (:mod:`float_core.cli`)."""
    p = _command(subparsers, "drive", "animate a portrait with the face motion of a video (reenactment)",
                 DRIVE_DESCRIPTION, image="portrait image (JPEG, PNG, WebP, ...)",
                 video="driving video of a face (MP4, MOV, MKV, WebM; phone videos too)")
    g = p.add_argument_group("motion")
    g.add_argument("--absolute", dest="relative", action="store_false",
                   help="take the video's pose itself instead of its change since the first frame")
    _add_face_arguments(g)
    g.add_argument("--video-face", type=int, default=1, help="which face of the video to follow, 1 = the largest")
    g.add_argument("--paste-back", action="store_true",
                   help="paste the animated face back into the original photo at full resolution")
    add_model_arguments(p.add_argument_group("model"))
    p.set_defaults(func=run_drive)

    p = _command(subparsers, "dub", "dub a talking-head video with new speech (lips follow the speech)",
                 DUB_DESCRIPTION, video="talking-head video (MP4, MOV, MKV, WebM; phone videos too)",
                 audio="new speech (wav, flac, mp3, ogg, m4a, webm or a video's audio)")
    g = p.add_argument_group("generation")
    add_sampling_arguments(g)
    g.add_argument("--groups", default=",".join(DEFAULT_DUB_GROUPS),
                   help="comma-separated direction groups kept from each video frame: mouth, eyes, head, other "
                        f"(default: {','.join(DEFAULT_DUB_GROUPS)}; the rest comes from the speech)")
    g.add_argument("--reference-frame", type=int, default=None,
                   help="the video frame (at 25 fps, 0-based) whose face is the identity (default: the first "
                        "frontal, sharp face)")
    g.add_argument("--face", type=int, default=1, help="which face of the video to dub, 1 = the largest")
    g.add_argument("--crop-scale", type=float, default=None,
                   help="crop side in face-box sizes (default: 1.6, the reference's crop)")
    g.add_argument("--max-seconds", type=float, default=None, help="reject speech longer than this")
    add_model_arguments(p.add_argument_group("model"))
    p.set_defaults(func=run_dub)


def _command(subparsers: argparse._SubParsersAction, name: str, summary: str, description: str,
             **inputs: str) -> argparse.ArgumentParser:
    """A sub-command with the required input files ``--NAME`` (help texts) and ``--out/-o``."""
    p = subparsers.add_parser(name, help=summary, description=description)
    io = p.add_argument_group("inputs and output")
    for flag, text in inputs.items():
        io.add_argument(f"--{flag}", required=True, help=text)
    io.add_argument("--out", "-o", required=True, help="output .mp4 path")
    return p


def _add_face_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--no-crop", dest="crop", action="store_false",
                   help="do not detect and crop the faces; resize the whole portrait and every whole video frame")
    g.add_argument("--face", type=int, default=1, help="which face of the portrait to animate, 1 = the largest")
    g.add_argument("--crop-scale", type=float, default=None,
                   help="crop side in face-box sizes (default: 1.6, the reference's crop)")


def _face_index(flag: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{flag}: 1 is the largest face, got {value}")
    return value - 1


def _run(args: argparse.Namespace, inputs: dict[str, str], work: Callable[[Any], Any]) -> int:
    """Check the files, load the model, run ``work(pipe)``; errors are one line, no traceback."""
    for flag, value in inputs.items():
        if not Path(value).is_file():
            print(f"error: {flag}: no such file: {value}", file=sys.stderr)
            return 2
    if not Path(args.out).parent.is_dir():
        print(f"error: --out: the folder {Path(args.out).parent} does not exist", file=sys.stderr)
        return 2
    try:
        result = work(pipeline_from_args(args))
    except (ValueError, OSError) as exc:  # bad input or weights: say what is wrong
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return print_result(result)


def run_drive(args: argparse.Namespace) -> int:
    """``drive``: portrait + driving video -> MP4."""
    return _run(args, {"--image": args.image, "--video": args.video}, lambda pipe: pipe.drive(
        args.image, args.video, args.out, relative=args.relative, crop=args.crop,
        face=_face_index("--face", args.face), video_face=_face_index("--video-face", args.video_face),
        crop_scale=args.crop_scale, paste_back=args.paste_back, batch_size=args.batch_size,
        progress=not args.quiet))


def run_dub(args: argparse.Namespace) -> int:
    """``dub``: talking-head video + new speech -> MP4."""
    from .cli_options import sampling_from_args

    return _run(args, {"--video": args.video, "--audio": args.audio}, lambda pipe: pipe.dub(
        args.video, args.audio, args.out, sampling_from_args(args), groups_from_video=args.groups,
        reference_frame=args.reference_frame, face=_face_index("--face", args.face), crop_scale=args.crop_scale,
        batch_size=args.batch_size, max_seconds=args.max_seconds, progress=not args.quiet))
