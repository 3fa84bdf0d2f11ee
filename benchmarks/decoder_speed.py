"""Decoder speed: reference ``Synthesis`` vs the fast ``InferenceDecoder`` (fp32 and bf16).

Builds a motion auto-encoder (official 512x512 size by default) with random, non-degenerate
weights, encodes a source image (``--source``: a photo, default the example astronaut portrait;
``smooth``: upsampled 8x8 noise), renders ``--frames`` latents (identity + Q (lambda + 0.5 N(0, 1)))
with each decoder and prints ms/frame, the speed-up over the reference, and the max/mean absolute
difference of the frames from the reference.

    python benchmarks/decoder_speed.py [--frames 8] [--repeats 2] [--threads N] [--size 512]
                                       [--flow-scale 0.03] [--source PATH|smooth]

Conditioning (``--flow-scale``). With fully random weights every level's flow head predicts
offsets of tanh(O(1)) -- half the image at 512 px (median ~150 px) -- and the seven chained
warps amplify float32 rounding: the reference's own float32 frames differ from its float64
evaluation by ~4e-2..1e-1 max abs, so no float32 implementation can meet a 1e-3 bound there.
A trained LIA decoder mostly predicts small displacements. ``--flow-scale s`` multiplies the
offset rows (channels 0-1) of every ``to_flows`` conv weight and bias by s, leaving the mask
channel random; s = 0.03 gives offsets at 512 px of median ~9 px, p99 ~26 px, max ~31 px, and
there the reference float32 vs float64 differs by ~1e-4 max abs / ~5e-7 mean (10x inside the
1e-3 bound), so the fast-vs-reference check measures the implementation, not the conditioning.
The default 1.0 keeps the fully random (ill-conditioned) regime for comparison.
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

from float_core.bench import scale_flow_offsets_
from float_core.config import FloatConfig
from float_core.models.decoder_inference import InferenceDecoder
from float_core.models.motion_autoencoder import MotionAutoEncoder
from float_core.models.stylegan import perturb_constant_init_


EXAMPLE_SOURCE = Path(__file__).resolve().parents[1] / "examples" / "portrait_astronaut.png"


def source_image(source: str, size: int) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: a photo resized to ``size`` or, for 'smooth', upsampled
    8x8 noise (per-pixel noise would make warped features unrealistically steep)."""
    if source == "smooth":
        return F.interpolate(torch.rand(1, 3, 8, 8) * 2 - 1, size=(size, size), mode="bilinear",
                             align_corners=False)
    from PIL import Image

    img = Image.open(source).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return pixels.permute(2, 0, 1)[None].float() / 127.5 - 1


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
    parser.add_argument("--flow-scale", type=float, default=1.0,
                        help="scale of the flow-offset rows of to_flows (0.03: well-conditioned, see above)")
    parser.add_argument("--source", default=str(EXAMPLE_SOURCE), help="source photo, or 'smooth'")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    torch.manual_seed(0)

    config = FloatConfig.official().replace(image_size=args.size)
    model = perturb_constant_init_(MotionAutoEncoder(config)).eval()
    scale_flow_offsets_(model.dec, args.flow_scale)
    model = model.to(args.device)
    image = source_image(args.source, args.size).to(args.device)
    identity, lam, feats = model.encode(image)
    latents = identity + model.lambda_to_motion(lam + 0.5 * torch.randn(args.frames, config.motion_dim,
                                                                         device=args.device))
    print(f"device {args.device}, threads {torch.get_num_threads()}, size {args.size}, "
          f"{args.frames} frames per call, best of {args.repeats}, flow scale {args.flow_scale}, "
          f"source {Path(args.source).name}")

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
