"""Conversations: peak memory against length, and the cost of composing the tiles.

1. Memory: each length runs `FloatPipeline.converse` in a fresh subprocess (tiny random model,
   two characters taking turns, speaker layout, a real MP4); the child reports its own peak
   resident memory. Motion is T x d per character and frames are decoded a batch at a time,
   so the peak should hardly grow with length.
2. Composition: `Layout.compose` of 8 frames of official-size (512 px) tiles per layout and
   character count, in ms per frame (what the layouts add on top of decoding).

    python benchmarks/conversation.py [--seconds 10 120] [--nfe 2] [--threads 1] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(seconds: float, nfe: int, threads: int) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from float_core import FloatPipeline

    torch.set_num_threads(threads)
    sr = 16000
    t = np.arange(sr) / sr
    second = (0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    total = int(seconds * sr)
    turns = (np.arange(total) // (4 * sr)) % 2  # 4 s turns: A, B, A, ...
    voice = np.tile(second, int(np.ceil(seconds)))[:total]
    tracks = [np.where(turns == 0, voice, 0).astype(np.float32), np.where(turns == 1, voice, 0).astype(np.float32)]
    images = [np.random.default_rng(i).integers(0, 256, (512, 512, 3), dtype=np.uint8) for i in range(2)]
    pipe = FloatPipeline.from_pretrained("tiny-random", device="cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = pipe.converse(images, tracks, Path(tmp) / "out.mp4", layout="speaker", crop=False, nfe=nfe,
                               seed=0)
        size = (Path(tmp) / "out.mp4").stat().st_size
    print(json.dumps({"seconds": seconds, "frames": result.num_frames, "mp4_bytes": size,
                      "wall_s": time.perf_counter() - start, "timings": result.timings,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def compose_cost(repeats: int = 3) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from float_core.conversation import Layout

    frames = 8
    for count in (2, 4):
        tiles = [np.random.default_rng(i).integers(0, 256, (frames, 512, 512, 3), dtype=np.uint8)
                 for i in range(count)]
        speaking = np.zeros((count, frames), bool)
        speaking[0] = True
        for kind in ("row", "grid", "speaker"):
            layout = Layout.make(kind, [f"Name {i}" for i in range(count)], speaking, 512, captions=True)
            layout.compose(tiles, 0)  # captions rendered once
            best = min(_timed(lambda: layout.compose(tiles, 0)) for _ in range(repeats))
            print(f"compose {kind:7s} {count} characters, {layout.width}x{layout.height}: "
                  f"{1000 * best / frames:6.2f} ms per frame")


def _timed(fn) -> float:  # noqa: ANN001 - a benchmark helper
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 120.0])
    parser.add_argument("--nfe", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the memory runs (default 1)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--_child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child is not None:
        _child(args._child, args.nfe, args.threads)
        return 0
    print(f"load average {os.getloadavg()[0]:.1f}")
    compose_cost()
    if args.skip_memory:
        return 0
    from long_audio_memory import measure_lengths  # benchmarks/ is on sys.path when a script of it runs

    def phases(row: dict) -> str:
        return " (" + ", ".join(f"{k} {v:.1f}" for k, v in row["timings"].items()) + ")"

    return measure_lengths(__file__, args.seconds, ["--nfe", str(args.nfe), "--threads", str(args.threads)],
                           "two characters", phases)


if __name__ == "__main__":
    raise SystemExit(main())
