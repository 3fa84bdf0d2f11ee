"""Benchmark: per-stage times and peak memory of the FLOAT engine with random weights.

``python -m float_core.bench [--sizes tiny official] [--dtypes float32 bfloat16] [--seconds 4]``

Each (size, dtype) runs in a fresh subprocess so that its peak resident memory is its own.
Stages: image encode, audio features, speech emotion, sampling per window (NFE 10, guided:
a batch of three per evaluation), decode per frame (the renderer's batches), and the total
seconds of compute per second of audio. This is a benchmark that prints numbers, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np


def _timed(fn, repeat: int = 1) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(size: str, dtype: str, seconds: float, frames: int, device: str, threads: int | None) -> dict:
    """Time every stage for one configuration in this process."""
    import torch

    from .config import FloatConfig
    from .models.float_model import FloatModel
    from .pipeline import DrivingAudio, FloatPipeline, Prepared
    from .models.conditions import normalize_audio

    if threads:
        torch.set_num_threads(threads)
    config = FloatConfig.tiny() if size == "tiny" else FloatConfig.official()
    t_build = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FloatModel(config)
        with torch.no_grad():  # non-degenerate random weights, as in the reference fixtures
            for p in model.parameters():
                p.add_(torch.randn_like(p) * (0.1 if p.ndim <= 1 else 0.02))
    pipe = FloatPipeline(model, device=device, dtype=dtype)
    build_s = time.perf_counter() - t_build

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (config.image_size, config.image_size, 3), dtype=np.uint8)
    wave = (0.1 * rng.standard_normal(int(seconds * config.sample_rate))).astype(np.float32)
    x = normalize_audio(torch.from_numpy(wave).to(pipe.device)[None])

    with torch.no_grad():
        image_s, source = _timed(lambda: pipe.prepare_image(image, crop=False), repeat=2)
        audio_s, feats = _timed(lambda: pipe.model.audio_encoder(x)[0], repeat=2)
        emotion_s, probs = _timed(lambda: pipe.model.emotion_encoder(x)[0], repeat=2)
    prepared = Prepared(source, DrivingAudio(wave, feats, probs))
    windows = int(np.ceil(prepared.num_frames / config.num_frames))
    sample_s, motion = _timed(lambda: pipe.sample_motion(prepared, nfe=10, seed=0))
    n = min(frames, motion.shape[0])
    batch = min(8, n)
    next(pipe.render(prepared, motion[:batch], batch_size=batch))  # warm-up (allocator, weight folding)
    decode_s, _ = _timed(lambda: [None for _ in pipe.render(prepared, motion[:n], batch_size=batch)])
    per_frame = decode_s / n
    error = {}
    if pipe.dtype != torch.float32:  # the opt-in precision's error against the fp32 decoder
        from .models.decoder_inference import InferenceDecoder

        with torch.no_grad():
            latents = source.identity_latent[None] + motion[:batch]
            exact = InferenceDecoder(pipe.model.motion_autoencoder.dec, dtype=torch.float32)(
                latents, list(source.features))
            diff = (pipe.decoder(latents, list(source.features)) - exact).abs()
        error = {"frame_max_abs_err": diff.max().item(), "frame_mean_abs_err": diff.mean().item()}
    per_window = sample_s / windows
    total = image_s + audio_s + emotion_s + sample_s + per_frame * prepared.num_frames
    return {
        "size": size, "dtype": dtype, "device": str(pipe.device), "threads": torch.get_num_threads(),
        "audio_seconds": seconds, "frames": prepared.num_frames, "windows": windows,
        "build_s": build_s, "image_encode_s": image_s, "audio_features_s": audio_s,
        "emotion_s": emotion_s, "sampling_per_window_s": per_window, "decode_per_frame_s": per_frame,
        "decode_fps": 1.0 / per_frame, "total_s_per_audio_s": total / seconds,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, **error,
    }


def _print_table(rows: list[dict]) -> None:
    cols = [("size", "{}"), ("dtype", "{}"), ("device", "{}"), ("image_encode_s", "{:.3f}"),
            ("audio_features_s", "{:.3f}"), ("emotion_s", "{:.3f}"), ("sampling_per_window_s", "{:.3f}"),
            ("decode_per_frame_s", "{:.4f}"), ("decode_fps", "{:.2f}"), ("total_s_per_audio_s", "{:.2f}"),
            ("peak_rss_gb", "{:.2f}")]
    widths = [max(len(c), 9) for c, _ in cols]
    print("  ".join(c.rjust(w) for (c, _), w in zip(cols, widths)))
    for row in rows:
        print("  ".join(fmt.format(row[c]).rjust(w) for (c, fmt), w in zip(cols, widths)))
    for row in rows:
        if "frame_max_abs_err" in row:
            print(f"{row['size']}/{row['dtype']} decoder error vs float32: max abs "
                  f"{row['frame_max_abs_err']:.3g}, mean abs {row['frame_mean_abs_err']:.3g} (frames in [-1, 1])")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m float_core.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "official"], choices=["tiny", "official"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--seconds", type=float, default=4.0, help="audio length (default: 4 s = 2 windows)")
    parser.add_argument("--frames", type=int, default=16, help="frames decoded for the per-frame time")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)  # internal: run one config, print JSON
    args = parser.parse_args(argv)
    if args._one:
        print(json.dumps(measure(*args._one, args.seconds, args.frames, args.device, args.threads)))
        return 0
    rows = []
    for size in args.sizes:
        for dtype in args.dtypes:
            cmd = [sys.executable, "-m", "float_core.bench", "--_one", size, dtype, "--seconds",
                   str(args.seconds), "--frames", str(args.frames), "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode:
                print(f"{size}/{dtype} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"done {size}/{dtype}", file=sys.stderr)
    _print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
