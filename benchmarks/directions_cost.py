"""Cost of the analyses behind named directions and dynamic emotion, at official size.

Builds a random official-size model (``float_core.bench.random_model``: non-degenerate random
weights, flow offsets scaled as a trained decoder's), encodes the example portrait (resized, no
face crop) and prints the median wall time of

- ``FloatPipeline.describe_directions`` (2M + 1 = 41 decoded frames, attribution) per batch size,
  next to the time of decoding 41 frames alone (the floor);
- ``FloatPipeline.emotion_timeline`` on ``--seconds`` of synthetic speech-like audio, next to
  the whole-clip emotion pass ``emotion_of`` (what ``prepare_audio`` already pays).

    python benchmarks/directions_cost.py [--size official|tiny] [--repeats 3] [--threads N]
                                         [--batch-sizes 8,41] [--seconds 10] [--dtype float32]

Random weights: the groups printed are not those of the released model, only the cost is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from float_core.bench import EXAMPLE_PORTRAIT, random_model
from float_core.pipeline import FloatPipeline


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speech_like(seconds: float, rate: int = 16000) -> np.ndarray:
    """Amplitude-modulated harmonics with a pitch glide (deterministic)."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.2 * wave).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="official", choices=["official", "tiny"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-sizes", default="8,41", help="comma-separated frames per decoder call")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length for the emotion timeline")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = FloatPipeline(random_model(args.size), device=args.device, dtype=args.dtype)
    from PIL import Image

    size = pipe.config.image_size
    photo = np.asarray(Image.open(EXAMPLE_PORTRAIT).convert("RGB").resize((size, size)))
    source = pipe.prepare_image(photo, crop=False)
    m = pipe.config.motion_dim
    print(f"model {args.size} ({size} px), device {pipe.device}, dtype {args.dtype}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")

    probe = source.source_motion[None] + 0.1 * torch.randn(2 * m + 1, pipe.config.style_dim,
                                                           generator=torch.Generator().manual_seed(0)).to(pipe.device)
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        pipe.describe_directions(source, batch_size=bs)  # warm-up
        t_desc = median_time(lambda: pipe.describe_directions(source, batch_size=bs), args.repeats)
        t_dec = median_time(lambda: [pipe.decode_frames(source, probe[i:i + bs]) for i in range(0, 2 * m + 1, bs)],
                            args.repeats)
        print(f"describe_directions batch {bs:3d}: {t_desc:7.2f} s   (decoding {2 * m + 1} frames alone: "
              f"{t_dec:6.2f} s, {1000 * t_dec / (2 * m + 1):.0f} ms/frame)")
    groups = Counter(d.group for d in pipe.describe_directions(source))
    print(f"groups (random weights): {dict(groups)}")

    wave = speech_like(args.seconds)
    pipe.emotion_of(wave[:16000])  # warm-up
    t_clip = median_time(lambda: pipe.emotion_of(wave), args.repeats)
    speech = pipe.prepare_audio(wave)
    t_timeline = median_time(lambda: pipe.emotion_timeline(speech), args.repeats)
    windows = pipe.emotion_timeline(speech).shape[0]
    print(f"emotion on {args.seconds:g} s: whole clip {t_clip:.2f} s; timeline ({windows} windows) {t_timeline:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
