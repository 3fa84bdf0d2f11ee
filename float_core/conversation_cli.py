"""``python -m float_core converse``: several portraits in one video, each speaking its own part.

Speech is one track per portrait (``--audio a.wav --audio b.wav``; ``--audio silent`` for a
character who only listens), one multi-channel file (``--audio stereo.wav``: channel i is
portrait i), or a script (``--script dialogue.txt``, "Name: line" per line, spoken by
``--voice Name=SPEC`` voices, see :mod:`float_core.tts`)::

    python -m float_core converse --image ana.png --image ben.png --script dialogue.txt \\
        --voice Ana=espeak:en-us+f3 --voice Ben=espeak:en-gb+m3 --names Ana,Ben --layout speaker --out talk.mp4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import DEFAULT_GAP, LAYOUTS
from .generate_cli import add_model_arguments, add_sampling_arguments, pipeline_from_args, sampling_from_args

#: ``--audio silent``: a character with no speech of its own (it only listens).
SILENT = "silent"


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "converse", help="several portraits in one video, each speaking its own part (tracks or a script)",
        description="Make one video of several talking portraits: each speaks its own track (or its lines of a "
                    "script) and idles, mouth closed, while the others talk. Audio is the mix of the tracks.",
    )
    io = p.add_argument_group("inputs and output")
    io.add_argument("--image", action="append", required=True, metavar="IMAGE",
                    help="a portrait; repeat for every character, in order")
    io.add_argument("--audio", action="append", default=None, metavar="FILE",
                    help="one speech file per --image, in order ('silent' for one who only listens), or a "
                         "single multi-channel file whose channel i is portrait i")
    io.add_argument("--script", metavar="FILE", default=None,
                    help="a dialogue: 'Name: line' per line, blank lines and [pause 1.5] as pauses")
    io.add_argument("--voice", action="append", default=None, metavar="NAME=SPEC",
                    help="a script character's voice: espeak:<voice> (e.g. espeak:en-us+f3, offline), "
                         "piper:<model.onnx>, url:<voice> (FLOAT_TTS_URL); default: distinct espeak-ng voices")
    io.add_argument("--names", default=None,
                    help="the characters' names in --image order, comma-separated (default: the script's "
                         "speakers in order of appearance)")
    io.add_argument("-o", "--out", required=True, help="output .mp4 path")
    g = p.add_argument_group("video")
    g.add_argument("--layout", choices=LAYOUTS, default="row",
                   help="row: side by side (default); grid; speaker: the current speaker large, the others small")
    g.add_argument("--no-captions", dest="captions", action="store_false", help="no name captions under the tiles")
    g.add_argument("--tile-size", type=int, default=None,
                   help="side of a character's tile in pixels (default: the model's frame size)")
    g.add_argument("--gap", type=float, default=DEFAULT_GAP,
                   help=f"script: seconds between lines (default: {DEFAULT_GAP:g})")
    g.add_argument("--no-crop", dest="crop", action="store_false",
                   help="do not detect and crop the faces; resize the whole images instead")
    g.add_argument("--max-seconds", type=float, default=None, help="reject a longer conversation")
    add_sampling_arguments(p.add_argument_group("generation (every character; each its own seed from --seed)"))
    add_model_arguments(p.add_argument_group("model"))
    p.set_defaults(func=run)


def voices_from_args(values: list[str] | None) -> dict[str, str]:
    """``["Ana=espeak:en-us+f3", ...]`` -> ``{"Ana": "espeak:en-us+f3"}`` (ValueError naming a bad one)."""
    voices: dict[str, str] = {}
    for value in values or []:
        name, sep, spec = value.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise ValueError(f"--voice {value!r}: expected NAME=SPEC, e.g. --voice Ana=espeak:en-us+f3")
        voices[name.strip()] = spec.strip()
    return voices


def run(args: argparse.Namespace) -> int:
    try:
        speech, voices = _speech_from_args(args)
        sampling = sampling_from_args(args)
        pipe = pipeline_from_args(args)
        result = pipe.converse(
            args.image, speech, args.out, names=args.names, layout=args.layout, sampling=sampling,
            progress=not args.quiet, voices=voices or None, captions=args.captions, crop=args.crop,
            tile_size=args.tile_size, gap=args.gap, batch_size=args.batch_size, max_seconds=args.max_seconds)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for message in result.messages:
        print(f"note: {message}", file=sys.stderr)
    for seg in result.segments:
        print(f"{seg.start_seconds:6.2f}-{seg.end_seconds:6.2f} s  {seg.name}: {seg.text}")
    print(f"{result.summary()}; seed {result.seed}")
    return 0


def _speech_from_args(args: argparse.Namespace) -> tuple[object, dict[str, str]]:
    """The ``speech`` argument of ``converse`` and the script's voices."""
    if (args.audio is None) == (args.script is None):
        raise ValueError("give either --audio (one per --image, or one multi-channel file) or --script")
    if args.script is not None:
        from .conversation import Script

        path = Path(args.script)
        if not path.is_file():
            raise ValueError(f"--script: no such file: {path}")
        return Script.parse(path.read_text(encoding="utf-8")), voices_from_args(args.voice)
    if args.voice:
        raise ValueError("--voice: voices speak a --script; with --audio the speech is already given")
    if len(args.audio) == 1 and len(args.image) > 1:
        return args.audio[0], {}  # one multi-channel file
    return [None if a == SILENT else a for a in args.audio], {}
