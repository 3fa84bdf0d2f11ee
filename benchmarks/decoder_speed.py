"""Decoder speed: reference ``Synthesis`` vs the fast ``InferenceDecoder`` (fp32 and bf16).

Builds a motion auto-encoder (official 512x512 size by default) with random, non-degenerate
weights, encodes a random source image, renders ``--frames`` latents with each decoder and
prints ms/frame, the speed-up over the reference, and the max/mean absolute difference of the
frames from the reference.

    python benchmarks/decoder_speed.py [--frames 8] [--repeats 2] [--threads N] [--size 512]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from float_core.config import FloatConfig
from float_core.models.decoder_inference import InferenceDecoder
from float_core.models.motion_autoencoder import MotionAutoEncoder
from float_core.models.stylegan import perturb_constant_init_


def _time(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeats`` calls after one warm-up call, and the last output."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="latents rendered per call")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls (best is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: keep the default)")
    parser.add_argument("--size", type=int, default=512, help="image size (512 = official)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-reference", action="store_true", help="time only the fast decoder")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    torch.manual_seed(0)

    config = FloatConfig.official().replace(image_size=args.size)
    model = perturb_constant_init_(MotionAutoEncoder(config)).eval().to(args.device)
    # A smooth source like a photo (per-pixel noise makes warped features unrealistically steep).
    image = F.interpolate(torch.rand(1, 3, 8, 8, device=args.device) * 2 - 1, size=(args.size, args.size),
                          mode="bilinear", align_corners=False)
    identity, _, feats = model.encode(image)
    motion = model.lambda_to_motion(torch.randn(args.frames, config.motion_dim, device=args.device))
    latents = identity + motion
    print(f"device {args.device}, threads {torch.get_num_threads()}, size {args.size}, "
          f"{args.frames} frames per call, best of {args.repeats}")

    reference = None
    ref_ms = float("nan")
    if not args.skip_reference:
        seconds, reference = _time(lambda: model.decode(latents, feats), args.repeats)
        ref_ms = seconds * 1000 / args.frames
        print(f"reference Synthesis        {ref_ms:8.1f} ms/frame")
    for dtype in (torch.float32, torch.bfloat16):
        decoder = InferenceDecoder(model.dec, dtype=dtype)
        seconds, frames = _time(lambda: decoder(latents, feats), args.repeats)
        ms = seconds * 1000 / args.frames
        line = f"InferenceDecoder {str(dtype):<9} {ms:8.1f} ms/frame"
        if reference is not None:
            diff = (frames - reference).abs()
            line += (f"  speed-up {ref_ms / ms:4.2f}x  max abs {diff.max().item():.2e}"
                     f"  mean abs {diff.mean().item():.2e}")
        print(line)


if __name__ == "__main__":
    main()
