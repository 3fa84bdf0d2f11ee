"""``python -m float_core stream``: frames written while the speech is generated or still arriving.

``--audio FILE`` streams a known clip (the frames equal ``generate``'s with the same seed and
``--no-idle``); ``--audio -`` reads raw 16 kHz mono s16le PCM from stdin as it comes, e.g.::

    espeak-ng --stdout "Hello there" | ffmpeg -loglevel error -i - -f s16le -ac 1 -ar 16000 - \\
        | python -m float_core stream --image portrait.png --audio - --out live.mp4

The MP4 is a fragmented MP4 written in place: valid and playable at every moment (a killed
process leaves every finished second), complete with every frame and the audio when the
command ends. ``--hls DIR`` also writes a live HLS playlist (``DIR/stream.m3u8``, one-second
MPEG-TS segments). At the end it prints the time to first frame and the real-time factor.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from .cli_options import add_model_arguments, add_sampling_arguments
from .config import SAMPLES_PER_FRAME, StreamOptions

#: Bytes read from stdin at most per chunk (20 ms of s16le at 16 kHz; less is taken as it comes).
STDIN_BLOCK = SAMPLES_PER_FRAME


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stream", help="stream a talking head while the speech is generated or arrives (stdin PCM)",
        description="Stream a talking-head video: frames are written as they are made, from a speech "
                    "file or from raw 16 kHz mono s16le PCM on stdin (--audio -). The MP4 is fragmented "
                    "(valid at every moment); --hls adds a live HLS playlist.",
    )
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--image", required=True, help="portrait image (JPEG, PNG, WebP, ...)")
    io.add_argument("--audio", required=True,
                    help="speech file, or '-' for raw 16 kHz mono s16le PCM on stdin (live)")
    io.add_argument("-o", "--out", required=True, help="output .mp4 (fragmented MP4, written as it goes)")
    io.add_argument("--hls", metavar="DIR", default=None,
                    help="also write a live HLS playlist DIR/stream.m3u8 with one-second segments")
    g = p.add_argument_group("generation")
    add_sampling_arguments(g)
    g.add_argument("--no-crop", dest="crop", action="store_false",
                   help="do not detect and crop the face; resize the whole image instead")
    s = p.add_argument_group("streaming")
    s.add_argument("--no-idle", dest="idle", action="store_false",
                   help="no silence mode: every frame is driven by its audio, nothing is inserted on stalls")
    live = StreamOptions()  # the live defaults, one home
    s.add_argument("--chunk-frames", type=int, default=live.chunk_frames,
                   help=f"live input: frames committed per sampling pass (latency: a frame waits for its chunk "
                        f"and the look-ahead; default {live.chunk_frames}; 0 = whole windows)")
    s.add_argument("--lookahead", type=float, default=live.lookahead_seconds,
                   help=f"live input: seconds of audio after a chunk its features and pass see (adds latency; "
                        f"default {live.lookahead_seconds:g})")
    s.add_argument("--context", type=float, default=live.context_seconds,
                   help=f"live input: seconds of left context of the features (default {live.context_seconds:g})")
    s.add_argument("--stall-timeout", type=float, default=live.stall_timeout,
                   help=f"live input: seconds the input may lag the clock before idle frames are inserted "
                        f"(default {live.stall_timeout:g}; 0 = never insert)")
    m = p.add_argument_group("model")
    add_model_arguments(m)
    p.set_defaults(func=run)


def stdin_chunks(stream: BinaryIO, block: int = STDIN_BLOCK) -> Iterator[np.ndarray]:
    """float32 chunks of raw s16le PCM read from ``stream`` as it arrives (odd bytes carried over)."""
    read = getattr(stream, "read1", stream.read)
    carry = b""
    while True:
        data = read(block)
        if not data:
            break
        data = carry + data
        usable = len(data) - len(data) % 2
        carry = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from .pipeline import FloatPipeline

    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"error: --out: the folder {out.parent} does not exist", file=sys.stderr)
        return 2
    if args.audio != "-" and not Path(args.audio).is_file():
        print(f"error: --audio: no such file: {args.audio} (use '-' for PCM on stdin)", file=sys.stderr)
        return 2
    hls_dir = Path(args.hls) if args.hls else None
    if hls_dir is not None:
        hls_dir.mkdir(parents=True, exist_ok=True)
    try:
        pipe = FloatPipeline.from_pretrained(args.checkpoint, args.audio_model, args.emotion_model,
                                             device=args.device, dtype=args.dtype)
        source = pipe.prepare_image(args.image, crop=args.crop)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    audio: Any = stdin_chunks(sys.stdin.buffer) if args.audio == "-" else args.audio
    # SIGTERM ends the stream like Ctrl-C: the fragments written so far stay a valid MP4.
    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        return _stream(args, pipe, source, audio, out, hls_dir)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _stream(args, pipe, source, audio, out, hls_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stream(args: argparse.Namespace, pipe: Any, source: Any, audio: Any, out: Path, hls_dir: Path | None) -> int:
    from .media.video import VideoWriter

    fps, rate = int(pipe.config.fps), pipe.config.sample_rate
    writers = [VideoWriter(out, fps=fps, audio_rate=rate, container="fmp4", preset="veryfast")]
    if hls_dir is not None:
        writers.append(VideoWriter(hls_dir / "stream.m3u8", fps=fps, audio_rate=rate, container="hls",
                                   preset="veryfast"))
    start = time.perf_counter()
    first = None
    frames = speaking = 0
    interrupted = False
    chunks = pipe.stream(source, audio, a_cfg=args.a_cfg, e_cfg=args.e_cfg, nfe=args.nfe, solver=args.solver,
                         emotion=args.emotion, seed=args.seed, idle=args.idle, batch_size=args.batch_size,
                         lookahead_seconds=args.lookahead, context_seconds=args.context,
                         chunk_frames=args.chunk_frames or None,
                         stall_timeout=args.stall_timeout or None)
    try:
        for chunk in chunks:
            if first is None:
                first = time.perf_counter() - start
                if not args.quiet:
                    print(f"first frame after {first:.2f} s", file=sys.stderr)
            for writer in writers:
                writer.write(chunk.frames, audio=chunk.audio)
            frames += chunk.num_frames
            speaking += int(chunk.speaking.sum())
            if not args.quiet:
                print(f"\r{frames / fps:7.1f} s streamed ({frames} frames, "
                      f"{'speaking' if chunk.speaking[-1] else 'idle'})   ", end="", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
    except (ValueError, RuntimeError, OSError) as exc:
        chunks.close()
        for writer in writers:
            writer.abort()  # a fragmented MP4 keeps what was written (valid)
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        chunks.close()
    if frames == 0:
        for writer in writers:
            writer.abort()
        print("\nerror: no frames were made (interrupted before the first window)", file=sys.stderr)
        return 130 if interrupted else 1
    for writer in writers:
        writer.close()
    wall = time.perf_counter() - start
    seconds = frames / fps
    if not args.quiet:
        print(file=sys.stderr)
    status = "interrupted; kept" if interrupted else "wrote"
    print(f"{status} {out}: {frames} frames, {seconds:.2f} s ({100 * speaking / frames:.0f}% speaking) in "
          f"{wall:.1f} s; time to first frame {first:.2f} s, real-time factor {wall / seconds:.2f}"
          + (f"; HLS playlist {hls_dir / 'stream.m3u8'}" if hls_dir else ""))
    return 130 if interrupted else 0
