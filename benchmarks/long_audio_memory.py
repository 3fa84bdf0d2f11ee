"""Peak memory of a whole `generate` run versus audio length (the aim: 10 min within 1.5x of 10 s).

Each length runs in a fresh subprocess with the tiny random model and writes a real MP4 from
a synthetic speech-like signal; the child reports its own peak resident memory.

    python benchmarks/long_audio_memory.py [--seconds 10 600] [--nfe 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


def _child(seconds: float, nfe: int) -> None:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from float_core import FloatPipeline

    sr = 16000
    # One second of a modulated tone, tiled: the input itself costs only its own 4 bytes/sample,
    # so what is measured is the pipeline's memory, not the benchmark's signal synthesis.
    t = np.arange(sr) / sr
    second = (0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    audio = np.tile(second, int(np.ceil(seconds)))[: int(seconds * sr)]
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    pipe = FloatPipeline.from_pretrained("tiny-random", device="cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = pipe.generate(image, audio, Path(tmp) / "out.mp4", crop=False, nfe=nfe, seed=0,
                               progress=False)
        size = (Path(tmp) / "out.mp4").stat().st_size
    print(json.dumps({"seconds": seconds, "frames": result.num_frames, "mp4_bytes": size,
                      "wall_s": time.perf_counter() - start,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure_lengths(script: str, lengths: list[float], extra: list[str], label: str = "audio",
                    details: Callable[[dict], str] = lambda row: "") -> int:
    """Run ``script --_child SECONDS *extra`` in a fresh, offline interpreter per length (each
    child prints one JSON line with its own peak memory) and print a row per length and the
    peak-memory ratio of the longest to the shortest. Returns the exit code."""
    rows = []
    for seconds in lengths:
        proc = subprocess.run([sys.executable, script, "--_child", str(seconds), *extra], capture_output=True,
                              text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['seconds']:7.0f} s {label}: {r['frames']:6d} frames, peak RSS {r['peak_rss_mb']:7.1f} MB, "
              f"wall {r['wall_s']:6.1f} s{details(r)}")
    if len(rows) > 1:
        print(f"peak memory ratio longest/shortest: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 600.0])
    parser.add_argument("--nfe", type=int, default=2)
    parser.add_argument("--_child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child is not None:
        _child(args._child, args.nfe)
        return 0
    return measure_lengths(__file__, args.seconds, ["--nfe", str(args.nfe)])


if __name__ == "__main__":
    raise SystemExit(main())
